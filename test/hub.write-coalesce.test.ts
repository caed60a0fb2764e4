import { afterEach, describe, expect, it } from 'vitest'
import { connect, type Socket } from 'node:net'
import mqttPacket from 'mqtt-packet'
import { encode, topics } from '../protocol/index.js'
import { writeCoalesceMsFor } from '../hub/hub.js'
import { startTestHub, waitFor } from './support/hub.js'

/**
 * A device's PUBACK and the hub's telemetry ack for the same PUBLISH leave in
 * one socket write (hub.ts, writeCoalesceMsFor): the hub's commit, not the
 * coalescer's own timer, releases the connection. Seen from the device as one
 * read holding both packets. With the coalescer's delay equal to the commit
 * delay (as before), about half the messages arrived as two reads.
 */
const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000002'

describe('hub socket writes per telemetry message', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('holds writes for longer than a commit takes to come, and not at all when commits are not delayed', () => {
    for (const flushDelayMs of [1, 5, 20]) expect(writeCoalesceMsFor(flushDelayMs)).toBeGreaterThan(flushDelayMs)
    expect(writeCoalesceMsFor(0)).toBe(0)
    expect(writeCoalesceMsFor(1000)).toBe(100)
  })

  it('sends the PUBACK and the ack of each message in one write', async () => {
    const hub = await startTestHub({ flushDelayMs: 20 })
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('dev-1')
    const port = Number(new URL(hub.mqttUrl).port)
    const socket: Socket = connect(port, '127.0.0.1')
    cleanups.push(async () => { socket.destroy() })
    // Each read, as the list of packet kinds it held.
    const reads: string[][] = []
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    let current: string[] = []
    parser.on('packet', (p: mqttPacket.Packet) => current.push(p.cmd === 'publish' ? `publish ${p.topic}` : p.cmd))
    socket.on('data', (chunk: Buffer) => {
      current = []
      parser.parse(chunk)
      reads.push(current)
    })
    const send = (p: mqttPacket.Packet) => socket.write(mqttPacket.generate(p))
    await new Promise<void>((resolve, reject) => { socket.once('connect', () => resolve()); socket.once('error', reject) })
    send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'dev-1', username: 'dev-1', password: Buffer.from(token), clean: true, keepalive: 30 })
    send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: topics.telemetryAck('dev-1'), qos: 1 }] })
    await waitFor(() => reads.flat().includes('suback'), 'SUBACK')

    const ackTopic = `publish ${topics.telemetryAck('dev-1')}`
    const messages = 8
    for (let seq = 1; seq <= messages; seq++) {
      const before = reads.length
      send({
        cmd: 'publish', topic: topics.telemetry('dev-1'), qos: 1, messageId: 100 + seq, retain: false, dup: false,
        payload: Buffer.from(encode({ type: 'telemetry', v: 1, storeId, prev: seq - 1, samples: [{ seq, ts: 1_700_000_000_000 + seq, sensor: 't', value: seq }] })),
      })
      await waitFor(() => reads.slice(before).flat().includes(ackTopic), `ack of message ${seq}`)
      // Both packets of this message, and in the same read.
      const after = reads.slice(before)
      expect(after.flat().filter((k) => k === 'puback')).toHaveLength(1)
      expect(after.find((r) => r.includes(ackTopic))).toContain('puback')
    }
    // Each message's connection was released by its commit (the CONNACK and SUBACK went at once, alone).
    const { body } = await hub.api<{ broker: { writeReleases: { commit: number; single: number } } }>('GET', '/api/stats')
    expect(body.broker.writeReleases.commit).toBeGreaterThanOrEqual(messages)
    expect(body.broker.writeReleases.single).toBeGreaterThanOrEqual(2)
  })
})
