import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import { JobError } from '../agent/job-handlers.js'
import { registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir } from './support/hub.js'

/**
 * Acceptance 5 (issue #3): a job whose handler fails 30% of the time on 50
 * devices, with abort at 20% after 10 finished executions, is aborted and
 * its remaining queued executions are canceled.
 */
describe('a failing rollout aborts itself', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('aborts at 20% after 10 finished and cancels what is still queued', async () => {
    const hub = await startTestHub({ flushDelayMs: 5, jobSweepIntervalMs: 200 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('abort')
    cleanups.push(tmp.remove)
    const devices = await registerDevices(hub, 'flaky', 50, 'flaky')
    // Three devices in ten fail: 30% of the fleet, spread through the rollout order.
    const failing = new Set(devices.filter((_, i) => i % 10 === 1 || i % 10 === 4 || i % 10 === 7).map((d) => d.id))
    expect(failing.size).toBe(15)
    const agents: Agent[] = await startAgents(hub.mqttUrl, tmp.dir, devices, {}, {
      handlers: {
        'firmware.step'(ctx) {
          if (failing.has(ctx.deviceId)) throw new JobError('FLASH_FAILED', 'the new image did not verify')
          return { ok: true }
        },
      },
    })
    cleanups.push(() => Promise.all(agents.map((a) => a.stop())))
    await waitOnline(hub, devices.map((d) => d.id))

    // Paced at 5/s, as a careful rollout would be: most executions are still queued when the verdict comes.
    const job = (await hub.running.services.jobs.create({
      name: 'firmware.step', target: 'group:flaky', ratePerMinute: 300, maxAttempts: 1, abortAfter: 10, abortAtPercent: 20,
    }))!
    const done = await waitJobDone(hub, job.id, 30_000)

    expect(done.status).toBe('aborted')
    expect(done.statusReason).toMatch(/^failure rate [\d.]+%: \d+ of \d+ finished executions failed, at or over the abort threshold of 20%$/)
    const { counts } = done
    const finished = counts.succeeded + counts.failed + counts.timed_out + counts.rejected
    expect(finished).toBeGreaterThanOrEqual(10)
    expect(counts.failed).toBeGreaterThanOrEqual(2)
    expect(counts.queued).toBe(0)
    expect(counts.canceled).toBeGreaterThan(0)
    expect(finished + counts.canceled + counts.in_progress).toBe(50)
    // Canceled executions were never started anywhere, and no failing device's failure went missing.
    for (const e of done.executions.filter((x) => x.state === 'canceled')) expect(e.startedAt).toBeNull()
    for (const e of done.executions.filter((x) => x.state === 'failed')) {
      expect(failing.has(e.deviceId)).toBe(true)
      expect(e.error).toMatchObject({ code: 'FLASH_FAILED' })
    }
    // The canceled ones stay canceled: nothing runs them later.
    await new Promise((r) => setTimeout(r, 1000))
    const later = await hub.running.services.jobs.get(job.id, { limit: 100 })
    expect(later.counts.canceled).toBe(counts.canceled)
    expect(later.counts.succeeded + later.counts.failed).toBe(counts.succeeded + counts.failed + counts.in_progress)
  }, 60_000)
})
