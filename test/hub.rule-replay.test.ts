import { describe, expect, it } from 'vitest'
import { RollcallError } from '../common/errors.js'
import { isHubCaused } from '../hub/presence/machine.js'
import { replay, replaySource, type ReplayItem } from '../hub/rules/replay.js'
import { checkRuleSpec, type Condition, type RuleSpec } from '../hub/rules/spec.js'

/** The dry run of `rollcall rule test` (hub/rules/replay.ts): pure, as tables. */

const T0 = 1_800_000_000_000
const S = 1000

const rule = (over: Partial<RuleSpec> = {}) => checkRuleSpec({
  name: 'vib.high',
  for: 'device:pump-1',
  when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, clear: { op: '<=', value: 0.06 } } },
  then: [{ command: { name: 'motor.stop' } }],
  ...over,
})

/** Samples of `vib`, one a second from T0 (or at the times given as [seconds, value]). */
const vib = (...values: ReadonlyArray<number | readonly [number, number]>): ReplayItem[] => values.map((v, i) => {
  const [sec, value] = typeof v === 'number' ? [i, v] : v
  return { type: 'sample', ts: T0 + sec * S, seq: i + 1, sensor: 'vib', value }
})

/** The transitions as short strings: "fire@3 acts", "clear@5". */
const shape = (r: ReturnType<typeof replay>) => r.transitions.map((t) => `${t.kind}@${(t.ts - T0) / S}${t.kind === 'fire' ? ` ${t.verdict}` : ''}`)

describe('replaying a telemetry rule on stored samples', () => {
  it.each([
    ['nothing crosses: no transition', {}, vib(0.01, 0.05, 0.07), [], 'idle'],
    ['a burst fires once and clears once (hysteresis)', {}, vib(0.01, 0.09, 0.1, 0.079, 0.085, 0.07, 0.05), ['fire@1 acts', 'clear@6'], 'idle'],
    ['a burst still on at the end leaves it active', {}, vib(0.01, 0.09, 0.1), ['fire@1 acts'], 'active'],
    ['two bursts within the cooldown: the second is suppressed', { cooldownMs: 60_000 }, vib(0.09, 0.01, 0.09, 0.01), ['fire@0 acts', 'clear@1', 'fire@2 cooldown', 'clear@3'], 'idle'],
    ['a burst after the cooldown acts again', { cooldownMs: 60_000 }, vib([0, 0.09], [1, 0.01], [61, 0.09]), ['fire@0 acts', 'clear@1', 'fire@61 acts'], 'active'],
    ['a suppressed firing does not restart the cooldown', { cooldownMs: 60_000 }, vib([0, 0.09], [1, 0.01], [59, 0.09], [60, 0.01], [61, 0.09]),
      ['fire@0 acts', 'clear@1', 'fire@59 cooldown', 'clear@60', 'fire@61 acts'], 'active'],
    ['more firings in a minute than the rate allows', { maxFiringsPerMinute: 2 }, vib(0.09, 0.01, 0.09, 0.01, 0.09, 0.01),
      ['fire@0 acts', 'clear@1', 'fire@2 acts', 'clear@3', 'fire@4 rate', 'clear@5'], 'idle'],
    ['forMs: fires once it held that long, on the samples\' times', { when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, forMs: 2000 } } },
      vib(0.09, 0.09, 0.09, 0.01), ['fire@2 acts', 'clear@3'], 'idle'],
    ['samples: a dip before N in a row starts over', { when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, samples: 3 } } },
      vib(0.09, 0.09, 0.01, 0.09, 0.09, 0.09), ['fire@5 acts'], 'active'],
  ] as const)('%s', (_what, over, items, transitions, phase) => {
    const r = replay(rule(over), items)
    expect(shape(r)).toEqual(transitions)
    expect(r.finalState.phase).toBe(phase)
    expect(r.evaluated).toBe(items.length)
    const fires = r.transitions.filter((t) => t.kind === 'fire')
    expect(r.acted).toBe(fires.filter((t) => t.verdict === 'acts').length)
    expect(r.acted + Object.values(r.suppressed).reduce((a, b) => a + b, 0)).toBe(fires.length)
  })

  it('evaluates only the rule\'s sensor, and gives the trigger sample', () => {
    const items: ReplayItem[] = [
      { type: 'sample', ts: T0, seq: 1, sensor: 'temp', value: 99 },
      { type: 'sample', ts: T0 + S, seq: 2, sensor: 'vib', value: 0.2 },
      { type: 'event', ts: T0 + 2 * S, seq: 3, kind: 'vib', level: 'warn', message: 'not a sample' },
    ]
    const r = replay(rule(), items)
    expect(r.evaluated).toBe(1)
    expect(r.transitions).toEqual([{ kind: 'fire', ts: T0 + S, trigger: items[1], verdict: 'acts' }])
  })

  it('judges a sample on the device\'s unchecked clock stale, as the engine does, and its state still moves', () => {
    const items: ReplayItem[] = [{ type: 'sample', ts: T0, seq: 1, sensor: 'vib', value: 0.2, unsynced: true }, ...vib([1, 0.3], [2, 0.01], [3, 0.2]).map((s, i) => ({ ...s, seq: i + 2 }))]
    const r = replay(rule(), items)
    expect(shape(r)).toEqual(['fire@0 stale', 'clear@2', 'fire@3 acts'])
    expect(r.suppressed).toEqual({ stale: 1, paused: 0, cooldown: 0, rate: 0 })
    expect(r.acted).toBe(1)
  })

  it('keeps its clock from going backwards when a device\'s does (the cooldown is not undone)', () => {
    const r = replay(rule({ cooldownMs: 60_000 }), vib([100, 0.09], [101, 0.01], [0, 0.09]))
    expect(shape(r)).toEqual(['fire@100 acts', 'clear@101', 'fire@0 cooldown'])
  })
})

