import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import type { Broker, ConnectionInfo, DisconnectReason, InboundMessage } from '../broker/types.js'
import {
  closed, connectClient, connectPacket, deviceOptions, leakCheckedCleanups, rawConnect, remainingLength, startBroker, TOKENS, waitFor,
} from './broker.harness.js'

const cleanups = leakCheckedCleanups()

const MAX = 64 * 1024

/** A PUBLISH header announcing `announced` bytes, followed by only a few of them. */
function oversizedPublishStart(announced: number): Buffer {
  return Buffer.concat([Buffer.from([0x30]), remainingLength(announced), Buffer.from([0x00, 0x03]), Buffer.from('a/b')])
}

function violationsOf(broker: Broker) {
  const got: Array<{ info: Partial<ConnectionInfo>; code: string }> = []
  broker.on('violation', (info, code) => got.push({ info, code }))
  return got
}

describe('packet size guard', () => {
  it('closes a connection as soon as a header announces too much, without waiting for the body', async () => {
    const { broker, port } = await startBroker(cleanups, { maxPayloadBytes: MAX })
    const violations = violationsOf(broker)
    const ends: Array<[DisconnectReason, string | undefined]> = []
    broker.on('disconnected', (_i, reason, detail) => ends.push([reason, detail]))
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: 'dev-a', username: 'dev-a', password: TOKENS['dev-a'] }))
    await waitFor(() => broker.isConnected('dev-a'), 'device connected')
    // 200 MiB announced, 7 bytes sent: only the header can have triggered the close.
    raw.socket.write(oversizedPublishStart(200 * 1024 * 1024))
    await raw.closed
    await waitFor(() => ends.length === 1, 'disconnected event')
    expect(ends[0]?.[0]).toBe('kicked')
    expect(ends[0]?.[1]).toMatch(/^PAYLOAD_TOO_LARGE/)
    expect(violations).toEqual([{ info: expect.objectContaining({ clientId: 'dev-a', remoteAddress: '127.0.0.1' }) as unknown, code: 'PAYLOAD_TOO_LARGE' }])
  })

  it('guards the CONNECT too, before anyone is authenticated', async () => {
    const { broker, port } = await startBroker(cleanups, { maxPayloadBytes: MAX })
    const violations = violationsOf(broker)
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(Buffer.concat([Buffer.from([0x10]), remainingLength(50 * 1024 * 1024), Buffer.from([0x00, 0x04])]))
    await raw.closed
    await waitFor(() => violations.length === 1, 'violation')
    expect(violations[0]).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', info: { remoteAddress: '127.0.0.1' } })
    await waitFor(() => broker.stats().sockets === 0, 'socket released')
  })

  it('accepts exactly maxPayloadBytes, refuses one byte more, and other clients carry on', async () => {
    const { broker, url } = await startBroker(cleanups, { maxPayloadBytes: MAX })
    const got: InboundMessage[] = []
    await broker.subscribe('devices/+/telemetry', (m) => {
      got.push(m)
    })
    const violations = violationsOf(broker)
    const a = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const b = await connectClient(cleanups, url, deviceOptions('dev-b'))

    await a.publishAsync('devices/dev-a/telemetry', Buffer.alloc(MAX, 1), { qos: 1 })
    // One byte over passes the header guard (it allows room for the topic) and is caught exactly at authorizePublish.
    const aGone = closed(a)
    a.publish('devices/dev-a/telemetry', Buffer.alloc(MAX + 1, 2), { qos: 1 })
    await aGone

    const a2 = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const a2Gone = closed(a2)
    a2.publish('devices/dev-a/telemetry', Buffer.alloc(MAX * 8, 3), { qos: 1 })
    await a2Gone

    await b.publishAsync('devices/dev-b/telemetry', 'still fine', { qos: 1 })
    await waitFor(() => got.length === 2, 'two deliveries')
    expect(got.map((m) => [m.clientId, m.payload.length])).toEqual([['dev-a', MAX], ['dev-b', 10]])
    expect(violations.map((v) => v.code)).toEqual(['PAYLOAD_TOO_LARGE', 'PAYLOAD_TOO_LARGE'])
    expect(b.connected).toBe(true)
  })

  it('passes large valid traffic through intact', async () => {
    const { broker, url } = await startBroker(cleanups, { maxPayloadBytes: MAX })
    const digests: string[] = []
    await broker.subscribe('devices/+/telemetry', (m) => {
      digests.push(createHash('sha256').update(m.payload).digest('hex'))
    })
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const sent: string[] = []
    const pending: Array<Promise<unknown>> = []
    for (let i = 0; i < 200; i++) {
      const payload = Buffer.alloc(1 + ((i * 7919) % MAX), i % 251)
      sent.push(createHash('sha256').update(payload).digest('hex'))
      pending.push(dev.publishAsync('devices/dev-a/telemetry', payload, { qos: i % 2 === 0 ? 0 : 1 }))
    }
    await Promise.all(pending)
    await waitFor(() => digests.length === 200, 'all 200 delivered')
    expect([...digests].sort()).toEqual([...sent].sort())
    // aedes runs the packets of one read concurrently, so only each QoS level keeps its order (§4.6).
    for (const parity of [0, 1]) {
      const level = sent.filter((_d, i) => i % 2 === parity)
      expect(digests.filter((d) => level.includes(d))).toEqual(level)
    }
  })
})

