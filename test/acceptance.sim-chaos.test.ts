import { afterEach, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import type { SimReport } from '../devices-sim/sim.js'
import { tempDir } from './support/hub.js'
import { CLI, killProc, startHubProc } from './support/procs.js'

/**
 * Acceptance 1 (issue #5): `rollcall sim --devices 50 --duration 60s
 * --profile mixed --chaos 'partition=30%@10s+15s,hub-kill@25s,agent-crash=10%@35s'
 * --json` loses nothing and duplicates nothing, and the report's counts match
 * the hub's own: after the run, a hub started on the run's data dir (kept with
 * --work) is asked for every device's stored samples and marks, and for every
 * job's executions.
 */

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

function rollcall(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

describe('rollcall sim under chaos', () => {
  it('loses and duplicates nothing through a partition, a hub SIGKILL and agent crashes, and the hub agrees', async () => {
    const tmp = tempDir('sim-chaos')
    cleanups.push(tmp.remove)
    const work = join(tmp.dir, 'run')
    const chaos = 'partition=30%@10s+15s,hub-kill@25s,agent-crash=10%@35s'
    const r = await rollcall(['sim', '--devices', '50', '--duration', '60s', '--profile', 'mixed', '--chaos', chaos, '--seed', '5', '--work', work, '--json'])
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    const report = JSON.parse(r.stdout) as SimReport

    // The chaos ran as scheduled, and was printed first.
    expect(report.schedule[0]).toMatch(/^chaos schedule: 6 actions, fingerprint [0-9a-f]{8}$/)
    expect(r.stderr).toContain(report.schedule.join('\n'))
    // At 25 s by the schedule; a busy machine runs a step a little late, and the restart takes what it takes.
    const killedAt = Number(/chaos: hub SIGKILLed at (\d+\.\d+)s/.exec(r.stderr)?.[1])
    const backAt = Number(/chaos: hub back at (\d+\.\d+)s/.exec(r.stderr)?.[1])
    expect(killedAt, r.stderr.slice(-3000)).toBeGreaterThanOrEqual(25)
    expect(backAt).toBeGreaterThan(killedAt)

    // The headline.
    expect(report.totals).toMatchObject({ lost: 0, duplicates: 0 })
    expect(report.totals.generated).toBeGreaterThan(50 * 4 * 30)
    expect(report.totals.stored + report.totals.dropped).toBe(report.totals.generated)
    expect(report.hubAgrees).toBe(true)
    expect(report.totals.jobs).toMatchObject({ lost: 0, duplicates: 0 })
    expect(report.totals.jobs.issued).toBeGreaterThan(50)
    expect(report.ok).toBe(true)
    expect(report.byProfile.map((p) => p.profile).sort()).toEqual(['flaky', 'intermittent', 'steady'])
    expect(report.presence.offlineTransitionsSeen).toBeGreaterThan(50)

    // The hub's own counts, asked afresh on the run's data dir.
    const hub = await startHubProc(join(work, 'hub'))
    cleanups.push(() => killProc(hub, 'SIGTERM'))
    const devices = await hub.api<{ devices: Array<{ id: string }> }>('GET', '/api/devices')
    expect(devices.body.devices).toHaveLength(50)
    let rows = 0
    let marks = 0
    for (const { id } of devices.body.devices) {
      const info = await hub.api<{ streams: Array<{ storeId: string; upTo: number }> }>('GET', `/api/devices/${id}`)
      expect(info.body.streams, id).toHaveLength(1)
      marks += info.body.streams[0]!.upTo
      const t = await hub.api<{ samples: Array<{ seq: number }>; truncated: boolean }>('GET', `/api/devices/${id}/telemetry?since=0&limit=100000`)
      expect(t.body.truncated).toBe(false)
      const seqs = t.body.samples.map((s) => s.seq)
      expect(new Set(seqs).size, `${id}: a seq stored twice`).toBe(seqs.length)
      rows += seqs.length
    }
    expect(rows).toBe(report.totals.stored)
    expect(marks).toBe(report.totals.stored + report.totals.dropped)

    const jobs = await hub.api<{ jobs: Array<{ id: string; status: string; counts: Record<string, number> }> }>('GET', '/api/jobs?limit=1000')
    const byState: Record<string, number> = {}
    for (const j of jobs.body.jobs) for (const [state, count] of Object.entries(j.counts)) byState[state] = (byState[state] ?? 0) + count
    expect(Object.values(byState).reduce((a, b) => a + b, 0)).toBe(report.totals.jobs.issued)
    expect(byState).toEqual(report.totals.jobs.byState)
    expect(jobs.body.jobs.every((j) => j.status !== 'active')).toBe(true)
  }, 660_000)
})
