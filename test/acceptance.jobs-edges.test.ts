import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import { startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'

/**
 * Acceptance 6 (issue #3): expired jobs become `expired`; a canceled job's
 * running executions see their AbortSignal fire; an unknown task is
 * `rejected`; a `shell` command off the allowlist is refused with a clear
 * error.
 */
describe('job edges: expiry, cancel, unknown tasks, the shell allowlist', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function setup(deps: Parameters<typeof startAgents>[4] = {}, config: Parameters<typeof startAgents>[3] = {}): Promise<{ hub: TestHub; agent: Agent; token: string }> {
    const hub = await startTestHub({ flushDelayMs: 5, jobSweepIntervalMs: 100, jobLeaseGraceMs: 200 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('jobs-edges')
    cleanups.push(tmp.remove)
    const token = await hub.addDevice('edge-1')
    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'edge-1', token }], config, deps)
    cleanups.push(() => agent!.stop())
    await waitOnline(hub, ['edge-1'])
    return { hub, agent: agent!, token }
  }

  it('expires an execution its device could not start in time, on the hub and on the device', async () => {
    let releaseBlocker!: () => void
    const blocker = new Promise<void>((r) => { releaseBlocker = r })
    const { hub } = await setup({ handlers: { async block() { await blocker; return 'unblocked' } } }, { jobConcurrency: 1 })
    const jobs = hub.running.services.jobs
    // Offline device: never delivered, expired by the hub's sweeper.
    await hub.addDevice('edge-away')
    const unseen = (await jobs.create({ name: 'echo', target: 'device:edge-away', expiresAt: Date.now() + 300 }))!
    // Online but busy: delivered, waits in the local queue behind a long job, and the agent refuses to start it late.
    const busy = (await jobs.create({ name: 'block', target: 'device:edge-1' }))!
    await waitFor(async () => (await jobs.get(busy.id)).executions[0]!.state === 'in_progress', 'blocker running')
    const late = (await jobs.create({ name: 'echo', target: 'device:edge-1', expiresAt: Date.now() + 300, timeoutMs: 200 }))!
    await waitFor(async () => (await jobs.get(late.id)).executions[0]!.deliveredAt !== null, 'late job delivered')

    expect((await waitJobDone(hub, unseen.id, 10_000)).executions[0]).toMatchObject({ state: 'expired', startedAt: null })
    await new Promise((r) => setTimeout(r, 400))
    releaseBlocker()
    const lateDone = await waitJobDone(hub, late.id, 10_000)
    expect(lateDone.executions[0]).toMatchObject({ state: 'expired', startedAt: null })
    expect((await waitJobDone(hub, busy.id, 10_000)).executions[0]!.state).toBe('succeeded')
  })

  it('canceling a job fires the AbortSignal of its running execution', async () => {
    const aborted: unknown[] = []
    const { hub, agent } = await setup({
      handlers: {
        'long.task'(ctx) {
          return new Promise((_resolve, reject) => {
            ctx.signal.addEventListener('abort', () => {
              aborted.push(ctx.signal.reason)
              reject(new Error('stopped'))
            }, { once: true })
          })
        },
      },
    })
    const jobs = hub.running.services.jobs
    const job = (await jobs.create({ name: 'long.task', target: 'device:edge-1', timeoutMs: 60_000 }))!
    await waitFor(async () => (await jobs.get(job.id)).executions[0]!.state === 'in_progress', 'running')
    expect((await jobs.cancel(job.id)).status).toBe('canceled')
    await waitFor(() => aborted.length === 1, 'the handler\'s AbortSignal to fire')
    expect((await jobs.get(job.id)).executions[0]!.state).toBe('canceled')
    await waitFor(() => agent.stats().jobs?.running === 0, 'the agent to free the slot')
    expect(agent.stats().jobs?.outcomes.canceled).toBe(1)
  })

  it('rejects an unknown task, and a shell command off the allowlist with an error that says what to fix', async () => {
    const { hub } = await setup({}, { shellAllow: ['/bin/echo'] })
    const jobs = hub.running.services.jobs
    const unknown = (await jobs.create({ name: 'no.such.task', target: 'device:edge-1' }))!
    const offList = (await jobs.create({ name: 'shell', target: 'device:edge-1', payload: { cmd: '/bin/rm', args: ['-rf', '/tmp/nothing-here'] } }))!
    const allowed = (await jobs.create({ name: 'shell', target: 'device:edge-1', payload: { cmd: '/bin/echo', args: ['hello', '$HOME'] } }))!

    const u = (await waitJobDone(hub, unknown.id)).executions[0]!
    expect(u).toMatchObject({ state: 'rejected', attempt: 1, error: { code: 'UNKNOWN_TASK' } })
    expect(u.error!.message).toMatch(/no\.such\.task/)

    const r = (await waitJobDone(hub, offList.id)).executions[0]!
    expect(r).toMatchObject({ state: 'rejected', attempt: 1, error: { code: 'COMMAND_NOT_ALLOWED' } })
    expect(r.error!.message).toMatch(/\/bin\/rm/)
    expect(r.error!.message).toMatch(/shellAllow/)

    // No shell: "$HOME" reaches echo as it is.
    const a = (await waitJobDone(hub, allowed.id)).executions[0]!
    expect(a).toMatchObject({ state: 'succeeded', result: { exitCode: 0, stdout: 'hello $HOME\n' } })
  })
})
