import { describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import type { Broker, DisconnectReason, InboundMessage } from '../broker/types.js'
import {
  closed, connectClient, deviceOptions, leakCheckedCleanups, sleep, startBroker, subackCodes, TOKENS, waitFor,
} from './broker.harness.js'

const cleanups = leakCheckedCleanups()

async function collect(broker: Broker, filter: string): Promise<InboundMessage[]> {
  const got: InboundMessage[] = []
  await broker.subscribe(filter, (m) => {
    got.push(m)
  })
  return got
}

function received(client: MqttClient): Array<{ topic: string; payload: string; retain: boolean }> {
  const got: Array<{ topic: string; payload: string; retain: boolean }> = []
  client.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), retain: packet.retain }))
  return got
}

function violations(broker: Broker): string[] {
  const codes: string[] = []
  broker.on('violation', (_info, code) => codes.push(code))
  return codes
}

function reasons(broker: Broker): Array<[DisconnectReason, string | undefined]> {
  const got: Array<[DisconnectReason, string | undefined]> = []
  broker.on('disconnected', (_info, reason, detail) => got.push([reason, detail]))
  return got
}

const observerOptions = { clientId: 'Ops:1', username: 'observer:ops', password: TOKENS['observer:ops'] }

describe('device publishes', () => {
  it('delivers its own telemetry to the hub with the publisher\'s client id', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got = await collect(broker, 'devices/+/telemetry')
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await dev.publishAsync('devices/dev-a/telemetry', '{"n":1}', { qos: 1 })
    await waitFor(() => got.length === 1, 'telemetry delivered')
    expect(got[0]).toEqual({ topic: 'devices/dev-a/telemetry', payload: Buffer.from('{"n":1}'), clientId: 'dev-a' })
  })

  it('closes the connection of a device publishing on another device\'s topic; nothing is delivered', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got = await collect(broker, 'devices/#')
    const codes = violations(broker)
    const ends = reasons(broker)
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const gone = closed(dev)
    dev.publish('devices/dev-b/telemetry', 'spoof', { qos: 1 })
    await gone
    await waitFor(() => ends.length === 1, 'disconnected event')
    expect(ends[0]?.[0]).toBe('kicked')
    expect(ends[0]?.[1]).toMatch(/^PUBLISH_DENIED/)
    expect(codes).toEqual(['PUBLISH_DENIED'])
    await sleep(100)
    expect(got).toEqual([])
  })

  it('refuses retain on telemetry: connection closed, nothing delivered or retained', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got = await collect(broker, 'devices/#')
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const gone = closed(dev)
    dev.publish('devices/dev-a/telemetry', 'x', { qos: 1, retain: true })
    await gone
    const obs = await connectClient(cleanups, url, observerOptions)
    const seen = received(obs)
    await obs.subscribeAsync('devices/+/telemetry', { qos: 1 })
    await sleep(200)
    expect(got).toEqual([])
    expect(seen).toEqual([])
  })

  it('retains its state and replays it to an observer that subscribes later', async () => {
    const { url } = await startBroker(cleanups)
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await dev.publishAsync('devices/dev-a/state', 'birth', { qos: 1, retain: true })
    const obs = await connectClient(cleanups, url, observerOptions)
    const seen = received(obs)
    await obs.subscribeAsync('devices/+/state', { qos: 1 })
    await waitFor(() => seen.length === 1, 'retained state')
    expect(seen[0]).toEqual({ topic: 'devices/dev-a/state', payload: 'birth', retain: true })
  })

  it('lets an unknown topic under its own prefix through for the hub to dead-letter', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got = await collect(broker, 'devices/#')
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await dev.publishAsync('devices/dev-a/firmware/log', 'x', { qos: 1 })
    await waitFor(() => got.length === 1, 'dead-letter candidate delivered')
    expect(got[0]?.topic).toBe('devices/dev-a/firmware/log')
    expect(dev.connected).toBe(true)
  })

  it('publishes its Will on its state topic when the connection is lost', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got = await collect(broker, 'devices/+/state')
    const dev = await connectClient(cleanups, url, {
      ...deviceOptions('dev-a'), will: { topic: 'devices/dev-a/state', payload: Buffer.from('death'), qos: 1, retain: true },
    })
    dev.stream.destroy()
    await waitFor(() => got.length === 1, 'Will delivered')
    expect(got[0]).toEqual({ topic: 'devices/dev-a/state', payload: Buffer.from('death'), clientId: 'dev-a' })
  })
})

