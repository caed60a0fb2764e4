import { describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { connect as netConnect } from 'node:net'
import { createBroker } from '../broker/broker.js'
import type { Broker, ConnectionInfo, DisconnectReason } from '../broker/types.js'
import {
  brokerOptions, closed, connackCode, connectClient, connectPacket, deviceOptions, HOST, leakCheckedCleanups, rawConnect, startBroker, TOKENS, waitFor,
} from './broker.harness.js'

const cleanups = leakCheckedCleanups()

type Ev = { event: 'connected'; info: ConnectionInfo } | { event: 'disconnected'; info: ConnectionInfo; reason: DisconnectReason; detail: string | undefined }

function record(broker: Broker): Ev[] {
  const events: Ev[] = []
  broker.on('connected', (info: ConnectionInfo) => events.push({ event: 'connected', info }))
  broker.on('disconnected', (info: ConnectionInfo, reason: DisconnectReason, detail: string | undefined) =>
    events.push({ event: 'disconnected', info, reason, detail }))
  return events
}

describe('CONNECT', () => {
  it('accepts a device with its token and reports connected / disconnected with a connId', async () => {
    const { broker, url } = await startBroker(cleanups)
    const events = record(broker)
    const client = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await waitFor(() => events.length === 1, 'connected event')
    expect(events[0]).toMatchObject({ event: 'connected', info: { clientId: 'dev-a', principal: { kind: 'device', id: 'dev-a' }, remoteAddress: HOST } })
    expect(broker.isConnected('dev-a')).toBe(true)
    await client.endAsync()
    await waitFor(() => events.length === 2, 'disconnected event')
    expect(events[1]).toMatchObject({ event: 'disconnected', reason: 'client-disconnect' })
    expect(events[1]?.info.connId).toBe(events[0]?.info.connId)
    expect(broker.isConnected('dev-a')).toBe(false)
    expect(broker.stats()).toMatchObject({ connections: 0, connectsAccepted: 1 })
  })

  it.each([
    ['wrong token', { ...deviceOptions('dev-a'), password: 'nope' }, 4],
    ['unknown device', { clientId: 'dev-z', username: 'dev-z', password: 'x' }, 4],
    ['client id differs from username', { ...deviceOptions('dev-a'), clientId: 'dev-b' }, 2],
    ['anonymous while not allowed', { clientId: 'Anon-1' }, 5],
    ['keepalive 0', { ...deviceOptions('dev-a'), keepalive: 0 }, 5],
    ['keepalive above the maximum', { ...deviceOptions('dev-a'), keepalive: 601 }, 5],
    ['observer with a registered device\'s client id', { clientId: 'dev-a', username: 'observer:ops', password: TOKENS['observer:ops'] }, 2],
    ['Will on another device\'s state', { ...deviceOptions('dev-a'), will: { topic: 'devices/dev-b/state', payload: Buffer.from('x'), qos: 1, retain: true } }, 5],
  ] as const)('refuses %s', async (_name, options, code) => {
    const { broker, url } = await startBroker(cleanups)
    const events = record(broker)
    expect(await connackCode(url, { ...options })).toBe(code)
    expect(events).toEqual([])
    expect(broker.stats().connectsRefused).toBe(1)
  })

  it('refuses an empty client id without clean session with CONNACK 2 [MQTT-3.1.3-8]', async () => {
    // MQTT.js will not send this CONNECT, so it goes out as raw bytes.
    const { broker, port } = await startBroker(cleanups)
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: '', clean: false, username: 'observer:ops', password: TOKENS['observer:ops'] }))
    await raw.closed
    expect([...raw.received()]).toEqual([0x20, 0x02, 0x00, 0x02])
    expect(broker.stats().connectsRefused).toBe(1)
  })

  it('accepts an observer and an empty client id with clean session', async () => {
    const { url } = await startBroker(cleanups)
    expect(await connackCode(url, { clientId: 'Grafana:1', username: 'observer:ops', password: TOKENS['observer:ops'] })).toBe(0)
    expect(await connackCode(url, { clientId: '', clean: true, username: 'observer:ops', password: TOKENS['observer:ops'] })).toBe(0)
  })

  it('accepts anonymous clients when allowed, with any client id but a registered device\'s', async () => {
    const { url } = await startBroker(cleanups, { allowAnonymous: true })
    expect(await connackCode(url, { clientId: 'Anon-1' })).toBe(0)
    // Ordinary ids, as tools pick them (issue #15): shaped like a device id, or with / + #.
    expect(await connackCode(url, { clientId: 'myclientid' })).toBe(0)
    expect(await connackCode(url, { clientId: 'dev-z' })).toBe(0)
    expect(await connackCode(url, { clientId: 'a/b+c#' })).toBe(0)
    expect(await connackCode(url, { clientId: 'dev-a' })).toBe(2)
  })

  it('keeps a registered device\'s session its own: an observer using its id is refused, the device is not cut off', async () => {
    const { broker, url } = await startBroker(cleanups, { allowAnonymous: true })
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    expect(await connackCode(url, { clientId: 'dev-a', username: 'observer:ops', password: TOKENS['observer:ops'] })).toBe(2)
    expect(await connackCode(url, { clientId: 'dev-a' })).toBe(2)
    expect(dev.connected).toBe(true)
    expect(broker.isConnected('dev-a')).toBe(true)
  })

  it('answers a burst beyond the token bucket with CONNACK 3', async () => {
    const { broker, url } = await startBroker(cleanups, { connectRatePerSec: 1, connectBurst: 20 })
    const codes = await Promise.all(Array.from({ length: 200 }, () => connackCode(url, deviceOptions('dev-a'))))
    const accepted = codes.filter((c) => c === 0).length
    const unavailable = codes.filter((c) => c === 3).length
    expect(accepted + unavailable).toBe(200)
    // 20 from the burst, plus at most a few refilled while the burst ran.
    expect(accepted).toBeGreaterThanOrEqual(20)
    expect(accepted).toBeLessThan(60)
    expect(broker.stats().violations).toBe(0)
  })

  it('refuses sockets above maxConnections at accept when every slot is held by an authenticated client', async () => {
    const { broker, url, port } = await startBroker(cleanups, { maxConnections: 2 })
    await connectClient(cleanups, url, deviceOptions('dev-a'))
    await connectClient(cleanups, url, deviceOptions('dev-b'))
    await waitFor(() => broker.stats().connections === 2, 'two devices connected')
    const third = await rawConnect(cleanups, port)
    await third.closed
    expect(broker.stats()).toMatchObject({ connections: 2, sockets: 2, acceptsRefused: 1, limits: { maxConnections: 1 } })
  })

  it('closes the socket waiting longest for its CONNECT, not the newcomer, when every slot is taken and some are idle', async () => {
    const { broker, port } = await startBroker(cleanups, { maxConnections: 2, maxPendingConnections: 1, maxPendingPerAddress: 1 })
    // Of two idle sockets only one may wait; the second pushes the first out (pending slots full).
    const first = await rawConnect(cleanups, port)
    await waitFor(() => broker.stats().sockets === 1, 'one socket accepted')
    await rawConnect(cleanups, port, '127.0.0.2')
    await first.closed
    expect(broker.stats()).toMatchObject({ sockets: 1, pending: 1, acceptsRefused: 0, limits: { pendingEvicted: 1 } })
  })

  it('closes a socket that sends no CONNECT within connectTimeoutMs', async () => {
    const { broker, port } = await startBroker(cleanups, { connectTimeoutMs: 300 })
    const raw = await rawConnect(cleanups, port)
    await raw.closed
    await waitFor(() => broker.stats().sockets === 0, 'socket released')
  })
})

