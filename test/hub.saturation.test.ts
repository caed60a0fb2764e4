import { afterEach, describe, expect, it } from 'vitest'
import { encode, topics } from '../protocol/index.js'
import { hubWithDevice, waitFor } from './support/hub.js'

/**
 * The hub's own saturation (hub/observe/saturation.ts, issue #14) in /api/stats and
 * /metrics: a row held for its commit shows as the oldest unacked message,
 * aging; a blocked event loop shows as its delay.
 */
const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000003'

interface Saturation { eventLoopDelayP99Ms: number; eventLoopDelayMaxMs: number; routingQueued: number; writerQueuedRows: number; oldestUnackedMs: number }

describe('hub saturation figures', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('show a row waiting for its commit as the oldest unacked, and a blocked event loop as its delay', async () => {
    // Commits a second apart: a sample waits that long for its ack.
    const { hub, dev, acks } = await hubWithDevice(cleanups, { flushDelayMs: 1000 })
    const stats = async () => (await hub.api<{ saturation: Saturation; writer: { oldestQueuedMs: number } }>('GET', '/api/stats')).body
    await waitFor(async () => (await stats()).saturation.oldestUnackedMs === 0, 'nothing waiting before the sample')

    // The PUBACK comes once the sample is routed, so it is queued for the commit from here on.
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: [{ seq: 1, ts: Date.now(), sensor: 't', value: 1 }] }), { qos: 1 })
    const t0 = performance.now()
    await new Promise((r) => setTimeout(r, 200))
    const held = await stats()
    expect(acks).toEqual([])
    expect(held.saturation.writerQueuedRows).toBeGreaterThanOrEqual(1)
    expect(held.saturation.oldestUnackedMs).toBeGreaterThanOrEqual(Math.floor(performance.now() - t0) - 1)
    expect(held.writer.oldestQueuedMs).toBeGreaterThanOrEqual(held.saturation.oldestUnackedMs - 1)
    const scrape = await fetch(`${hub.httpUrl}/metrics`, { headers: { authorization: `Bearer ${hub.running.adminToken}` } })
    const gauge = /^rollcall_saturation_oldest_unacked_seconds ([0-9.e+-]+)$/m.exec(await scrape.text())
    expect(Number(gauge?.[1])).toBeGreaterThanOrEqual(0.2)

    // Once committed and acked, nothing waits.
    await waitFor(() => acks.find((a) => a.upTo === 1), 'ack after the commit')
    await waitFor(async () => (await stats()).saturation.oldestUnackedMs === 0, 'nothing waiting after the commit')

    // This test shares the hub's event loop: 300 ms of blocking is 300 ms of delay.
    const until = performance.now() + 300
    while (performance.now() < until) { /* block the event loop */ }
    await new Promise((r) => setTimeout(r, 20))
    expect((await stats()).saturation.eventLoopDelayMaxMs).toBeGreaterThanOrEqual(250)
  })
})
