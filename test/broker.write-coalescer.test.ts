import { describe, expect, it } from 'vitest'
import mqtt, { type MqttClient } from 'mqtt'
import type { Broker } from '../broker/types.js'
import { connackCode, deviceOptions, leakCheckedCleanups, sleep, startBroker, waitFor } from './broker.harness.js'

/**
 * Coalesced writes (broker/write-coalescer.ts): a connection's writes wait for
 * flushWrites() or writeCoalesceMs, then leave together; nothing is lost,
 * including what aedes writes just before it closes a connection.
 */
const cleanups = leakCheckedCleanups()

/**
 * Connects devices while the broker's held writes are released every 20 ms
 * (their CONNACKs and SUBACKs are held like any write), runs `then` with
 * them, and stops releasing: from then on only the test releases anything.
 */
async function connectAll(broker: Pick<Broker, 'flushWrites'>, url: string, ids: readonly string[], then?: (clients: MqttClient[]) => Promise<unknown>): Promise<MqttClient[]> {
  const releasing = setInterval(() => broker.flushWrites(), 20)
  try {
    const clients: MqttClient[] = []
    for (const id of ids) {
      const c = mqtt.connect(url, { ...deviceOptions(id), reconnectPeriod: 0, keepalive: 30 })
      cleanups.add(() => c.endAsync(true))
      await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject) })
      clients.push(c)
    }
    await then?.(clients)
    return clients
  } finally {
    clearInterval(releasing)
  }
}

describe('coalesced writes', () => {
  it('hold a PUBACK until flushWrites(), then deliver it', async () => {
    // Long enough that only flushWrites() can release anything during the test.
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const client = (await connectAll(broker, url, ['dev-a']))[0]!
    let acked = false
    client.publish('devices/dev-a/telemetry', '{}', { qos: 1 }, () => { acked = true })
    await sleep(300)
    expect(acked).toBe(false)
    broker.flushWrites()
    await waitFor(() => acked, 'PUBACK after flushWrites()')
  })

  it('send what the broker publishes to a device at once, with what that connection held, and nothing of another\'s', async () => {
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const [a, b] = await connectAll(broker, url, ['dev-a', 'dev-b'], ([c]) => c!.subscribeAsync('devices/dev-a/cmd/req', { qos: 1 })) as [MqttClient, MqttClient]
    const acked = new Set<string>()
    const received: string[] = []
    a.on('message', (topic) => received.push(topic))
    a.publish('devices/dev-a/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-a') })
    b.publish('devices/dev-b/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-b') })
    await sleep(300)
    expect([...acked]).toEqual([])
    // A command, say: published by the hub after the commit that recorded it.
    await broker.publish('devices/dev-a/cmd/req', Buffer.from('{}'), { qos: 1 })
    await waitFor(() => received.length > 0 && acked.has('dev-a'), 'the command and dev-a\'s held PUBACK without a flush')
    await sleep(300)
    expect(acked.has('dev-b')).toBe(false)
    broker.flushWrites()
    await waitFor(() => acked.has('dev-b'), 'dev-b\'s PUBACK after flushWrites()')
  })

  it('sealWrites() closes the set held now: its release sends those PUBACKs and not ones held after the seal', async () => {
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const [a, b] = await connectAll(broker, url, ['dev-a', 'dev-b']) as [MqttClient, MqttClient]
    broker.flushWrites()
    const acked = new Set<string>()
    a.publish('devices/dev-a/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-a') })
    await sleep(300)
    // A commit is written with dev-a's message in it; dev-b's arrives while its fsync runs.
    const release = broker.sealWrites()
    b.publish('devices/dev-b/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-b') })
    await sleep(300)
    expect([...acked]).toEqual([])
    release()
    await waitFor(() => acked.has('dev-a'), 'dev-a\'s PUBACK on its commit\'s release')
    await sleep(300)
    expect(acked.has('dev-b')).toBe(false)
    // Released once: calling it again sends nothing of the next set.
    release()
    await sleep(100)
    expect(acked.has('dev-b')).toBe(false)
    broker.sealWrites()()
    await waitFor(() => acked.has('dev-b'), 'dev-b\'s PUBACK on the next commit\'s release')
  })

  it('release held writes after writeCoalesceMs without a flush', async () => {
    const { url } = await startBroker(cleanups, { writeCoalesceMs: 50 })
    expect(await connackCode(url, deviceOptions('dev-a'))).toBe(0)
  })

  it('still send a refusing CONNACK that aedes writes just before it closes the connection', async () => {
    const { url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    expect(await connackCode(url, { ...deviceOptions('dev-a'), password: 'wrong' })).toBe(4)
  })

  it('refuse a negative writeCoalesceMs with a message naming it', async () => {
    await expect(startBroker(cleanups, { writeCoalesceMs: -1 })).rejects.toThrow(/writeCoalesceMs must be a number >= 0/)
  })
})
