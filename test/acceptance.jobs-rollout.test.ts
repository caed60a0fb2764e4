import Database from 'better-sqlite3'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import { rolloutBurst } from '../hub/jobs/decisions.js'
import { registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir } from './support/hub.js'

/**
 * Acceptance 1 (issue #3): a job to a group of 100 agents with a rollout
 * rate completes, and the rate is honoured, counted from the times the hub
 * released each execution to its device (its first delivery, stamped by the
 * hub when the pace granted it). The agents' own start times add the delivery
 * delay on top, which a busy machine can bunch up; the pace is the hub's.
 */
describe('a paced rollout to 100 agents', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('completes, and never releases more than the pace allows', async () => {
    const hub = await startTestHub({ flushDelayMs: 5, jobSweepIntervalMs: 200 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('rollout')
    cleanups.push(tmp.remove)
    const devices = await registerDevices(hub, 'roll', 100, 'rollout')
    const agents: Agent[] = await startAgents(hub.mqttUrl, tmp.dir, devices)
    cleanups.push(() => Promise.all(agents.map((a) => a.stop())))
    await waitOnline(hub, devices.map((d) => d.id))

    const rate = 600 // per minute: 10/s, a burst of 10
    const burst = rolloutBurst(rate)
    const job = (await hub.running.services.jobs.create({ name: 'echo', target: 'group:rollout', payload: { step: 1 }, ratePerMinute: rate }))!
    expect(job.counts.queued).toBe(100)
    const done = await waitJobDone(hub, job.id, 60_000)

    expect(done.status).toBe('completed')
    expect(done.counts.succeeded).toBe(100)
    expect(done.executions.every((e) => e.startedAt !== null)).toBe(true)
    const db = new Database(join(hub.dataDir, 'hub.db'), { readonly: true })
    const releases = (db.prepare('SELECT first_delivered_at AS at FROM executions WHERE job_id = ? ORDER BY at').all(job.id) as Array<{ at: number | null }>).map((r) => r.at!)
    db.close()
    expect(releases).toHaveLength(100)
    expect(releases.every((t) => t !== null)).toBe(true)
    // In any window of W ms at most burst + rate * W, and one for rounding.
    for (const windowMs of [1000, 3000]) {
      const allowed = burst + (rate * windowMs) / 60_000 + 1
      let worst = 0
      for (const t of releases) worst = Math.max(worst, releases.filter((s) => s >= t && s < t + windowMs).length)
      expect(worst, `releases in a ${windowMs} ms window`).toBeLessThanOrEqual(allowed)
    }
    // Paced, not all at once: 90 releases after the burst take about 9 s.
    expect(releases[99]! - releases[0]!).toBeGreaterThanOrEqual(((100 - burst) / (rate / 60)) * 1000 * 0.9)
  }, 90_000)
})