describe('disconnect reasons', () => {
  it('reports a takeover: the old connection ends before the new one is connected [MQTT-3.1.4-2]', async () => {
    const { broker, url } = await startBroker(cleanups)
    const events = record(broker)
    const first = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const firstClosed = closed(first)
    await connectClient(cleanups, url, deviceOptions('dev-a'))
    await firstClosed
    await waitFor(() => events.length === 3, 'three events')
    expect(events.map((e) => e.event === 'disconnected' ? `${e.event}:${e.reason}` : e.event))
      .toEqual(['connected', 'disconnected:taken-over', 'connected'])
    expect(events[2]?.info.connId).toBeGreaterThan(events[0]?.info.connId ?? Infinity)
    expect(broker.isConnected('dev-a')).toBe(true)
  })

  it('reports kicked with the hub\'s reason', async () => {
    const { broker, url } = await startBroker(cleanups)
    const events = record(broker)
    const client = await connectClient(cleanups, url, deviceOptions('dev-a'))
    broker.disconnect('dev-a', 'revoked')
    broker.disconnect('nobody', 'no-op')
    await closed(client)
    await waitFor(() => events.length === 2, 'disconnected event')
    expect(events[1]).toMatchObject({ event: 'disconnected', reason: 'kicked', detail: 'revoked' })
  })

  it('reports connection-lost for a socket closed without DISCONNECT', async () => {
    const { broker, port } = await startBroker(cleanups)
    const events = record(broker)
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: 'dev-a', username: 'dev-a', password: TOKENS['dev-a'] }))
    await waitFor(() => events.length === 1, 'connected event')
    raw.socket.destroy()
    await waitFor(() => events.length === 2, 'disconnected event')
    expect(events[1]).toMatchObject({ event: 'disconnected', reason: 'connection-lost' })
  })

  it('reports keepalive-timeout when the client goes silent', async () => {
    const { broker, port } = await startBroker(cleanups, { keepaliveMinSec: 1 })
    const events = record(broker)
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: 'dev-a', username: 'dev-a', password: TOKENS['dev-a'], keepalive: 1 }))
    // aedes allows 1.5 x keepalive [MQTT-3.1.2-24].
    await waitFor(() => events.length === 2, 'disconnected event', 10_000)
    expect(events[1]).toMatchObject({ event: 'disconnected', reason: 'keepalive-timeout' })
  })

  it('reports broker-closing for clients still connected at close, and close is idempotent', async () => {
    const { broker, url } = await startBroker(cleanups)
    const events = record(broker)
    const client = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await Promise.all([broker.close(), broker.close()])
    await closed(client)
    expect(events.at(-1)).toMatchObject({ event: 'disconnected', reason: 'broker-closing' })
    await expect(broker.publish('x', Buffer.from('y'), { qos: 0 })).rejects.toThrow(/closed/)
  })

  it('keeps running when an event listener throws', async () => {
    const { broker, url } = await startBroker(cleanups)
    broker.on('connected', () => {
      throw new Error('listener bug')
    })
    await connectClient(cleanups, url, deviceOptions('dev-a'))
    expect(await connackCode(url, deviceOptions('dev-b'))).toBe(0)
  })
})

