import { afterEach, describe, expect, it } from 'vitest'
import { startAgents } from './support/agents.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'

/**
 * Acceptance 5 (issue #4): `ifOffline: "queue"` for an offline device
 * creates a job that runs when the device comes back.
 */
describe('a command queued for an offline device', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('becomes a job, which runs the command when the device is back', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('cmd-queue')
    cleanups.push(tmp.remove)
    const token = await hub.addDevice('sleeper')
    const seen: unknown[] = []
    const r = await hub.api<{ id: string; status: string; jobId: string }>('POST', '/api/devices/sleeper/commands', {
      name: 'note.this', args: { remember: 'me' }, ifOffline: 'queue',
    })
    expect(r.status).toBe(202)
    expect(r.body).toMatchObject({ status: 'queued' })

    // The device comes back; its command handler runs as the job's task.
    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'sleeper', token }], {}, {
      commands: { 'note.this': (ctx) => { seen.push(ctx.args); return { noted: ctx.args } } },
    })
    cleanups.push(() => agent!.stop())
    const job = await waitFor(async () => {
      const j = await hub.running.services.jobs.get(r.body.jobId)
      return j.status === 'completed' ? j : undefined
    }, 'the queued command\'s job to complete', 20_000)
    expect(job.executions[0]).toMatchObject({ state: 'succeeded', result: { noted: { remember: 'me' } } })
    expect(seen).toEqual([{ remember: 'me' }])

    // A built-in command queued the same way runs too, when the device is back again.
    await agent!.stop()
    await waitFor(() => !hub.running.services.presence.isReachable('sleeper'), 'offline again')
    const info = await hub.api<{ jobId: string }>('POST', '/api/devices/sleeper/commands', { name: 'sys.info', ifOffline: 'queue' })
    expect(info.status).toBe(202)
    const [again] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'sleeper', token }])
    cleanups.push(() => again!.stop())
    const infoJob = await waitFor(async () => {
      const j = await hub.running.services.jobs.get(info.body.jobId)
      return j.status === 'completed' ? j : undefined
    }, 'the queued sys.info to complete', 20_000)
    expect(infoJob.executions[0]!.state).toBe('succeeded')
    expect(infoJob.executions[0]!.result).toMatchObject({ storeId: again!.stats().storeId })
  })
})
