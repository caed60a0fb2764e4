import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import mqtt, { type MqttClient } from 'mqtt'
import type { Agent } from '../agent/agent.js'
import { encode, topics } from '../protocol/index.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { expectStoredOnce, registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { killProc, startAgentProc, startHubProc, type HubProc, type Proc } from './support/procs.js'
import { loadHubConfig } from '../hub/config.js'
import { filterMatches } from '../hub/mqtt/external-broker.js'
import { freePort } from '../common/free-port.js'
import { SKIP_WITHOUT_DYNSEC, startDynsecBroker, type DynsecBroker } from './support/mosquitto-broker.js'

/**
 * Issue #18, first part: a hub on an external Mosquitto 2 with dynamic
 * security instead of its embedded broker. The hub keeps the broker's
 * accounts (device and observer clients, their roles) as the registry
 * changes, so Mosquitto enforces the same default-deny ACL; presence comes
 * from births and deaths; telemetry is stored exactly once through a hub
 * restart, commands reach reachable devices and fail fast for offline ones,
 * and jobs are pulled and run.
 */

const STORE = 'store-extbroker'
const birth = (epoch: number) => encode({ type: 'birth', v: 1, epoch, bootId: 'boot-1', agentVersion: 'test', storeId: STORE, capabilities: [] })
const batch = (seq: number) => encode({ type: 'telemetry', v: 1, storeId: STORE, samples: [{ seq, ts: Date.now(), sensor: 'temp', value: seq }] })

/** The QoS the broker granted a filter, 128 when it refused it (MQTT.js rejects a refused SUBSCRIBE). */
async function granted(c: MqttClient, filter: string): Promise<number | undefined> {
  try {
    return (await c.subscribeAsync(filter, { qos: 1 }))[0]?.qos
  } catch (err) {
    const packet = (err as { packet?: { granted?: number[] } }).packet
    return packet?.granted?.[0]
  }
}

/** A CONNECT the broker must refuse: resolves with its error ("connected" if it did not). */
async function refused(url: string, options: mqtt.IClientOptions): Promise<string> {
  try {
    const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
    await c.endAsync()
    return 'connected'
  } catch (err) {
    return (err as Error).message
  }
}

