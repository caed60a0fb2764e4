import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { LIMITS } from '../protocol/limits.js'
import { topics } from '../protocol/index.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'

/**
 * M19b, end to end: a device publishes an event whose `data` is nested
 * 30,000 deep in the same group-commit window as other devices' telemetry.
 * Before, it passed the schema, overflowed the stack inside the commit and
 * vanished without a dead letter or a strike. Now it is a dead letter
 * (TOO_DEEP, naming the field and the limit), it counts against its sender's
 * bad-message budget, and every other device's samples are stored once and
 * acknowledged. Real hub, real MQTT.js clients; the payload is written by
 * hand, since JSON.stringify cannot write such nesting.
 */
interface DeadLetterBody { deadLetters: Array<{ deviceId: string | null; reason: string; detail: string }> }
interface SamplesBody { samples: Array<{ seq: number }> }

const GOOD = 5
const ROUNDS = 3
const storeId = 'poison-test-store-0001'
const ts0 = Date.now() - 60_000

describe('a poison event among good telemetry', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function device(hub: TestHub, id: string): Promise<MqttClient> {
    const c = await connectDevice(hub.mqttUrl, id, await hub.addDevice(id))
    cleanups.push(() => c.endAsync(true))
    return c
  }

  it('is a dead letter and a strike; the others in its commit are stored and acked (lost 0, duplicates 0)', async () => {
    // A long commit window, so each round's writes share one transaction; two bad messages a minute are allowed.
    const hub = await startTestHub({ flushDelayMs: 1000, badMessagesPerMinute: 2 })
    cleanups.push(() => hub.stop())

    const acked = new Map<string, number>()
    const goods: Array<[string, MqttClient]> = []
    for (let i = 0; i < GOOD; i++) {
      const id = `good-${i}`
      const c = await device(hub, id)
      c.on('message', (_t, p) => acked.set(id, (JSON.parse(p.toString()) as { upTo: number }).upTo))
      await c.subscribeAsync(topics.telemetryAck(id), { qos: 1 })
      goods.push([id, c])
    }
    const bad = await device(hub, 'bad-1')
    let badClosed = false
    bad.once('close', () => { badClosed = true })

    const depth = 30_000
    const deepEvent = (seq: number) => Buffer.from(
      `{"type":"events","v":1,"storeId":"${storeId}","events":[{"seq":${seq},"ts":${ts0 + seq},"kind":"probe","level":"warn","message":"deep","data":{"x":${'['.repeat(depth)}${']'.repeat(depth)}}}]}`)
    expect(deepEvent(1).byteLength).toBeLessThan(LIMITS.maxPayloadBytes)
    const batch = (round: number) => Buffer.from(JSON.stringify({
      type: 'telemetry', v: 1, storeId, samples: [1, 2].map((k) => ({ seq: round * 2 + k - 2, ts: ts0 + round * 10 + k, sensor: 'temp', value: round + k / 10 })),
    }))

    for (let round = 1; round <= ROUNDS; round++) {
      const sends: Array<Promise<unknown>> = goods.map(([id, c]) => c.publishAsync(topics.telemetry(id), batch(round), { qos: 1 }))
      // The third bad message is over the budget of two: the hub closes the connection, maybe before its PUBACK.
      bad.publish(topics.events('bad-1'), deepEvent(round), { qos: 1 })
      await Promise.all(sends)
      await waitFor(() => goods.every(([id]) => acked.get(id) === round * 2), `round ${round} acked`, 15_000)
    }

    // The bad device: three dead letters that say which limit, and cut off for them.
    await waitFor(() => badClosed, 'the bad device cut off after its third bad message', 15_000)
    const dl = await waitFor(async () => {
      const r = (await hub.api<DeadLetterBody>('GET', '/api/dead-letters?device=bad-1&limit=100')).body
      return r.deadLetters.length >= ROUNDS ? r : undefined
    }, 'three dead letters', 15_000)
    expect(dl.deadLetters.map((d) => d.reason)).toEqual(Array(ROUNDS).fill('TOO_DEEP'))
    for (const d of dl.deadLetters) {
      expect(d.detail).toContain('/events/0/data')
      expect(d.detail).toContain(`${LIMITS.maxJsonDepth} levels`)
    }
    expect(hub.running.services.telemetry.counters()).toMatchObject({ eventsStored: 0 })

    // The others: every sample stored exactly once.
    const expected = Array.from({ length: ROUNDS * 2 }, (_, i) => i + 1)
    for (const [id] of goods) {
      const r = await hub.api<SamplesBody>('GET', `/api/devices/${id}/telemetry?since=${new Date(ts0 - 1000).toISOString()}&limit=1000`)
      expect(r.body.samples.map((s) => s.seq)).toEqual(expected)
    }
    expect(hub.running.services.telemetry.counters()).toMatchObject({ samplesStored: GOOD * ROUNDS * 2, samplesDuplicate: 0 })
    // Refused at decode: nothing reached the group commit to be rolled back.
    const stats = await hub.api<{ writer: { failedCommits: number; failedOps: number } }>('GET', '/api/stats')
    expect(stats.body.writer).toMatchObject({ failedCommits: 0, failedOps: 0 })
  })
})