describe('replaying an event rule on stored events', () => {
  const ev = (sec: number, kind: string, level = 'error'): ReplayItem => ({ type: 'event', ts: T0 + sec * S, seq: sec + 1, kind, level, message: `${kind} at ${sec}` })
  const onFault = (level?: 'error'): Condition => ({ event: level === undefined ? { kind: 'fault' } : { kind: 'fault', level } })

  it.each([
    ['each matching event fires', onFault(), {}, [ev(0, 'fault'), ev(1, 'boot'), ev(2, 'fault', 'warn')], ['fire@0 acts', 'fire@2 acts'], 2],
    ['a level filters them', onFault('error'), {}, [ev(0, 'fault'), ev(1, 'fault', 'warn'), ev(2, 'fault')], ['fire@0 acts', 'fire@2 acts'], 2],
    ['within the cooldown they are suppressed', onFault(), { cooldownMs: 5000 }, [ev(0, 'fault'), ev(1, 'fault'), ev(6, 'fault')], ['fire@0 acts', 'fire@1 cooldown', 'fire@6 acts'], 3],
  ] as const)('%s', (_what, when, over, items, transitions, evaluated) => {
    const r = replay(rule({ when, ...over }), items)
    expect(shape(r)).toEqual(transitions)
    expect(r.evaluated).toBe(evaluated)
    expect(r.finalState).toEqual({ phase: 'idle' })
  })
})

/** Presence changes at the times given as [seconds, status, reason]. */
const seen = (...changes: ReadonlyArray<readonly [number, 'online' | 'offline', string]>): ReplayItem[] =>
  changes.map(([sec, status, reason]) => ({ type: 'presence', ts: T0 + sec * S, status, reason, hubCaused: isHubCaused(reason) }))