describe('the external broker\'s options', () => {
  const load = (o: Record<string, unknown>) => () => loadHubConfig(o, {})
  it('takes mqtt:// and mqtts:// URLs, from flags or the environment, with the password file made absolute', () => {
    expect(loadHubConfig({ broker: 'mqtt://broker:1883', brokerUsername: 'hub', brokerPasswordFile: 'pw' }, {})).toMatchObject({ broker: 'mqtt://broker:1883', brokerUsername: 'hub', brokerPasswordFile: join(process.cwd(), 'pw'), brokerDynsec: true })
    expect(loadHubConfig({}, { ROLLCALL_BROKER: 'mqtts://b:8883', ROLLCALL_BROKER_USERNAME: 'hub' })).toMatchObject({ broker: 'mqtts://b:8883', brokerUsername: 'hub' })
  })
  it('refuses what cannot work, saying what to give instead', () => {
    expect(load({ broker: 'broker:1883' })).toThrow(/must start with mqtt:\/\/ or mqtts:\/\//)
    expect(load({ broker: 'not a url' })).toThrow(/is not a URL: give mqtt:\/\/host:port/)
    expect(load({ broker: 'mqtt://hub:secret@broker:1883' })).toThrow(/brokerUsername and brokerPasswordFile, not in the broker URL/)
    expect(load({ brokerUsername: 'hub' })).toThrow(/brokerUsername is for an external broker: give --broker/)
    expect(load({ broker: 'mqtt://b:1883', brokerCa: 'ca.pem' })).toThrow(/brokerCa is for a broker reached over TLS/)
    // The handover (hub/mqtt/account-handover.ts) takes the broker account's options, on a hub with its own broker only.
    expect(loadHubConfig({ handoverBroker: 'mqtt://b:1883', brokerUsername: 'hub', brokerPasswordFile: 'pw' }, {})).toMatchObject({ handoverBroker: 'mqtt://b:1883', brokerUsername: 'hub' })
    expect(load({ handoverBroker: 'mqtt://b:1883', broker: 'mqtt://b:1883' })).toThrow(/handoverBroker is for a hub with its own broker/)
    expect(load({ handoverBroker: 'b:1883' })).toThrow(/handoverBroker "b:1883" must start with mqtt:\/\/ or mqtts:\/\//)
  })
  it('routes a message by filter when its subscription is not this run\'s', () => {
    expect(filterMatches('$share/rollcall/devices/+/telemetry', 'devices/d1/telemetry')).toBe(true)
    expect(filterMatches('devices/+/telemetry', 'devices/d1/telemetry/ack')).toBe(false)
    expect(filterMatches('devices/#', 'devices')).toBe(true)
    expect(filterMatches('#', '$CONTROL/dynamic-security/v1/response')).toBe(false)
    expect(filterMatches('$CONTROL/dynamic-security/v1/response', '$CONTROL/dynamic-security/v1/response')).toBe(true)
  })
})

describe.skipIf(SKIP_WITHOUT_DYNSEC)('a hub on an external Mosquitto with dynamic security', () => {
  const tmp = tempDir('external-broker')
  let broker: DynsecBroker
  let hub: TestHub
  const hubDir = join(tmp.dir, 'hub')
  const hubConfig = () => ({ broker: broker.url, brokerUsername: broker.adminUser, brokerPasswordFile: broker.adminPasswordFile, brokerClientId: 'rollcall-hub-test' })
  const clients: MqttClient[] = []
  const connect = async (id: string, token: string) => {
    const c = await connectDevice(broker.url, id, token)
    clients.push(c)
    return c
  }

  /** What the broker keeps retained on a device's state topic, read as the admin (undefined: nothing). */
  const retainedState = async (id: string): Promise<unknown> => {
    const c = await mqtt.connectAsync(broker.url, { username: broker.adminUser, password: broker.adminPassword, reconnectPeriod: 0 })
    try {
      const got = new Promise<unknown>((resolve) => { c.once('message', (_t, p) => { resolve(p.length === 0 ? undefined : JSON.parse(p.toString())) }) })
      await c.subscribeAsync(topics.state(id), { qos: 1 })
      // Retained messages come right after the SUBACK; a second round trip shows there was none.
      return await Promise.race([got, c.publishAsync('rollcall-test/ping', 'x', { qos: 1 }).then(() => new Promise((r) => setTimeout(() => r(undefined), 300)))])
    } finally {
      await c.endAsync()
    }
  }

  beforeAll(async () => {
    broker = await startDynsecBroker(tmp.dir)
    hub = await startTestHub(hubConfig(), hubDir)
  }, 60_000)

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.endAsync(true)))
    await hub?.stop()
    await broker?.stop()
    tmp.remove()
  }, 60_000)

  it('a start the broker refuses, or that finds no broker, stops with a message that says which', async () => {
    const wrong = join(tmp.dir, 'wrong-password')
    writeFileSync(wrong, 'not-the-password\n')
    await expect(startTestHub({ ...hubConfig(), brokerPasswordFile: wrong, brokerClientId: 'rollcall-hub-wrong' }))
      .rejects.toThrow(/cannot connect to the broker at mqtt:\/\/127\.0\.0\.1:\d+: it refused the hub's credentials/)
    await expect(startTestHub({ broker: `mqtt://127.0.0.1:${await freePort()}` })).rejects.toThrow(/cannot connect to the broker at .*ECONNREFUSED/)
  }, 60_000)

  it('holds the embedded broker\'s ACL: own topics only, no anonymous or wrong credentials, observers read-only', async () => {
    const [a, b] = await registerDevices(hub, 'acl', 2)
    const obs = await hub.api<{ token: string; username: string }>('POST', '/api/observers', { name: 'watcher' })
    expect(obs.status).toBe(201)

    // Who may connect.
    expect(await refused(broker.url, {})).toMatch(/Not authorized|Bad User Name/i)
    expect(await refused(broker.url, { clientId: a!.id, username: a!.id, password: 'not-the-token' })).toMatch(/Not authorized|Bad User Name/i)
    expect(await refused(broker.url, { clientId: a!.id, username: a!.id, password: b!.token })).toMatch(/Not authorized|Bad User Name/i)
    // A device's account is bound to its client id.
    expect(await refused(broker.url, { clientId: 'someone-else', username: a!.id, password: a!.token })).toMatch(/Not authorized|Bad User Name|Identifier rejected/i)

    const devA = await connect(a!.id, a!.token)
    const acks: string[] = []
    devA.on('message', (topic, payload) => { if (topic === topics.telemetryAck(a!.id)) acks.push(payload.toString()) })
    // Subscriptions: exactly its own down-topics.
    expect(await granted(devA, topics.telemetryAck(a!.id))).toBe(1)
    const commandsSeen: string[] = []
    devA.on('message', (topic, payload) => { if (topic === topics.cmdReq(a!.id)) commandsSeen.push(payload.toString()) })
    expect(await granted(devA, topics.cmdReq(a!.id))).toBe(1)
    for (const filter of [topics.cmdReq(b!.id), 'devices/+/telemetry', 'devices/#', topics.telemetry(b!.id)]) {
      expect({ filter, qos: await granted(devA, filter) }).toEqual({ filter, qos: 128 })
    }
    const watcher = await mqtt.connectAsync(broker.url, { username: obs.body.username, password: obs.body.token, reconnectPeriod: 0 })
    clients.push(watcher)
    const seen: string[] = []
    watcher.on('message', (topic) => { seen.push(topic) })
    expect(await granted(watcher, 'devices/+/telemetry')).toBe(1)
    expect(await granted(watcher, topics.cmdReq(a!.id))).toBe(128)

    // Publishes the broker must drop: another device's topic, a down-topic, an observer's publish.
    await devA.publishAsync(topics.state(a!.id), birth(1), { qos: 1, retain: true })
    await devA.publishAsync(topics.telemetry(b!.id), batch(1), { qos: 1 })
    await devA.publishAsync(topics.cmdReq(a!.id), Buffer.from('{"spoof":true}'), { qos: 1 })
    await watcher.publishAsync(topics.telemetry(a!.id), batch(7), { qos: 1 })
    // Then one the broker must pass: once it is stored and acked, the ones before it were seen or dropped.
    await devA.publishAsync(topics.telemetry(a!.id), batch(1), { qos: 1 })
    await waitFor(() => acks.some((x) => (JSON.parse(x) as { upTo: number }).upTo === 1), 'the ack of dev a\'s own batch', 20_000)

    const s = hub.running.services
    expect(await s.telemetry.streamsOf(b!.id)).toEqual([])
    const stored = await hub.api<{ samples: Array<{ seq: number }> }>('GET', `/api/devices/${a!.id}/telemetry?since=0&limit=100`)
    expect(stored.body.samples.map((x) => x.seq)).toEqual([1])
    // The observer reads what devices publish, nothing of what was dropped.
    await waitFor(() => seen.includes(topics.telemetry(a!.id)), 'the observer to see dev a\'s telemetry', 20_000)
    expect(seen).toEqual([topics.telemetry(a!.id)])
    // Its own spoofed command never reached it: devices may not publish on their down-topics.
    expect(commandsSeen).toEqual([])
    // Presence came from the birth alone: the hub saw no connection event.
    expect(s.presence.get(a!.id)).toMatchObject({ status: 'online', reachable: true, epoch: 1 })
  }, 60_000)

  it('cuts off a rotated or removed device: the broker closes it and refuses its old credentials, and the hub marks it gone', async () => {
    const [c] = await registerDevices(hub, 'cut', 1)
    const dev = await connect(c!.id, c!.token)
    await dev.publishAsync(topics.state(c!.id), birth(1), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable(c!.id), 'the device online')
    const closed = new Promise<void>((resolve) => dev.once('close', () => resolve()))
    const rotated = await hub.api<{ token: string }>('POST', `/api/devices/${c!.id}/token`)
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200)
    await closed
    expect(await refused(broker.url, { clientId: c!.id, username: c!.id, password: c!.token })).toMatch(/Not authorized|Bad User Name/i)
    // Mosquitto publishes no Will for a kicked client: the hub says it is gone, and so does the retained state a restart reads.
    expect(hub.running.services.presence.get(c!.id)).toMatchObject({ status: 'offline', reason: 'token-rotated', reachable: false })
    expect(await retainedState(c!.id)).toEqual({ type: 'death', v: 1, epoch: 1, storeId: STORE })
    const again = await connect(c!.id, rotated.body.token)
    await again.publishAsync(topics.state(c!.id), birth(2), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable(c!.id), 'the device online with its new token')
    const gone = new Promise<void>((resolve) => again.once('close', () => resolve()))
    expect((await hub.api('DELETE', `/api/devices/${c!.id}`)).status).toBe(204)
    await gone
    expect(await refused(broker.url, { clientId: c!.id, username: c!.id, password: rotated.body.token })).toMatch(/Not authorized|Bad User Name/i)
    expect(await retainedState(c!.id)).toBeUndefined()
    // A second removal finds nothing, on the hub or the broker.
    expect((await hub.api('DELETE', `/api/devices/${c!.id}`)).status).toBe(404)
    // A removed observer too.
    const obs = await hub.api<{ token: string; username: string }>('POST', '/api/observers', { name: 'leaving' })
    expect((await hub.api('DELETE', '/api/observers/leaving')).status).toBe(204)
    expect(await refused(broker.url, { username: obs.body.username, password: obs.body.token })).toMatch(/Not authorized|Bad User Name/i)
  }, 60_000)

  it('changes no account it did not make: a same-named account on the broker, or the hub\'s own', async () => {
    const admin = await mqtt.connectAsync(broker.url, { username: broker.adminUser, password: broker.adminPassword, reconnectPeriod: 0 })
    clients.push(admin)
    await admin.publishAsync('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [{ command: 'createClient', username: 'someone-else', password: 'theirs' }] }), { qos: 1 })
    await waitFor(async () => (await refused(broker.url, { username: 'someone-else', password: 'theirs' })) === 'connected', 'the other account to exist')
    for (const id of ['someone-else', broker.adminUser]) {
      const r = await hub.api<{ error: { code: string; message: string } }>('POST', '/api/devices', { id })
      expect({ id, status: r.status, code: r.body.error.code }).toEqual({ id, status: 503, code: 'UNAVAILABLE' })
      expect(r.body.error.message).toMatch(id === broker.adminUser ? /the hub's own account/ : /rollcall did not make/)
      expect(hub.running.services.registry.getDevice(id)).toBeUndefined()
    }
    // Both accounts still work as they did, the hub's included.
    expect(await refused(broker.url, { username: 'someone-else', password: 'theirs' })).toBe('connected')
    expect((await registerDevices(hub, 'after-refusal', 1)).length).toBe(1)
  }, 60_000)

  it('a device killed while its command runs: its Will, published by the broker, ends the command at once', async () => {
    const [d] = await registerDevices(hub, 'will', 1)
    const dataDir = join(tmp.dir, 'will-agent')
    mkdirSync(dataDir, { recursive: true })
    const agent = startAgentProc({
      mqttPort: broker.port, id: d!.id, token: d!.token, dataDir,
      config: { builtinSensors: false, sampleIntervalMs: 0, keepaliveSec: 30, handlersModule: fileURLToPath(new URL('./fixtures/slow-commands.mjs', import.meta.url)) },
    })
    try {
      await waitFor(() => hub.running.services.presence.isReachable(d!.id), 'agent online', 30_000)
      const pending = hub.api<{ error: { code: string } }>('POST', `/api/devices/${d!.id}/commands`, { name: 'slow.cmd', args: { ms: 120_000 }, timeout: '150s' })
      await waitFor(() => hub.running.services.commands.stats().pending === 1, 'command in flight')
      await new Promise((r) => setTimeout(r, 300))
      await killProc(agent, 'SIGKILL')
      const r = await pending
      expect(r.body.error.code).toBe('DEVICE_DISCONNECTED')
      expect(hub.running.services.presence.get(d!.id)).toMatchObject({ status: 'offline', reason: 'death', reachable: false })
    } finally {
      await killProc(agent)
    }
  }, 60_000)

  it('stores what agents sample exactly once through a hub restart; commands and jobs work through the broker', async () => {
    const devices = await registerDevices(hub, 'ext', 4, 'ext')
    const agentDir = join(tmp.dir, 'agents')
    const streaming = { sampleIntervalMs: 50, sensors: [{ name: 'temp', model: 'sine' as const, min: 10, max: 30, periodMs: 5000 }] }
    const agents: Agent[] = await startAgents(broker.url, agentDir, devices, streaming)
    try {
      await waitOnline(hub, devices.map((d) => d.id), 30_000)

      // The hub stops and starts again while the agents stream: its session on the broker keeps
      // what they publish meanwhile, the retained births tell it who is online, and every batch
      // no ack covered is sent again.
      await new Promise((r) => setTimeout(r, 1000))
      await hub.stop()
      await new Promise((r) => setTimeout(r, 1000))
      hub = await startTestHub(hubConfig(), hubDir)
      await waitOnline(hub, devices.map((d) => d.id), 30_000)
      const history = await hub.api<{ history: Array<{ status: string; reason: string }> }>('GET', `/api/devices/${devices[0]!.id}/presence?limit=100`)
      expect(history.body.history.map((h) => `${h.status}:${h.reason}`)).toContain('offline:hub-restart')

      // A command reaches a reachable device, and its reply comes back.
      const ok = await hub.api<{ status: string }>('POST', `/api/devices/${devices[0]!.id}/commands`, { name: 'sys.info', timeout: '10s' })
      expect(ok.body.status).toBe('succeeded')
      // A job is pulled and run by every device of the group.
      const job = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'group:ext', payload: { hello: 'broker' } })
      expect(job.status).toBe(201)
      const done = await waitJobDone(hub, job.body.id, 60_000)
      expect(done.executions.map((e) => e.state)).toEqual(devices.map(() => 'succeeded'))

      // A device that stopped is offline at once (its death), and a command to it fails fast.
      await agents[3]!.stop()
      await waitFor(() => !hub.running.services.presence.isReachable(devices[3]!.id), 'the stopped device to be offline', 20_000)
      const off = await hub.api<{ error: { code: string } }>('POST', `/api/devices/${devices[3]!.id}/commands`, { name: 'sys.info', timeout: '10s' })
      expect(off.body.error.code).toBe('DEVICE_OFFLINE')
      expect(hub.running.services.presence.get(devices[3]!.id)).toMatchObject({ status: 'offline', reason: 'death' })
    } finally {
      await Promise.allSettled(agents.map((a) => a.stop()))
    }

    await expectStoredOnce(hub.api, broker.url, agentDir, devices, {}, 20)
  }, 180_000)
})

