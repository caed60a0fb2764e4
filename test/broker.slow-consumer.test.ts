import { describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import type { Broker, DisconnectReason } from '../broker/types.js'
import {
  connectClient, connectPacket, deviceOptions, leakCheckedCleanups, rawConnect, startBroker, subscribePacket, TOKENS, type RawClient, waitFor,
} from './broker.harness.js'

/**
 * A subscriber that stops reading must not hold up publishers. aedes delivers
 * a publish to every subscriber before it reads the publisher's next packet,
 * so one blocked socket would stall the fleet's ingest; the broker drops
 * messages for a backed-up observer and cuts it off after drainTimeoutMs.
 */

const cleanups = leakCheckedCleanups()

const PAYLOAD = Buffer.alloc(32 * 1024, 7)

/** An observer on a raw socket that subscribes to all telemetry and then stops reading. */
async function stalledObserver(port: number): Promise<RawClient> {
  const raw = await rawConnect(cleanups, port)
  raw.socket.write(connectPacket({ clientId: 'Slow:1', username: 'observer:ops', password: TOKENS['observer:ops'], keepalive: 300 }))
  raw.socket.write(subscribePacket(1, 'devices/+/telemetry', 1))
  // CONNACK (4 bytes) then SUBACK granting QoS 1 (5 bytes).
  await waitFor(() => raw.received().length >= 9, 'CONNACK and SUBACK')
  expect([...raw.received().subarray(4, 9)]).toEqual([0x90, 0x03, 0x00, 0x01, 0x01])
  raw.socket.pause()
  return raw
}

/** Publishes `count` messages alternating QoS 0 and 1, at most 100 unacknowledged at a time. */
async function flood(client: MqttClient, count: number, until: () => boolean = () => false): Promise<number> {
  let sent = 0
  while (sent < count && !until()) {
    const batch: Array<Promise<unknown>> = []
    for (let i = 0; i < 100 && sent < count; i++, sent++) {
      batch.push(client.publishAsync('devices/dev-a/telemetry', PAYLOAD, { qos: sent % 2 === 0 ? 0 : 1 }))
    }
    await Promise.all(batch)
  }
  return sent
}

function reasonsOf(broker: Broker): Array<{ clientId: string; reason: DisconnectReason }> {
  const got: Array<{ clientId: string; reason: DisconnectReason }> = []
  broker.on('disconnected', (info, reason) => got.push({ clientId: info.clientId, reason }))
  return got
}

/**
 * The scene both observer tests start from: a broker with `drainTimeoutMs`,
 * the hub's subscriber counting what reaches it, a stalled observer, and the
 * publishing device dev-a.
 */
async function backedUpObserver(drainTimeoutMs: number) {
  const { broker, url, port } = await startBroker(cleanups, { drainTimeoutMs })
  const hub = { delivered: 0 }
  await broker.subscribe('devices/+/telemetry', () => {
    hub.delivered++
  })
  const ends = reasonsOf(broker)
  await stalledObserver(port)
  const dev = await connectClient(cleanups, url, deviceOptions('dev-a'))
  return { broker, hub, ends, dev }
}

describe('slow consumers', () => {
  it('do not hold up publishers or the hub while they are backed up', async () => {
    // A drain timeout far beyond the flood: the publisher must get through without anyone being cut.
    const { broker, hub, ends, dev } = await backedUpObserver(45_000)

    const started = Date.now()
    const total = 2000 // 64 MiB: well past the kernel's socket buffers plus the 1 MiB lossy allowance
    await flood(dev, total)
    const elapsedMs = Date.now() - started

    await waitFor(() => hub.delivered === total, 'every message at the hub')
    expect(broker.stats().forwardsDropped).toBeGreaterThan(0)
    expect(broker.isConnected('Slow:1')).toBe(true)
    expect(ends).toEqual([])
    // Generous: a blocked delivery would have stalled the publisher for the whole 45 s drain timeout.
    expect(elapsedMs).toBeLessThan(30_000)
  })

  it('are cut off after drainTimeoutMs, and publishing carries on', async () => {
    const { broker, hub, ends, dev } = await backedUpObserver(1_000)

    const sent = await flood(dev, 4000, () => broker.stats().forwardsDropped > 0)
    expect(broker.stats().forwardsDropped).toBeGreaterThan(0)
    await waitFor(() => ends.length === 1, 'slow consumer cut off', 15_000)
    expect(ends[0]).toEqual({ clientId: 'Slow:1', reason: 'slow-consumer' })
    expect(broker.stats().slowConsumersCut).toBe(1)

    await flood(dev, 100)
    await waitFor(() => hub.delivered === sent + 100, 'every message at the hub')
    expect(dev.connected).toBe(true)
  })

  it('cut off a device that stops reading its commands; the hub\'s publish is released', async () => {
    const { broker, port } = await startBroker(cleanups, { drainTimeoutMs: 1_000 })
    const ends = reasonsOf(broker)
    const raw = await rawConnect(cleanups, port)
    raw.socket.write(connectPacket({ clientId: 'dev-a', username: 'dev-a', password: TOKENS['dev-a'], keepalive: 300 }))
    raw.socket.write(subscribePacket(1, 'devices/dev-a/cmd/req', 1))
    await waitFor(() => raw.received().length >= 9, 'CONNACK and SUBACK')
    raw.socket.pause()

    // Devices are waited for, not dropped: each publish resolves once written, or once the device is gone.
    const deadline = Date.now() + 20_000
    while (ends.length === 0 && Date.now() < deadline) {
      await broker.publish('devices/dev-a/cmd/req', PAYLOAD, { qos: 1 })
    }
    await waitFor(() => ends.length === 1, 'device cut off')
    expect(ends[0]).toEqual({ clientId: 'dev-a', reason: 'slow-consumer' })
    expect(broker.stats().forwardsDropped).toBe(0)
  })
})
