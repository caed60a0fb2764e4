import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import { rolloutBurst } from '../hub/job-rules.js'
import { registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir } from './support/hub.js'

/**
 * Acceptance 1 (issue #3): a job to a group of 100 agents with a rollout
 * rate completes, and the rate is honoured, counted from the executions'
 * start times as the agents reported them.
 */
describe('a paced rollout to 100 agents', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('completes, and never starts more than the pace allows', async () => {
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
    const job = hub.running.services.jobs.create({ name: 'echo', target: 'group:rollout', payload: { step: 1 }, ratePerMinute: rate })!
    expect(job.counts.queued).toBe(100)
    const done = await waitJobDone(hub, job.id, 60_000)

    expect(done.status).toBe('completed')
    expect(done.counts.succeeded).toBe(100)
    const starts = done.executions.map((e) => e.startedAt!).sort((a, b) => a - b)
    expect(starts).toHaveLength(100)
    // In any window of W ms at most burst + rate * W: allow one more for the
    // spread between a lease and the agent's start.
    for (const windowMs of [1000, 3000]) {
      const allowed = burst + (rate * windowMs) / 60_000 + 1
      let worst = 0
      for (const t of starts) worst = Math.max(worst, starts.filter((s) => s >= t && s < t + windowMs).length)
      expect(worst, `starts in a ${windowMs} ms window`).toBeLessThanOrEqual(allowed)
    }
    // Paced, not all at once: 90 releases after the burst take about 9 s.
    expect(starts[99]! - starts[0]!).toBeGreaterThanOrEqual(((100 - burst) / (rate / 60)) * 1000 * 0.9)
  }, 90_000)
})