describe.skipIf(SKIP_WITHOUT_DYNSEC)('a hub process on an external Mosquitto, killed', () => {
  const tmp = tempDir('external-kill')
  const procs: Proc[] = []
  let broker: DynsecBroker | undefined
  afterAll(async () => {
    for (const p of procs.splice(0)) await killProc(p)
    await broker?.stop()
    tmp.remove()
  }, 60_000)

  it('loses and duplicates nothing when the hub is SIGKILLed twice while agents stream', async () => {
    broker = await startDynsecBroker(tmp.dir)
    const hubDir = join(tmp.dir, 'hub')
    // The flags a user gives: the broker, the hub's account on it, its password in a file.
    const flags = ['--broker', broker.url, '--broker-username', broker.adminUser, '--broker-password-file', broker.adminPasswordFile]
    let hub: HubProc = await startHubProc(hubDir, { extra: flags })
    procs.push(hub)
    const devices: Array<{ id: string; token: string }> = []
    for (const id of ['kill-0', 'kill-1', 'kill-2']) {
      const r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
      expect(r.status).toBe(201)
      devices.push({ id, token: r.body.token })
    }
    const agentDir = join(tmp.dir, 'agents')
    const streaming = { sampleIntervalMs: 20, ackTimeoutMs: 1000, sensors: [{ name: 'temp', model: 'sine' as const, min: 10, max: 30, periodMs: 5000 }] }
    const agents: Agent[] = await startAgents(broker.url, agentDir, devices, streaming)
    try {
      for (let round = 0; round < 2; round++) {
        await new Promise((r) => setTimeout(r, 1500))
        await killProc(hub)
        await new Promise((r) => setTimeout(r, 500))
        hub = await startHubProc(hubDir, { extra: flags })
        procs.push(hub)
      }
      await new Promise((r) => setTimeout(r, 1000))
    } finally {
      await Promise.allSettled(agents.map((a) => a.stop()))
    }
    await expectStoredOnce(hub.api, broker.url, agentDir, devices, { ackTimeoutMs: 1000 }, 100)
    // The kills happened: each restart marked the devices offline, and their retained births brought them back.
    const h = await hub.api<{ history: Array<{ status: string; reason: string }> }>('GET', '/api/devices/kill-0/presence?limit=1000')
    expect(h.body.history.filter((e) => e.reason === 'hub-restart').length).toBeGreaterThanOrEqual(2)
  }, 180_000)
})

