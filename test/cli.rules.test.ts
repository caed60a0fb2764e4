import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from './support/hub.js'
import { CLI, killProc, startHubProc, type HubProc } from './support/procs.js'
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
})
