import { describe, expect, it } from 'vitest'
import { isRollcallError } from '../common/errors.js'
import { checkRuleSpec, RULE_DEFAULTS, type RuleSpec } from '../hub/rules/spec.js'

const ok: RuleSpec = {
  name: 'pump.vibration',
  for: 'group:pumps',
  when: { telemetry: { sensor: 'vibration', op: '>', value: 0.08, forMs: 10_000, clear: { op: '<=', value: 0.06 } } },
  then: [{ command: { name: 'motor.stop', ifOffline: 'queue' } }, { event: { level: 'warn', message: 'pump stopped for vibration' } }],
}

function refusal(spec: unknown): string {
  try {
    checkRuleSpec(spec as RuleSpec)
  } catch (err) {
    if (isRollcallError(err) && err.code === 'BAD_REQUEST') return err.message
    throw err
  }
  return 'accepted'
}

describe('a rule spec', () => {
  it('fills in the defaults and parses the target', () => {
    expect(checkRuleSpec(ok)).toMatchObject({
      name: 'pump.vibration', target: { kind: 'group', group: 'pumps' }, enabled: true,
      maxSampleAgeMs: RULE_DEFAULTS.maxSampleAgeMs, cooldownMs: 0, maxFiringsPerMinute: 60,
    })
  })

  it.each([
    ['a bad name', { ...ok, name: 'Pump Vibration' }, /rule name "Pump Vibration"/],
    ['a bad target', { ...ok, for: 'pumps' }, /^for: target "pumps" is not understood/],
    ['two conditions', { ...ok, when: { ...ok.when, event: { kind: 'x' } } }, /exactly one of "telemetry", "event", "presence" or "job"/],
    ['a bad sensor', { ...ok, when: { telemetry: { sensor: 'Vib!', op: '>', value: 1 } } }, /sensor "Vib!" is not a sensor name/],
    ['a bad comparison', { ...ok, when: { telemetry: { sensor: 'v', op: '=>', value: 1 } } }, /op must be one of > < >= <= ==/],
    ['a threshold that is not a number', { ...ok, when: { telemetry: { sensor: 'v', op: '>', value: Number.NaN } } }, /value must be a finite number/],
    ['both forMs and samples', { ...ok, when: { telemetry: { sensor: 'v', op: '>', value: 1, forMs: 1000, samples: 3 } } }, /forMs or samples, not both/],
    ['a clear that is the trigger', { ...ok, when: { telemetry: { sensor: 'v', op: '>', value: 1, clear: { op: '>', value: 1 } } } }, /clear holds for values the trigger holds for too/],
    ['a clear that overlaps the trigger', { ...ok, when: { telemetry: { sensor: 'v', op: '>', value: 0.08, clear: { op: '<', value: 0.1 } } } }, /clear holds for values the trigger holds for too/],
    ['a clear on the same side', { ...ok, when: { telemetry: { sensor: 'v', op: '<', value: 5, clear: { op: '<', value: 2 } } } }, /clear holds for values the trigger holds for too/],
    ['a clear meeting the trigger at a value both include', { ...ok, when: { telemetry: { sensor: 'v', op: '>=', value: 1, clear: { op: '<=', value: 1 } } } }, /clear holds for values/],
    ['a presence status that is not one', { ...ok, when: { presence: { status: 'away' } } }, /presence\.status must be "offline" \(went offline\) or "online" \(came back\)/],
    ['a presence forMs of a year', { ...ok, when: { presence: { status: 'offline', forMs: 365 * 86_400_000 } } }, /presence\.forMs must be a whole number of milliseconds from 0 to 86400000/],
    ['a job outcome that is not a failure', { ...ok, when: { job: { outcome: 'succeeded' } } }, /job\.outcome must be one of failed, timed_out \(leave it out for either\)/],
    ['a bad job name', { ...ok, when: { job: { name: 'Diag Collect' } } }, /job\.name "Diag Collect" is not a task name/],
    ['a bad event level', { ...ok, when: { event: { kind: 'pump.fault', level: 'fatal' } } }, /level must be one of debug, info, warn, error/],
    ['no action', { ...ok, then: [] }, /then takes 1 to 8 actions/],
    ['nine actions', { ...ok, then: Array.from({ length: 9 }, () => ok.then[1]) }, /then takes 1 to 8 actions/],
    ['an action of two kinds', { ...ok, then: [{ command: { name: 'x' }, job: { name: 'y' } }] }, /then\[0\] takes exactly one of/],
    ['a command to a bad target', { ...ok, then: [{ command: { name: 'x', to: 'everyone' } }] }, /then\[0\]\.command\.to: .*or "trigger"/],
    ['a command timeout of 0', { ...ok, then: [{ command: { name: 'x', timeoutMs: 0 } }] }, /timeoutMs must be at least 1/],
    ['a bad ifOffline', { ...ok, then: [{ command: { name: 'x', ifOffline: 'wait' } }] }, /ifOffline must be "fail" or "queue"/],
    ['command args too large', { ...ok, then: [{ command: { name: 'x', args: 'a'.repeat(20_000) } }] }, /then\[0\]\.command\.args is \d+ bytes of JSON/],
    ['an empty event message', { ...ok, then: [{ event: { level: 'info', message: '' } }] }, /message must be 1 to 500 characters/],
    ['a negative cooldown', { ...ok, cooldownMs: -1 }, /cooldownMs must be a whole number of milliseconds/],
    ['a rate of 0', { ...ok, maxFiringsPerMinute: 0 }, /maxFiringsPerMinute must be a whole number from 1/],
  ] as const)('refuses %s, saying what to fix', (_what, spec, message) => {
    expect(refusal(spec)).toMatch(message)
  })

  it.each([
    ['> 0.08 cleared at <= 0.06', '>', 0.08, '<=', 0.06],
    ['> 1 cleared at <= 1 (they meet, but 1 is only the clear\'s)', '>', 1, '<=', 1],
    ['< 10 cleared at > 12', '<', 10, '>', 12],
    ['== 3 cleared at < 3', '==', 3, '<', 3],
  ] as const)('takes a clear on the other side: %s', (_what, op, value, clearOp, clearValue) => {
    expect(refusal({ ...ok, when: { telemetry: { sensor: 'v', op, value, clear: { op: clearOp, value: clearValue } } } })).toBe('accepted')
  })

  it.each([
    ['went offline', { presence: { status: 'offline' } }],
    ['offline for 10 min', { presence: { status: 'offline', forMs: 600_000 } }],
    ['came back', { presence: { status: 'online' } }],
    ['any job failed for good', { job: {} }],
    ['one task timed out', { job: { name: 'diag.collect', outcome: 'timed_out' } }],
  ] as const)('takes a presence or job condition: %s', (_what, when) => {
    expect(refusal({ ...ok, when })).toBe('accepted')
  })

  it('takes an event condition and a job to "trigger"', () => {
    expect(refusal({ ...ok, when: { event: { kind: 'pump.fault', level: 'error' } }, then: [{ job: { name: 'diag.collect', to: 'trigger' } }] })).toBe('accepted')
  })
})