describe('lifecycle', () => {
  it('fails fast on invalid options', () => {
    expect(() => createBroker(brokerOptions({ keepaliveMinSec: 60, keepaliveMaxSec: 30 }))).toThrow(/keepaliveMinSec/)
    expect(() => createBroker(brokerOptions({ port: 70_000 }))).toThrow(/port/)
    expect(() => createBroker(brokerOptions({ drainTimeoutMs: 0 }))).toThrow(/drainTimeoutMs/)
  })

  it('rejects listen() on a port in use and still closes cleanly', async () => {
    const { port } = await startBroker(cleanups)
    const second = createBroker(brokerOptions({ port }))
    cleanups.add(() => second.close())
    await expect(second.listen()).rejects.toThrow(/EADDRINUSE/)
    await second.close()
  })

  it('returns the same port from repeated listen() calls', async () => {
    const { broker, port } = await startBroker(cleanups)
    expect(await broker.listen()).toEqual({ port })
    expect(broker.port).toBe(port)
  })
})

describe('raw protocol edge', () => {
  it('survives garbage bytes from one client', async () => {
    const { url, port } = await startBroker(cleanups)
    const sock = netConnect({ host: HOST, port })
    cleanups.add(() => {
      sock.destroy()
    })
    sock.on('error', () => undefined)
    const gone = new Promise((resolve) => sock.once('close', resolve))
    sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))
    await gone
    const client = await mqtt.connectAsync(url, { ...deviceOptions('dev-a'), reconnectPeriod: 0 })
    cleanups.add(() => client.endAsync(true))
    expect(client.connected).toBe(true)
  })
})