/** A QoS 1 PUBLISH (packet id 7) with raw topic bytes, as a client that skips UTF-8 checks would send it. */
function rawPublishQos1(topic: Buffer, payload: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, Buffer.from([0x00, 0x07]), payload])
  return Buffer.concat([Buffer.from([0x32]), remainingLength(body.length), body])
}

/** [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-4.7.3-2]: ill-formed UTF-8 or U+0000 in a topic closes the connection, with no PUBACK. */
describe('PUBLISH topic UTF-8 guard', () => {
  it.each([
    ['an invalid byte', Buffer.concat([Buffer.from('devices/dev-a/telemetry'), Buffer.from([0xff])])],
    ['an encoded surrogate', Buffer.concat([Buffer.from('devices/dev-a/'), Buffer.from([0xed, 0xa0, 0x80])])],
    ['U+0000', Buffer.concat([Buffer.from('devices/dev-a/telemetry'), Buffer.from([0x00])])],
  ])('closes on %s, sends no PUBACK, and others carry on', async (_what, topic) => {
    const { broker, port, url } = await startBroker(cleanups, { maxPayloadBytes: MAX })
    const violations = violationsOf(broker)
    const b = await connectClient(cleanups, url, deviceOptions('dev-b'))
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: 'dev-a', username: 'dev-a', password: TOKENS['dev-a'] }))
    await waitFor(() => raw.received().length >= 4, 'CONNACK')
    const before = raw.received().length
    // Split inside the topic: the check must hold across chunks.
    const bytes = rawPublishQos1(topic, Buffer.from('{}'))
    raw.socket.write(bytes.subarray(0, 10))
    await new Promise((r) => setTimeout(r, 20))
    raw.socket.write(bytes.subarray(10))
    await raw.closed
    // Only the CONNACK (4 bytes) came back: no PUBACK (0x40).
    expect(raw.received().subarray(before)).toEqual(Buffer.alloc(0))
    await waitFor(() => violations.length === 1, 'violation')
    expect(violations[0]).toMatchObject({ code: 'INVALID_UTF8', info: { clientId: 'dev-a' } })
    await b.publishAsync('devices/dev-b/telemetry', 'still fine', { qos: 1 })
    expect(b.connected).toBe(true)
  })

  it('accepts a topic holding a real U+FFFD (a PUBACK comes back)', async () => {
    const { port } = await startBroker(cleanups, { maxPayloadBytes: MAX })
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: 'dev-a', username: 'dev-a', password: TOKENS['dev-a'] }))
    await waitFor(() => raw.received().length >= 4, 'CONNACK')
    raw.socket.write(rawPublishQos1(Buffer.from('devices/dev-a/\ufffd'), Buffer.from('{}')))
    await waitFor(() => raw.received().length >= 8, 'PUBACK')
    expect([...raw.received().subarray(4, 8)]).toEqual([0x40, 0x02, 0x00, 0x07])
  })
})