describe('replaying a presence rule on the presence history', () => {
  const offline = (forMs?: number) => rule({ when: { presence: { status: 'offline', ...(forMs !== undefined ? { forMs } : {}) } } })
  it.each([
    ['went offline fires at the change, clears when back', offline(), seen([0, 'online', 'birth'], [5, 'offline', 'will'], [9, 'online', 'birth']), undefined,
      ['fire@5 acts', 'clear@9'], 'idle'],
    ['the hub\'s own stop fires nothing, nor the return from it', offline(), seen([0, 'online', 'birth'], [5, 'offline', 'broker-closing'], [9, 'online', 'birth'], [12, 'offline', 'keepalive-timeout']),
      undefined, ['clear@9', 'fire@12 acts'], 'active'],
    ['offline for 10 s: back in time fires nothing', offline(10_000), seen([0, 'offline', 'will'], [4, 'online', 'birth']), T0 + 60 * S, [], 'idle'],
    ['offline for 10 s: fires when it had held, before the next change', offline(10_000), seen([0, 'offline', 'will'], [30, 'online', 'birth']), T0 + 60 * S,
      ['fire@10 acts', 'clear@30'], 'idle'],
    ['offline for 10 s: still away at the window\'s end fires then', offline(10_000), seen([0, 'online', 'birth'], [20, 'offline', 'will']), T0 + 60 * S,
      ['fire@30 acts'], 'active'],
    ['offline for 10 s: not yet at the window\'s end stays pending', offline(10_000), seen([0, 'online', 'birth'], [55, 'offline', 'will']), T0 + 60 * S,
      [], 'pending'],
    ['came back', rule({ when: { presence: { status: 'online' } } }), seen([0, 'offline', 'will'], [3, 'online', 'birth']), undefined, ['fire@3 acts'], 'active'],
  ] as const)('%s', (_what, r, items, end, transitions, phase) => {
    const out = replay(r, items, end)
    expect(shape(out)).toEqual(transitions)
    expect(out.finalState.phase).toBe(phase)
  })
})

describe('replaying a job rule on the device\'s failed executions', () => {
  const failure = (sec: number, name: string, outcome: 'failed' | 'timed_out', causeRule: string | null = null): ReplayItem =>
    ({ type: 'job', ts: T0 + sec * S, jobId: `j${sec}`, name, outcome, attempt: 3, error: 'X: y', causeRule })
  const items = [failure(0, 'flash', 'failed'), failure(1, 'diag.collect', 'failed', 'vib.high'), failure(2, 'flash', 'timed_out'), failure(3, 'backup', 'failed')]
  it.each([
    ['any failure, but not of a job this rule made', {}, ['fire@0 acts', 'fire@2 acts', 'fire@3 acts']],
    ['one task', { name: 'flash' }, ['fire@0 acts', 'fire@2 acts']],
    ['timed out only', { outcome: 'timed_out' }, ['fire@2 acts']],
  ] as const)('%s', (_what, job, transitions) => {
    expect(shape(replay(rule({ when: { job } }), items))).toEqual(transitions)
  })
})

describe('what a dry run reads', () => {
  it('names the source of each condition kind it replays', () => {
    expect(replaySource({ telemetry: { sensor: 'vib', op: '>', value: 1 } })).toEqual({ from: 'samples', sensor: 'vib' })
    expect(replaySource({ event: { kind: 'fault' } })).toEqual({ from: 'events', kind: 'fault' })
    expect(replaySource({ event: { kind: 'fault', level: 'error' } })).toEqual({ from: 'events', kind: 'fault', level: 'error' })
    expect(replaySource({ presence: { status: 'offline', forMs: 1000 } })).toEqual({ from: 'presence' })
    expect(replaySource({ job: { name: 'flash', outcome: 'failed' } })).toEqual({ from: 'jobs', name: 'flash', outcome: 'failed' })
  })

  it('refuses a condition kind it cannot replay, naming those it can', () => {
    const geofence = { geofence: { left: 'yard' } } as unknown as Condition
    let thrown: unknown
    try {
      replaySource(geofence)
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(RollcallError)
    expect((thrown as RollcallError).code).toBe('BAD_REQUEST')
    expect((thrown as Error).message).toBe('a dry run cannot replay a "geofence" condition yet; it replays "telemetry", "event", "presence" and "job" conditions')
  })
})
