import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { encode, topics, type CommandRequest } from '../protocol/index.js'
import type { CommandRecord } from '../hub/commands/store.js'
import type { GroupResult } from '../hub/commands/commands.js'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import type { HubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { loadHubConfig } from '../hub/config.js'
import { silentLogger } from '../common/logger.js'

/**
 * The hub's half of commands, against devices played by hand with real
 * MQTT.js clients: offline refusals, replies, device errors, deadlines, late
 * replies, disconnects, groups and queueing as a job. The HTTP API is the
 * entry point, as users call it.
 */

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000003'

type Reply = (req: CommandRequest) => { ok: boolean; result?: unknown; error?: { code: string; message: string } } | undefined

describe('hub commands over the wire', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function hubWith(overrides: Partial<HubConfig> = {}): Promise<TestHub> {
    const hub = await startTestHub({ flushDelayMs: 2, ...overrides })
    cleanups.push(() => hub.stop())
    return hub
  }

  /** A device that answers each cmd.req with `reply` (undefined: stays silent). */
  async function device(hub: TestHub, id: string, reply: Reply, token?: string, capabilities = ['commands']): Promise<{ client: MqttClient; requests: CommandRequest[] }> {
    const t = token ?? await hub.addDevice(id)
    const client = await connectDevice(hub.mqttUrl, id, t)
    cleanups.push(() => client.endAsync(true))
    const requests: CommandRequest[] = []
    client.on('message', (_topic, payload) => {
      const req = JSON.parse(payload.toString()) as CommandRequest
      requests.push(req)
      const r = reply(req)
      if (r) void client.publishAsync(topics.cmdRes(id), encode({ type: 'cmd.res', v: 1, id: req.id, ...r }), { qos: 1 })
    })
    await client.subscribeAsync(topics.cmdReq(id), { qos: 1 })
    await client.publishAsync(topics.state(id), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: 't', storeId, capabilities }), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable(id), `${id} reachable`)
    return { client, requests }
  }

  const echo: Reply = (req) => ({ ok: true, result: { name: req.name, args: req.args ?? null } })

  it('refuses a command to an offline or never-seen device at once, publishes nothing, and records it', async () => {
    const hub = await hubWith()
    await hub.addDevice('cmd-never')
    const published: string[] = []
    await hub.running.broker.subscribe('devices/+/cmd/req', (m) => { published.push(m.topic) })
    const t0 = performance.now()
    const r = await hub.api<{ error: { code: string; message: string; lastSeen: number | null } }>('POST', '/api/devices/cmd-never/commands', { name: 'ping' })
    const ms = performance.now() - t0
    expect(r.status).toBe(409)
    expect(r.body.error).toMatchObject({ code: 'DEVICE_OFFLINE', lastSeen: null })
    expect(r.body.error.message).toMatch(/never connected/)
    expect(ms).toBeLessThan(100)
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(published).toEqual([])
    const list = await hub.api<{ commands: CommandRecord[] }>('GET', '/api/devices/cmd-never/commands')
    expect(list.body.commands[0]).toMatchObject({ status: 'offline', name: 'ping', error: { code: 'DEVICE_OFFLINE' } })
    const unknown = await hub.api<{ error: { code: string } }>('POST', '/api/devices/cmd-nobody/commands', { name: 'ping' })
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'DEVICE_NOT_FOUND'])
  })

  it('answers with the device\'s result, or its error, and records the timeline', async () => {
    const hub = await hubWith()
    const dev = await device(hub, 'cmd-ok', (req) => (req.name === 'boom' ? { ok: false, error: { code: 'DISK_FULL', message: 'no space' } } : echo(req)))
    const r = await hub.api<{ id: string; ok: boolean; status: string; result: unknown; durationMs: number }>('POST', '/api/devices/cmd-ok/commands', { name: 'say', args: { hi: 1 }, timeout: '2s' })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ ok: true, status: 'succeeded', result: { name: 'say', args: { hi: 1 } } })
    expect(dev.requests[0]).toMatchObject({ type: 'cmd.req', id: r.body.id, name: 'say', args: { hi: 1 } })
    expect(dev.requests[0]!.expiresAt).toBeGreaterThan(Date.now())
    const failed = await hub.api<{ ok: boolean; error: unknown }>('POST', '/api/devices/cmd-ok/commands', { name: 'boom' })
    expect([failed.status, failed.body.ok, failed.body.error]).toEqual([200, false, { code: 'DISK_FULL', message: 'no space' }])
    const rec = await hub.api<CommandRecord>('GET', `/api/commands/${r.body.id}`)
    expect(rec.body).toMatchObject({ status: 'succeeded', deviceId: 'cmd-ok', result: { name: 'say', args: { hi: 1 } }, late: null })
    expect(rec.body.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'replied'])
  })

  it('times out at the deadline; a reply after it is kept as late and changes nothing', async () => {
    const hub = await hubWith()
    const dev = await device(hub, 'cmd-slow', () => undefined)
    const t0 = performance.now()
    const r = await hub.api<{ error: { code: string; id: string } }>('POST', '/api/devices/cmd-slow/commands', { name: 'ping', timeoutMs: 300 })
    expect([r.status, r.body.error.code]).toEqual([504, 'COMMAND_TIMEOUT'])
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290)
    const id = r.body.error.id
    await dev.client.publishAsync(topics.cmdRes('cmd-slow'), encode({ type: 'cmd.res', v: 1, id, ok: true, result: 'too late' }), { qos: 1 })
    const rec = await waitFor(async () => {
      const g = (await hub.api<CommandRecord>('GET', `/api/commands/${id}`)).body
      return g.late ? g : undefined
    }, 'late reply recorded')
    expect(rec).toMatchObject({ status: 'timed_out', result: null, late: { response: { ok: true, result: 'too late' } } })
    expect(rec.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'timed_out', 'late reply (ignored)'])
  })

  it('a device that drops mid-command ends the wait at once with DEVICE_DISCONNECTED', async () => {
    const hub = await hubWith()
    const dev = await device(hub, 'cmd-drop', () => undefined)
    const pending = hub.api<{ error: { code: string } }>('POST', '/api/devices/cmd-drop/commands', { name: 'ping', timeout: '10s' })
    await waitFor(() => dev.requests.length === 1, 'request delivered')
    const t0 = performance.now()
    dev.client.stream.destroy()
    const r = await pending
    expect([r.status, r.body.error.code]).toEqual([502, 'DEVICE_DISCONNECTED'])
    expect(performance.now() - t0).toBeLessThan(2000)
  })

  it('a group command goes to the reachable members only and lists who was skipped', async () => {
    const hub = await hubWith()
    for (const id of ['grp-a', 'grp-b', 'grp-c']) {
      const token = await hub.addDevice(id, 'grp')
      if (id !== 'grp-c') await device(hub, id, echo, token)
    }
    const r = await hub.api<{ outcomes: Array<{ deviceId: string; status: string }>; skipped: Array<{ deviceId: string }>; counts: Record<string, number> }>(
      'POST', '/api/commands', { target: 'group:grp', name: 'ping', timeout: '2s' })
    expect(r.status).toBe(200)
    expect(r.body.outcomes.map((o) => `${o.deviceId}:${o.status}`).sort()).toEqual(['grp-a:succeeded', 'grp-b:succeeded'])
    expect(r.body.skipped.map((s) => s.deviceId)).toEqual(['grp-c'])
    expect(r.body.counts).toEqual({ succeeded: 2, failed: 0, timed_out: 0, disconnected: 0, skipped: 1 })
  })

  it('with ifOffline "queue", a command for an offline device becomes a job', async () => {
    const hub = await hubWith()
    await hub.addDevice('cmd-later')
    const r = await hub.api<{ id: string; status: string; jobId: string }>('POST', '/api/devices/cmd-later/commands', { name: 'sys.info', args: { a: 1 }, ifOffline: 'queue' })
    expect(r.status).toBe(202)
    expect(r.body.status).toBe('queued')
    const job = await hub.running.services.jobs.get(r.body.jobId)
    expect(job).toMatchObject({ name: 'cmd.sys.info', payload: { a: 1 }, target: 'device:cmd-later', maxAttempts: 1, counts: { queued: 1 } })
    expect((await hub.api<CommandRecord>('GET', `/api/commands/${r.body.id}`)).body).toMatchObject({ status: 'queued', jobId: r.body.jobId })
  })

  it('a reply naming another device\'s command is not taken as its answer', async () => {
    const hub = await hubWith()
    await device(hub, 'cmd-slow2', () => undefined)
    const other = await device(hub, 'cmd-other', () => undefined)
    const pending = hub.api<{ error: { code: string; id: string } }>('POST', '/api/devices/cmd-slow2/commands', { name: 'ping', timeoutMs: 500 })
    await waitFor(() => hub.running.services.commands.stats().pending === 1, 'command in flight')
    const rec = await hub.api<{ commands: CommandRecord[] }>('GET', '/api/devices/cmd-slow2/commands')
    const id = rec.body.commands[0]!.id
    await other.client.publishAsync(topics.cmdRes('cmd-other'), encode({ type: 'cmd.res', v: 1, id, ok: true, result: 'forged' }), { qos: 1 })
    const r = await pending
    expect(r.body.error.code).toBe('COMMAND_TIMEOUT')
    expect(hub.running.services.commands.stats().unknownReplies).toBe(1)
  })

  it('a device whose agent does not take commands is told so at once', async () => {
    const hub = await hubWith()
    await device(hub, 'cmd-old', echo, undefined, ['telemetry', 'events'])
    const r = await hub.api<{ error: { code: string; message: string } }>('POST', '/api/devices/cmd-old/commands', { name: 'ping' })
    expect([r.status, r.body.error.code]).toEqual([409, 'COMMANDS_NOT_SUPPORTED'])
    expect(r.body.error.message).toMatch(/upgrade its agent/)
  })

  it('a group member that goes away before its turn is skipped; one whose turn comes after the deadline is recorded as not sent', async () => {
    const hub = await hubWith({ commandGroupConcurrency: 1 })
    // One at a time: a stays silent until the deadline; b drops while a is served; c would answer at once.
    await device(hub, 'g1-a', () => undefined, await hub.addDevice('g1-a', 'g1'))
    const b = await device(hub, 'g1-b', echo, await hub.addDevice('g1-b', 'g1'))
    await device(hub, 'g1-c', echo, await hub.addDevice('g1-c', 'g1'))
    const pending = hub.api<GroupResult>('POST', '/api/commands', { target: 'group:g1', name: 'ping', timeoutMs: 700 })
    await waitFor(() => hub.running.services.commands.stats().pending === 1, 'a in flight')
    await b.client.endAsync(true)
    await waitFor(() => !hub.running.services.presence.isReachable('g1-b'), 'b offline')
    const r = (await pending).body
    expect(r.outcomes.map((o) => `${o.deviceId}:${o.status}`)).toEqual(['g1-a:timed_out', 'g1-c:timed_out'])
    expect(r.skipped.map((s) => s.deviceId)).toEqual(['g1-b'])
    const c = r.outcomes[1]!
    expect(c.id).toMatch(/^c/)
    const members = (await hub.api<{ commands: CommandRecord[] }>('GET', `/api/commands/${r.id}`)).body.commands
    expect(members.map((m) => `${m.deviceId}:${m.status}`)).toEqual(['g1-a:timed_out', 'g1-b:offline', 'g1-c:timed_out'])
    expect(members[2]!.error?.message).toMatch(/not sent/)
  })

  it('stopping the hub ends a command in flight at once; a start after a crash settles what was left in flight', async () => {
    const tmp = tempDir('cmd-stop')
    cleanups.push(async () => { tmp.remove() })
    const hub = await startTestHub({ flushDelayMs: 2 }, tmp.dir)
    cleanups.push(() => hub.stop())
    await device(hub, 'cmd-stop', () => undefined)
    const pending = hub.api<{ error: { code: string; id: string } }>('POST', '/api/devices/cmd-stop/commands', { name: 'ping', timeout: '30s' })
    await waitFor(() => hub.running.services.commands.stats().pending === 1, 'in flight')
    const t0 = performance.now()
    const stopping = hub.stop()
    const r = await pending
    expect([r.status, r.body.error.code]).toEqual([503, 'UNAVAILABLE'])
    await stopping
    expect(performance.now() - t0).toBeLessThan(3000)

    // A hub killed with a command in flight leaves its row "sent"; the next start settles it.
    const db = new Database(join(tmp.dir, 'hub.db'))
    db.prepare("INSERT INTO commands (id, device_id, name, status, created_at, sent_at, expires_at) VALUES ('ccrashed000001', 'cmd-stop', 'ping', 'sent', 1, 1, 2)").run()
    db.close()
    const again = createHub(loadHubConfig({ dataDir: tmp.dir, mqttPort: 0, httpPort: 0, logLevel: 'silent' }, {}), { logger: silentLogger() })
    const running = await again.start()
    try {
      expect(await running.services.commands.get(r.body.error.id)).toMatchObject({ status: 'disconnected', error: { code: 'HUB_STOPPING' } })
      expect(await running.services.commands.get('ccrashed000001')).toMatchObject({ status: 'disconnected', error: { code: 'HUB_RESTART' } })
    } finally {
      await again.stop()
    }
  })
})
