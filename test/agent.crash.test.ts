import { afterEach, describe, expect, it } from 'vitest'
import { startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'

/**
 * Agent.crash(), the simulator's in-process stand-in for a killed agent
 * process: the hub hears the Will (not a death), and a new agent on the same
 * ledger reports the job that was running as INTERRUPTED.
 */
describe('a simulated agent crash', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('cuts the link without a death and leaves running work to the next start', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('agent-crash')
    cleanups.push(tmp.remove)
    const token = await hub.addDevice('crashy')
    const handlers = { hang: () => new Promise(() => {}), quick: () => 'ok' }
    const [first] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'crashy', token }], {}, { handlers })
    await waitOnline(hub, ['crashy'])
    const jobs = hub.running.services.jobs
    const job = (await jobs.create({ name: 'hang', target: 'device:crashy', maxAttempts: 2, backoffBaseMs: 0, backoffMaxMs: 0 }))!
    await waitFor(async () => (await jobs.get(job.id)).executions[0]!.state === 'in_progress', 'running')

    await first!.crash()
    await waitFor(() => !hub.running.services.presence.isReachable('crashy'), 'offline')
    const presence = hub.running.services.presence.get('crashy')!
    // The broker published the Will: the hub saw a death or a dropped connection, never a clean stop.
    expect(presence.reason).not.toBe('shutdown')

    const [second] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'crashy', token }], {}, { handlers: { ...handlers, hang: () => 'second time' } })
    cleanups.push(() => second!.stop())
    const done = await waitJobDone(hub, job.id, 20_000)
    const history = (await jobs.execution(done.executions[0]!.execId)).history
    expect(history.find((h) => h.state === 'failed')?.detail).toMatch(/^INTERRUPTED/)
    expect(done.executions[0]).toMatchObject({ state: 'succeeded', attempt: 2, result: 'second time' })
  })
})
