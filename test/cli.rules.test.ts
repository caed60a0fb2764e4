import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connectDevice, tempDir, waitFor } from './support/hub.js'
import { CLI, killProc, startHubProc, type HubProc } from './support/procs.js'
import { encode, topics, type TelemetryAck } from '../protocol/index.js'
import type { RuleTestReport } from '../hub/api/rules.js'
import type { RuleDetail, RuleView } from '../hub/rules/rules.js'

/** `rollcall rule ...` against a real hub process (issue #17). */
function rollcall(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
    child.stdin?.end(input ?? '')
  })
}

const rule = {
  name: 'vibration.burst',
  for: 'group:cr-lab',
  when: { telemetry: { sensor: 'vib.rms', op: '>', value: 0.3, samples: 2, clear: { op: '<', value: 0.1 } } },
  then: [{ command: { name: 'sensors.sample' } }, { event: { level: 'warn', message: 'vibration burst' } }],
  cooldownMs: 60_000,
}

describe('rollcall rule commands', () => {
  let hub: HubProc
  let dir: { dir: string; remove: () => void }
  let target: string[]
  const run = (...args: string[]) => rollcall([...args, ...target])

  beforeAll(async () => {
    dir = tempDir('cli-rules')
    hub = await startHubProc(join(dir.dir, 'hub'))
    target = ['--api', `http://127.0.0.1:${hub.httpPort}`, '--data', join(dir.dir, 'hub')]
  })
  afterAll(async () => {
    await killProc(hub, 'SIGTERM')
    dir.remove()
  })

  it('adds a rule from a file, lists, shows, disables, enables and removes it', async () => {
    const file = join(dir.dir, 'rule.json')
    writeFileSync(file, JSON.stringify(rule))
    const added = await run('rule', 'add', file)
    expect(added.code, added.stderr).toBe(0)
    expect(added.stdout).toBe('rule vibration.burst added: when vib.rms > 0.3 for 2 samples, clears < 0.1 on group:cr-lab, then command sensors.sample, event warn\n')

    const list = await run('rule', 'list', '--json')
    expect((JSON.parse(list.stdout) as { rules: RuleView[] }).rules).toEqual([expect.objectContaining({ name: 'vibration.burst', enabled: true, cooldownMs: 60_000 })])
    expect((await run('rule', 'list')).stdout).toMatch(/^NAME\s+ON\s+WHEN.*\nvibration\.burst\s+group:cr-lab\s+vib\.rms > 0\.3/)

    expect((await run('rule', 'disable', 'vibration.burst')).stdout).toBe('rule vibration.burst disabled\n')
    const shown = JSON.parse((await run('rule', 'show', 'vibration.burst', '--json')).stdout) as RuleDetail
    expect(shown).toMatchObject({ enabled: false, counters: { fired: 0 }, devices: [], recentFirings: [] })
    expect((await run('rule', 'enable', 'vibration.burst')).stdout).toBe('rule vibration.burst enabled\n')
    expect((await run('rule', 'remove', 'vibration.burst')).stdout).toBe('rule vibration.burst removed; its firings stay for their trace\n')
    expect((await run('rule', 'list')).stdout).toMatch(/^no rules; add one with: .*rule add rule\.json/)
  })

  it('reads a rule from stdin, and says what to fix in one that is wrong', async () => {
    const ok = await rollcall(['rule', 'add', '-', ...target], JSON.stringify({ ...rule, name: 'from.stdin' }))
    expect(ok.code, ok.stderr).toBe(0)
    const dup = await rollcall(['rule', 'add', '-', ...target], JSON.stringify({ ...rule, name: 'from.stdin' }))
    expect(dup.code).not.toBe(0)
    expect(dup.stderr).toMatch(/RULE_EXISTS|a rule named "from.stdin" exists/)
    const bad = await rollcall(['rule', 'add', '-', ...target], JSON.stringify({ ...rule, name: 'bad', when: { telemetry: { sensor: 'v', op: '>', value: 1, forMs: 5, samples: 2 } } }))
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toContain('forMs or samples, not both')
    const notJson = await rollcall(['rule', 'add', '-', ...target], '{nope')
    expect(notJson.code).toBe(2)
    expect(notJson.stderr).toContain('is not JSON')
    const missing = await run('rule', 'show', 'nope')
    expect(missing.stderr).toMatch(/no rule "nope"/)
  })

  it('tests a rule on what a device stored: a table, a summary, and nothing added', async () => {
    const added = await hub.api<{ token: string }>('POST', '/api/devices', { id: 'cr-pump', group: 'cr-lab' })
    expect(added.status).toBe(201)
    const dev = await connectDevice(`mqtt://127.0.0.1:${hub.mqttPort}`, 'cr-pump', added.body.token)
    try {
      const acks: TelemetryAck[] = []
      dev.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
      await dev.subscribeAsync(topics.telemetryAck('cr-pump'), { qos: 1 })
      // Ten minutes ago: a burst of two samples over 0.3 (fires), a dip under 0.1 (clears), a second burst within the cooldown.
      const base = Date.now() - 10 * 60_000
      const values = [0.02, 0.4, 0.5, 0.05, 0.6, 0.7, 0.35, 0.02]
      await dev.publishAsync(topics.telemetry('cr-pump'), encode({ type: 'telemetry', v: 1, storeId: '0b6c3d1e-aaaa-4bbb-8ccc-0000000000c1',
        samples: values.map((value, i) => ({ seq: i + 1, ts: base + i * 1000, sensor: 'vib.rms', value })) }), { qos: 1 })
      await waitFor(() => acks.find((a) => a.upTo === values.length), 'samples stored')
    } finally {
      await dev.endAsync()
    }
    const file = join(dir.dir, 'rule-test.json')
    writeFileSync(file, JSON.stringify(rule))

    const shown = await run('rule', 'test', file, '--device', 'cr-pump')
    expect(shown.code, shown.stderr).toBe(0)
    const lines = shown.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^rule vibration\.burst on cr-pump's "vib\.rms" samples, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d to .*:$/)
    expect(lines[1]).toMatch(/^TIME\s+FIRE\/CLEAR\s+VALUE\s+VERDICT$/)
    expect(lines.slice(2, 6).map((l) => l.split(/\s{2,}/).slice(1))).toEqual([
      ['fire', '0.5', 'would act'], ['clear', '0.05'], ['fire', '0.7', 'suppressed: cooldown'], ['clear', '0.02'],
    ])
    expect(lines.slice(6)).toEqual(['1 firing would have acted, 1 suppressed (cooldown); 8 samples evaluated'])

    // From stdin, as JSON, further back and bounded; and the rule was not added.
    const json = await rollcall(['rule', 'test', '-', '--device', 'cr-pump', '--since', '2h', '--limit', '3', '--json', ...target], JSON.stringify({ ...rule, cooldownMs: 0 }))
    expect(json.code, json.stderr).toBe(0)
    const report = JSON.parse(json.stdout) as RuleTestReport
    expect(report).toMatchObject({ rule: 'vibration.burst', deviceId: 'cr-pump', watches: true, evaluated: 3, truncated: true, acted: 1 })
    expect((await run('rule', 'show', 'vibration.burst')).stderr).toMatch(/no rule "vibration.burst"/)

    // A rule for other devices is run anyway, and says so.
    const other = await rollcall(['rule', 'test', '-', '--device', 'cr-pump', ...target], JSON.stringify({ ...rule, for: 'group:elsewhere' }))
    expect(other.code, other.stderr).toBe(0)
    expect(other.stdout).toContain('note: the rule is for group:elsewhere, which does not include cr-pump')
  })

  it('says what to fix in a rule test that is wrong', async () => {
    const file = join(dir.dir, 'rule-test-bad.json')
    writeFileSync(file, JSON.stringify(rule))
    const noDevice = await run('rule', 'test', file)
    expect(noDevice.code).not.toBe(0)
    expect(noDevice.stderr).toContain("required option '--device <id>' not specified")
    const unknown = await run('rule', 'test', file, '--device', 'nope')
    expect(unknown.code).not.toBe(0)
    expect(unknown.stderr).toMatch(/no device "nope"/)
    const limit = await run('rule', 'test', file, '--device', 'nope', '--limit', '0')
    expect(limit.code).toBe(2)
    expect(limit.stderr).toContain('--limit must be a whole number from 1 to 100000, got "0"')
    const since = await run('rule', 'test', file, '--device', 'cr-pump', '--since', 'yesterday')
    expect(since.code).not.toBe(0)
    expect(since.stderr).toContain('since="yesterday" is not a time')
    const notJson = await rollcall(['rule', 'test', '-', '--device', 'cr-pump', ...target], '{nope')
    expect(notJson.code).toBe(2)
    expect(notJson.stderr).toContain('is not JSON')
  })
})
