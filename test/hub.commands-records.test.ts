import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { encode, topics, type CommandRequest } from '../protocol/index.js'
import type { CommandRecord } from '../hub/commands/store.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'

/**
 * A command counts only once its record is committed: when the hub cannot
 * write the record (here a trigger in the real database refuses it, as a
 * full disk would), the command is not sent and the caller is told so
 * (500 INTERNAL), instead of being answered with something the record does
 * not have. The hub carries on once it can write again.
 */
const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000004'

describe('a command record that cannot be written', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  /** A device played by hand that answers every cmd.req with ok. */
  async function device(hub: TestHub, id: string): Promise<CommandRequest[]> {
    const client = await connectDevice(hub.mqttUrl, id, await hub.addDevice(id))
    cleanups.push(() => client.endAsync(true))
    const requests: CommandRequest[] = []
    client.on('message', (_topic, payload) => {
      const req = JSON.parse(payload.toString()) as CommandRequest
      requests.push(req)
      void client.publishAsync(topics.cmdRes(id), encode({ type: 'cmd.res', v: 1, id: req.id, ok: true, result: { pong: true } }), { qos: 1 })
    })
    await client.subscribeAsync(topics.cmdReq(id), { qos: 1 })
    await client.publishAsync(topics.state(id), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: 't', storeId, capabilities: ['commands'] }), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable(id), `${id} reachable`)
    return requests
  }

  it('is not sent, its caller gets INTERNAL with the reason, and the next command works once the record can be written', async () => {
    const hub = await startTestHub({ flushDelayMs: 2 })
    cleanups.push(() => hub.stop())
    const requests = await device(hub, 'rec-fail')
    await hub.addDevice('rec-gone')
    // A second connection to the hub's own database file: the hub's writes to commands now fail.
    const db = new Database(join(hub.dataDir, 'hub.db'))
    cleanups.push(() => { db.close() })
    db.exec("CREATE TRIGGER no_commands BEFORE INSERT ON commands BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")

    type Err = { error: { code: string; message: string; outcome?: { status: string } } }
    const online = await hub.api<Err>('POST', '/api/devices/rec-fail/commands', { name: 'ping', timeout: '5s' })
    expect(online.status).toBe(500)
    expect(online.body.error.code).toBe('INTERNAL')
    expect(online.body.error.message).toMatch(/was not sent: the hub could not write its record \(refused by the test\)/)
    const offline = await hub.api<Err>('POST', '/api/devices/rec-gone/commands', { name: 'ping' })
    expect([offline.status, offline.body.error.code]).toEqual([500, 'INTERNAL'])
    expect(offline.body.error.message).toMatch(/offline and nothing was sent: the hub could not write its record/)
    // Nothing reached the device: a command the record does not know never runs.
    expect(requests).toEqual([])

    // Recorded when sent, but its outcome cannot be: the device ran it; the caller is told both.
    db.exec('DROP TRIGGER no_commands')
    db.exec("CREATE TRIGGER no_outcomes BEFORE UPDATE ON commands BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    const ran = await hub.api<Err>('POST', '/api/devices/rec-fail/commands', { name: 'ping', timeout: '5s' })
    expect([ran.status, ran.body.error.code, ran.body.error.outcome?.status]).toEqual([500, 'INTERNAL', 'succeeded'])
    expect(ran.body.error.message).toMatch(/answered \(succeeded\): the hub could not write its record/)
    expect(requests).toHaveLength(1)

    db.exec('DROP TRIGGER no_outcomes')
    const ok = await hub.api<{ id: string; ok: boolean }>('POST', '/api/devices/rec-fail/commands', { name: 'ping', timeout: '5s' })
    expect([ok.status, ok.body.ok]).toEqual([200, true])
    expect((await hub.api<CommandRecord>('GET', `/api/commands/${ok.body.id}`)).body).toMatchObject({ status: 'succeeded', result: { pong: true } })
    const refused = await hub.api<{ error: { code: string } }>('POST', '/api/devices/rec-gone/commands', { name: 'ping' })
    expect([refused.status, refused.body.error.code]).toEqual([409, 'DEVICE_OFFLINE'])
  })
})
