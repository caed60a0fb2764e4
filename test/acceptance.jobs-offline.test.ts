import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import { startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { startProxy } from './support/proxy.js'

/**
 * Acceptance 4 (issue #3): a device that is offline when a job is created
 * pulls it when it connects; a device that goes offline after pulling runs
 * its jobs offline, and the results arrive after it reconnects.
 */
describe('jobs and an offline device', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('an agent that was offline at creation pulls the job when it connects', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('jobs-late')
    cleanups.push(tmp.remove)
    const token = await hub.addDevice('late-1')
    const job = (await hub.running.services.jobs.create({ name: 'echo', target: 'device:late-1', payload: { n: 1 } }))!
    expect((await hub.running.services.jobs.get(job.id)).executions[0]).toMatchObject({ state: 'queued', deliveredAt: null })

    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'late-1', token }])
    cleanups.push(() => agent!.stop())
    const done = await waitJobDone(hub, job.id, 15_000)
    expect(done.executions[0]).toMatchObject({ state: 'succeeded', attempt: 1, result: { n: 1 } })
  })

  it('an agent cut off after pulling runs its jobs offline; the results arrive after it reconnects', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('jobs-offline')
    cleanups.push(tmp.remove)
    const proxy = await startProxy(hub.running.mqttPort)
    cleanups.push(() => proxy.close())
    const token = await hub.addDevice('away-1')
    const jobs = hub.running.services.jobs

    // Each run holds until the test lets it go, so the cut always falls between pull and finish.
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    const ran: Array<{ execId: string; connectedAtStart: boolean; connectedAtEnd: boolean }> = []
    // The handlers ask the agent that runs them whether it is connected.
    const self: { agent?: Agent } = {}
    const [a] = await startAgents(proxy.url, tmp.dir, [{ id: 'away-1', token }], { jobConcurrency: 2 }, {
      handlers: {
        async 'offline.work'(ctx) {
          const connectedAtStart = self.agent!.isConnected()
          await gate
          ran.push({ execId: ctx.execId, connectedAtStart, connectedAtEnd: self.agent!.isConnected() })
          return { done: ctx.execId }
        },
      },
    })
    const agent = a!
    self.agent = agent
    cleanups.push(() => agent.stop())
    await waitOnline(hub, ['away-1'])

    const created = await Promise.all(Array.from({ length: 4 }, async (_, i) => (await jobs.create({ name: 'offline.work', target: 'device:away-1', payload: { i } }))!))
    // All four are in the device's local queue (two running, two queued).
    await waitFor(() => (agent.stats().jobs?.queued ?? 0) + (agent.stats().jobs?.running ?? 0) === 4, 'four executions held by the agent')
    proxy.cut()
    await waitFor(() => !hub.running.services.presence.isReachable('away-1') && !agent.isConnected(), 'device offline on both sides')
    release()
    await waitFor(() => ran.length === 4, 'all four runs done offline')
    expect(ran.every((r) => !r.connectedAtEnd)).toBe(true)
    // The hub has heard nothing of the results yet.
    for (const j of created) expect((await jobs.get(j.id)).counts.succeeded).toBe(0)
    expect(agent.stats().jobs?.updatesPending).toBeGreaterThan(0)

    proxy.restore()
    for (const j of created) {
      const done = await waitJobDone(hub, j.id, 20_000)
      expect(done.executions[0]).toMatchObject({ state: 'succeeded', attempt: 1, result: { done: `${j.id}.away-1` } })
    }
    await waitFor(() => agent.stats().jobs?.updatesPending === 0, 'update outbox drained')
    // Each ran once on the device.
    expect(ran.map((r) => r.execId).sort()).toEqual(created.map((j) => `${j.id}.away-1`).sort())
  }, 60_000)
})