describe('device subscribes', () => {
  it('gets its own commands, and SUBACK 0x80 (staying connected) for another device\'s or $SYS', async () => {
    const { broker, url } = await startBroker(cleanups)
    const codes = violations(broker)
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const seen = received(dev)
    const codes128 = await subackCodes(dev, { 'devices/dev-a/cmd/req': { qos: 1 }, 'devices/dev-b/cmd/req': { qos: 1 }, '$SYS/#': { qos: 0 }, 'devices/dev-a/#': { qos: 1 } })
    expect(codes128).toEqual([1, 128, 128, 128])
    expect(codes).toEqual(['SUBSCRIBE_DENIED', 'SUBSCRIBE_DENIED', 'SUBSCRIBE_DENIED'])
    await broker.publish('devices/dev-b/cmd/req', Buffer.from('not yours'), { qos: 1 })
    await broker.publish('devices/dev-a/cmd/req', Buffer.from('yours'), { qos: 1 })
    await waitFor(() => seen.length === 1, 'command delivered')
    expect(seen[0]).toMatchObject({ topic: 'devices/dev-a/cmd/req', payload: 'yours' })
    await dev.publishAsync('devices/dev-a/telemetry', 'still here', { qos: 1 })
    expect(dev.connected).toBe(true)
  })
})

describe('observers', () => {
  it('read the fleet\'s up-streams, nothing else, and may not publish', async () => {
    const { broker, url } = await startBroker(cleanups)
    const ends = reasons(broker)
    const obs = await connectClient(cleanups, url, observerOptions)
    const seen = received(obs)
    expect(await subackCodes(obs, { 'devices/+/telemetry': { qos: 1 }, 'devices/+/cmd/req': { qos: 1 }, '#': { qos: 0 } }))
      .toEqual([1, 128, 128])
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await dev.publishAsync('devices/dev-a/telemetry', 't', { qos: 1 })
    await broker.publish('devices/dev-a/cmd/req', Buffer.from('c'), { qos: 1 })
    await waitFor(() => seen.length === 1, 'telemetry delivered to the observer')
    await sleep(100)
    expect(seen.map((m) => m.topic)).toEqual(['devices/dev-a/telemetry'])
    const gone = closed(obs)
    obs.publish('devices/dev-a/telemetry', 'forged', { qos: 1 })
    await gone
    await waitFor(() => ends.length === 1, 'observer disconnected')
    expect(ends[0]?.[0]).toBe('kicked')
  })
})

describe('anonymous clients', () => {
  it('are confined to topics outside devices/, hub/ and $', async () => {
    const { broker, url } = await startBroker(cleanups, { allowAnonymous: true })
    const hubGot = await collect(broker, 'devices/#')
    const anon = await connectClient(cleanups, url, { clientId: 'Anon:1' })
    const seen = received(anon)
    expect(await subackCodes(anon, { 'chat/#': { qos: 1 }, '#': { qos: 0 }, '+/dev-a/telemetry': { qos: 0 }, 'devices/#': { qos: 0 }, 'hub/#': { qos: 0 } }))
      .toEqual([1, 128, 128, 128, 128])
    await anon.publishAsync('chat/room', 'hello', { qos: 1 })
    await waitFor(() => seen.length === 1, 'own chat message')
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    await dev.publishAsync('devices/dev-a/telemetry', 't', { qos: 1 })
    await waitFor(() => hubGot.length === 1, 'device telemetry at the hub')
    await sleep(100)
    expect(seen.map((m) => m.topic)).toEqual(['chat/room'])
    const gone = closed(anon)
    anon.publish('devices/dev-a/telemetry', 'forged', { qos: 1 })
    await gone
    await sleep(100)
    expect(hubGot).toHaveLength(1)
  })
})