describe.skipIf(SKIP_WITHOUT_DYNSEC)('a hub whose external broker stalls or goes away', () => {
  const tmp = tempDir('external-outage')
  let broker: DynsecBroker | undefined
  let hub: TestHub | undefined
  afterAll(async () => {
    if (broker?.child.signalCode === null && broker.child.exitCode === null) broker.child.kill('SIGCONT')
    await hub?.stop()
    await broker?.stop()
    tmp.remove()
  }, 60_000)

  it('starts with an account that may only use the plugin, then answers UNAVAILABLE, registers nothing, keeps running, and still stops', async () => {
    broker = await startDynsecBroker(tmp.dir)
    // The hub's account as an operator might make it: rights on $CONTROL/dynamic-security/# and nothing else.
    const admin = await mqtt.connectAsync(broker.url, { username: broker.adminUser, password: broker.adminPassword, reconnectPeriod: 0 })
    await admin.publishAsync('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [
      { command: 'createRole', rolename: 'control-only', acls: ['publishClientSend', 'publishClientReceive', 'subscribePattern'].map((acltype) => ({ acltype, topic: '$CONTROL/dynamic-security/#', allow: true })) },
      { command: 'createClient', username: 'limited-hub', password: 'limited-password', roles: [{ rolename: 'control-only' }] },
    ] }), { qos: 1 })
    await admin.endAsync()
    await waitFor(async () => (await refused(broker!.url, { username: 'limited-hub', password: 'limited-password' })) === 'connected', 'the hub\'s account to exist')
    const passwordFile = join(tmp.dir, 'limited-password')
    writeFileSync(passwordFile, 'limited-password\n')
    hub = await startTestHub({ broker: broker.url, brokerUsername: 'limited-hub', brokerPasswordFile: passwordFile }, join(tmp.dir, 'hub'))
    const api = hub.api
    // It gave itself its role: it subscribes, and a device's telemetry is stored and acked.
    const [dev] = await registerDevices(hub, 'limited', 1)
    const c = await connectDevice(broker.url, dev!.id, dev!.token)
    try {
      const acked = new Promise<void>((resolve) => { c.on('message', () => resolve()) })
      await c.subscribeAsync(topics.telemetryAck(dev!.id), { qos: 1 })
      await c.publishAsync(topics.state(dev!.id), birth(1), { qos: 1, retain: true })
      await c.publishAsync(topics.telemetry(dev!.id), batch(1), { qos: 1 })
      await acked
    } finally {
      await c.endAsync()
    }
    // A broker that stops answering (SIGSTOP): the account call fails at its deadline, the hub lives on.
    broker.child.kill('SIGSTOP')
    const stalled = await api<{ error: { code: string; message: string } }>('POST', '/api/devices', { id: 'stalled-1' })
    expect({ status: stalled.status, code: stalled.body.error.code }).toEqual({ status: 503, code: 'UNAVAILABLE' })
    expect(stalled.body.error.message).toMatch(/did not answer createRole, createClient within \d+ ms/)
    expect(hub.running.services.registry.getDevice('stalled-1')).toBeUndefined()
    broker.child.kill('SIGCONT')
    expect((await api('POST', '/api/devices', { id: 'after-stall' })).status).toBe(201)
    // A broker that is gone: refused at once, with why.
    broker.child.kill('SIGKILL')
    expect((await api<{ ok: boolean; broker: { connected: boolean } }>('GET', '/healthz')).body).toMatchObject({ ok: true, broker: { url: broker.url, connected: true } })
    await waitFor(async () => (await api<{ broker: { external: { connected: boolean } } }>('GET', '/api/stats')).body.broker.external.connected === false, 'the hub to see the broker gone')
    // Not healthy while it is away from its broker: a probe or a load balancer sees 503.
    const health = await api<{ ok: boolean; broker: { connected: boolean } }>('GET', '/healthz')
    expect({ status: health.status, ok: health.body.ok, connected: health.body.broker.connected }).toEqual({ status: 503, ok: false, connected: false })
    const gone = await api<{ error: { code: string; message: string } }>('POST', '/api/devices', { id: 'gone-1' })
    expect({ status: gone.status, code: gone.body.error.code }).toEqual({ status: 503, code: 'UNAVAILABLE' })
    expect(gone.body.error.message).toMatch(/not connected to the broker/)
    expect(hub.running.services.registry.getDevice('gone-1')).toBeUndefined()
    // And it stops without the broker.
    const h = hub
    hub = undefined
    await h.stop()
  }, 90_000)
})
