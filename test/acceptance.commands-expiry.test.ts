import { afterEach, describe, expect, it } from 'vitest'
import { encode, topics, type CommandResponse } from '../protocol/index.js'
import type { CommandRecord } from '../hub/commands/store.js'
import { startAgents, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { startProxy } from './support/proxy.js'

/**
 * Acceptance 3 (issue #4): a command delivered after its expiresAt (the
 * device's link is slowed down in the test) is not executed; a duplicated
 * delivery of the same id executes once.
 */
describe('command expiry and duplicates', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('a command that reaches the device after its deadline is refused EXPIRED and not run', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('cmd-expiry')
    cleanups.push(tmp.remove)
    // Everything from the hub reaches this device 600 ms late.
    const slowLink = await startProxy(hub.running.mqttPort, { downDelayMs: 600 })
    cleanups.push(() => slowLink.close())
    const token = await hub.addDevice('far-away')
    let runs = 0
    const [agent] = await startAgents(slowLink.url, tmp.dir, [{ id: 'far-away', token }], {}, {
      commands: { 'count.me': () => { runs++; return { runs } } },
    })
    cleanups.push(() => agent!.stop())
    await waitOnline(hub, ['far-away'], 30_000)

    const r = await hub.api<{ error: { code: string; id: string } }>('POST', '/api/devices/far-away/commands', { name: 'count.me', timeoutMs: 200 })
    expect([r.status, r.body.error.code]).toEqual([504, 'COMMAND_TIMEOUT'])
    // The device's answer comes later and is kept as late: EXPIRED, and the handler never ran.
    const rec = await waitFor(async () => {
      const g = (await hub.api<CommandRecord>('GET', `/api/commands/${r.body.error.id}`)).body
      return g.late ? g : undefined
    }, 'the late EXPIRED reply', 10_000)
    expect(rec.status).toBe('timed_out')
    expect(rec.late!.response).toMatchObject({ ok: false, error: { code: 'EXPIRED' } })
    expect(runs).toBe(0)
    expect(agent!.stats().commands).toMatchObject({ expired: 1, ran: 0 })
  }, 60_000)

  it('the same command id delivered twice runs once, and both deliveries get the first outcome', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('cmd-dup')
    cleanups.push(tmp.remove)
    const token = await hub.addDevice('twice')
    let runs = 0
    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'twice', token }], {}, {
      commands: { 'count.me': () => { runs++; return { run: runs } } },
    })
    cleanups.push(() => agent!.stop())
    await waitOnline(hub, ['twice'])
    const replies: CommandResponse[] = []
    await hub.running.broker.subscribe('devices/twice/cmd/res', (m) => { replies.push(JSON.parse(m.payload.toString()) as CommandResponse) })

    // The same request, as a network or broker might deliver it twice.
    const request = encode({ type: 'cmd.req', v: 1, id: 'cdup0000000001', name: 'count.me', expiresAt: Date.now() + 10_000 })
    await hub.running.broker.publish(topics.cmdReq('twice'), request, { qos: 1 })
    await hub.running.broker.publish(topics.cmdReq('twice'), request, { qos: 1 })
    await waitFor(() => replies.length === 2, 'two replies')
    expect(runs).toBe(1)
    expect(replies).toEqual([
      { type: 'cmd.res', v: 1, id: 'cdup0000000001', ok: true, result: { run: 1 } },
      { type: 'cmd.res', v: 1, id: 'cdup0000000001', ok: true, result: { run: 1 } },
    ])
    expect(agent!.stats().commands).toMatchObject({ ran: 1, duplicates: 1 })
  })
})