describe('in-process subscriptions', () => {
  it('hold back deliveries while a handler\'s promise is pending', async () => {
    const { broker, url } = await startBroker(cleanups)
    const order: string[] = []
    let release: () => void = () => undefined
    await broker.subscribe('devices/+/events', (m) => {
      order.push(`start ${m.payload.toString()}`)
      if (m.payload.toString() !== '1') return
      return new Promise<void>((resolve) => {
        release = () => {
          order.push('end 1')
          resolve()
        }
      })
    })
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    dev.publish('devices/dev-a/events', '1', { qos: 0 })
    dev.publish('devices/dev-a/events', '2', { qos: 0 })
    await waitFor(() => order.length === 1, 'first delivery')
    await sleep(150)
    expect(order).toEqual(['start 1'])
    release()
    await waitFor(() => order.length === 3, 'second delivery')
    expect(order).toEqual(['start 1', 'end 1', 'start 2'])
  })

  it('survive a handler that throws or rejects', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got: string[] = []
    await broker.subscribe('devices/+/events', (m) => {
      got.push(m.payload.toString())
      if (got.length === 1) throw new Error('handler bug')
      if (got.length === 2) return Promise.reject(new Error('async handler bug'))
    })
    const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
    for (const n of ['1', '2', '3']) await dev.publishAsync('devices/dev-a/events', n, { qos: 1 })
    await waitFor(() => got.length === 3, 'three deliveries')
    expect(got).toEqual(['1', '2', '3'])
  })

  it('do not see $ topics through a leading wildcard [MQTT-4.7.2-1]', async () => {
    const { broker, url } = await startBroker(cleanups)
    const got = await collect(broker, '#')
    await connectClient(cleanups, url, deviceOptions('dev-a'))
    await broker.publish('devices/dev-a/cmd/req', Buffer.from('x'), { qos: 0 })
    await waitFor(() => got.length >= 1, 'a delivery')
    await sleep(100)
    expect(got.every((m) => !m.topic.startsWith('$'))).toBe(true)
  })
})

describe('bursts', () => {
  it('drains a backlog of 20,000 messages to a synchronous handler without growing the stack (a fleet stopping at once)', async () => {
    const { broker } = await startBroker(cleanups)
    // A slow subscriber holds aedes's in-flight deliveries (mqemitter concurrency), so the burst queues up behind it...
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    await broker.subscribe('hold/#', () => gate)
    let n = 0
    await broker.subscribe('devices/+/state', () => { n++ })
    const sends: Array<Promise<void>> = []
    for (let i = 0; i < 200; i++) sends.push(broker.publish(`hold/${i}`, Buffer.from('x'), { qos: 0 }))
    for (let i = 0; i < 20_000; i++) sends.push(broker.publish(`devices/dev-${i % 100}/state`, Buffer.from('{}'), { qos: 0 }))
    // ...and is handed to the fast handler one message after another when the slow one lets go.
    release()
    await Promise.all(sends)
    await waitFor(() => n === 20_000, 'every message handled', 20_000)
    expect(n).toBe(20_000)
  })
})

describe('direct sends (a device\'s own down-topics)', () => {
  it('reach only the connection that subscribed to exactly that topic, at QoS 0, without routing', async () => {
    const { broker, url } = await startBroker(cleanups)
    const routed = await collect(broker, 'devices/#')
    const a = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const b = await connectClient(cleanups, url, deviceOptions('dev-b'))
    const gotA: Array<{ topic: string; payload: string; qos: number }> = []
    const gotB: string[] = []
    a.on('message', (topic, payload, packet) => gotA.push({ topic, payload: payload.toString(), qos: packet.qos }))
    b.on('message', (topic) => gotB.push(topic))
    const ack = 'devices/dev-a/telemetry/ack'
    // Not subscribed yet: nothing is written.
    expect(broker.sendDirect('dev-a', ack, Buffer.from('early'))).toBe(false)
    await a.subscribeAsync(ack, { qos: 1 })
    await b.subscribeAsync('devices/dev-b/telemetry/ack', { qos: 1 })
    expect(broker.sendDirect('dev-a', ack, Buffer.from('{"upTo":1}'))).toBe(true)
    // Another device's topic on this connection, and a client that is not connected: nothing written.
    expect(broker.sendDirect('dev-a', 'devices/dev-b/telemetry/ack', Buffer.from('x'))).toBe(false)
    expect(broker.sendDirect('dev-c', 'devices/dev-c/telemetry/ack', Buffer.from('x'))).toBe(false)
    await waitFor(() => gotA.length === 1, 'direct send received')
    await sleep(100)
    expect(gotA).toEqual([{ topic: ack, payload: '{"upTo":1}', qos: 0 }])
    expect(gotB).toEqual([])
    // It never went through routing: the in-process subscriber to devices/# did not see it.
    expect(routed).toEqual([])
    // An unsubscribed topic is not written to any more.
    await a.unsubscribeAsync(ack)
    expect(broker.sendDirect('dev-a', ack, Buffer.from('late'))).toBe(false)
  })
})
