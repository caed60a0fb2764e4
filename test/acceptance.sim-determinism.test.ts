import { afterEach, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { deviceSensors } from '../devices-sim/models.js'
import type { SimReport } from '../devices-sim/sim.js'
import { tempDir } from './support/hub.js'
import { CLI, killProc, startHubProc, type HubProc } from './support/procs.js'

/**
 * Acceptance 2 (issue #5): same seed, same sensor values and the same fault
 * schedule, and the schedule is printed. Three short runs of the built CLI,
 * each against a hub of its own (`--hub`): two with one seed, one with
 * another. The values compared are the ones the hub stored, by seq.
 */

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

const DEVICES = 4
/** Readings compared per device: two ticks of its four sensors. */
const READINGS = 8

interface Run { readonly report: SimReport; readonly printed: string; readonly values: Array<Array<[string, number]>> }

function rollcall(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

async function run(seed: number, dir: string): Promise<Run> {
  const hub: HubProc = await startHubProc(join(dir, `hub-${seed}-${Math.random().toString(36).slice(2)}`))
  cleanups.push(() => killProc(hub, 'SIGTERM'))
  const r = await rollcall(['sim', '--hub', `mqtt://127.0.0.1:${hub.mqttPort}`, '--api', `http://127.0.0.1:${hub.httpPort}`, '--admin-token', hub.adminToken,
    '--devices', String(DEVICES), '--duration', '6s', '--profile', 'flaky', '--seed', String(seed),
    '--chaos', 'partition=50%@1s+2s,agent-crash=25%@2s,reconnect-burst=50%@3s', '--jobs-every', 'off', '--commands-every', 'off', '--json'])
  expect(r.code, r.stderr).toBe(0)
  const report = JSON.parse(r.stdout) as SimReport
  const values: Run['values'] = []
  for (let i = 1; i <= DEVICES; i++) {
    const t = await hub.api<{ samples: Array<{ seq: number; sensor: string; value: number }> }>('GET', `/api/devices/sim-${String(i).padStart(4, '0')}/telemetry?since=0&limit=1000`)
    const bySeq = [...t.body.samples].sort((a, b) => a.seq - b.seq)
    expect(bySeq.length).toBeGreaterThanOrEqual(READINGS)
    values.push(bySeq.slice(0, READINGS).map((s) => [s.sensor, s.value]))
  }
  return { report, printed: r.stderr, values }
}

describe('rollcall sim with a seed', () => {
  it('stores the same sensor values and prints the same fault schedule for the same seed, and others for another', async () => {
    const tmp = tempDir('sim-seed')
    cleanups.push(tmp.remove)
    const [a, b, c] = await Promise.all([run(11, tmp.dir), run(11, tmp.dir), run(12, tmp.dir)])

    // The schedule: in the report and printed before the run, the same for the same seed.
    expect(a.report.schedule[0]).toMatch(/^chaos schedule: 5 actions, fingerprint [0-9a-f]{8}$/)
    expect(a.printed).toContain(a.report.schedule.join('\n'))
    expect(b.report.schedule).toEqual(a.report.schedule)
    expect(b.printed).toContain(a.report.schedule.join('\n'))
    expect(c.report.schedule).not.toEqual(a.report.schedule)
    expect(c.report.schedule[0]).not.toEqual(a.report.schedule[0])

    // The values: the same per seq for the same seed (and the models' own), others for another seed.
    expect(b.values).toEqual(a.values)
    const expected = Array.from({ length: DEVICES }, (_, i) => {
      const models = deviceSensors(11, i)
      return Array.from({ length: READINGS }, (_, k) => {
        const m = models[k % models.length]!
        return [m.name, m.valueAt(Math.floor(k / models.length))]
      })
    })
    expect(a.values).toEqual(expected)
    expect(c.values).not.toEqual(a.values)
    for (const r of [a, b, c]) expect(r.report.totals).toMatchObject({ lost: 0, duplicates: 0 })
  }, 300_000)
})
