import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { encode, topics, type TelemetryAck, type Sample } from '../protocol/index.js'
import { hubWithDevice, waitFor, type TestHub } from './support/hub.js'

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000001'

describe('hub telemetry ingest', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  const setup = (): Promise<{ hub: TestHub; dev: MqttClient; acks: TelemetryAck[] }> => hubWithDevice(cleanups)

  const samples = (from: number, to: number): Sample[] =>
    Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, ts: 1_700_000_000_000 + (from + i) * 1000, sensor: i % 2 ? 'temp' : 'hum', value: from + i }))

  it('stores a batch, acks after commit, and drops replays as duplicates', async () => {
    const { hub, dev, acks } = await setup()
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(1, 10) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 10), 'ack up to 10')
    // A replay overlapping what is stored, plus new samples.
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(5, 15) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 15), 'ack up to 15')
    // A pure replay is still acked, so the agent can let go of it.
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(1, 3) }), { qos: 1 })
    await waitFor(() => acks.filter((a) => a.upTo === 15).length >= 2, 'second ack up to 15')

    const r = await hub.api<{ samples: Array<{ seq: number; sensor: string; value: number }> }>('GET', '/api/devices/dev-1/telemetry?since=0&limit=1000')
    expect(r.status).toBe(200)
    const seqs = r.body.samples.map((s) => s.seq).sort((a, b) => a - b)
    expect(seqs).toEqual(Array.from({ length: 15 }, (_, i) => i + 1))
    const stats = await hub.api<{ ingest: { samplesStored: number; samplesDuplicate: number } }>('GET', '/api/stats')
    expect(stats.body.ingest).toMatchObject({ samplesStored: 15, samplesDuplicate: 9 })
  })

  it("tells only agents whose birth lists telemetry.backlog that it takes a batch's backlog and a birth's units", async () => {
    const { hub, dev, acks } = await setup()
    const birth = (capabilities: string[], epoch: number) => encode({ type: 'birth', v: 1, epoch, bootId: 'b', agentVersion: '0.1.0', storeId, capabilities })
    // An older agent: its acks carry nothing it would refuse.
    await dev.publishAsync(topics.state('dev-1'), birth(['telemetry', 'events'], 1), { qos: 1, retain: true })
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(1, 2) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 2), 'ack up to 2')
    expect(acks.every((a) => a.accepts === undefined)).toBe(true)
    // This version's agent: told, and its backlog is kept.
    await dev.publishAsync(topics.state('dev-1'), birth(['telemetry', 'events', 'telemetry.backlog'], 2), { qos: 1, retain: true })
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, prev: 2, backlog: 7, samples: samples(3, 4) }), { qos: 1 })
    const ack = await waitFor(() => acks.find((a) => a.upTo === 4), 'ack up to 4')
    expect(ack.accepts).toEqual(['backlog', 'units', 'clock', 'unsynced'])
    expect(ack.hubTime).toBeUndefined()
    expect(hub.running.services.presence.get('dev-1')?.backlog).toBe(7)
  })

  it('gives its time only to agents whose birth lists "time", takes a birth\'s clock as the skew and stores unsynced samples flagged (issue #13)', async () => {
    const { hub, dev, acks } = await setup()
    const birth = (capabilities: string[], epoch: number, clock?: number) => encode({
      type: 'birth', v: 1, epoch, bootId: 'b', agentVersion: '0.1.0', storeId, capabilities, ...(clock === undefined ? {} : { clock }),
    })
    const before = Date.now()
    await dev.publishAsync(topics.state('dev-1'), birth(['telemetry', 'telemetry.backlog', 'time'], 1), { qos: 1, retain: true })
    const first = await waitFor(() => acks[0], 'the answer to the birth')
    expect(first.hubTime).toBeGreaterThanOrEqual(before)
    expect(first.hubTime).toBeLessThanOrEqual(Date.now())
    expect(hub.running.services.presence.get('dev-1')?.clockSkewMs).toBeNull()
    // The birth again with the device's clock, 90 s behind the hub's.
    await dev.publishAsync(topics.state('dev-1'), birth(['telemetry', 'telemetry.backlog', 'time'], 1, Date.now() - 90_000), { qos: 1, retain: true })
    const skew = await waitFor(() => hub.running.services.presence.get('dev-1')?.clockSkewMs, 'the skew')
    expect(skew).toBeLessThanOrEqual(-90_000)
    expect(skew).toBeGreaterThan(-90_000 - 5000)
    const [a, b] = samples(1, 2)
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: [a!, { ...b!, unsynced: true }] }), { qos: 1 })
    await waitFor(() => acks.find((x) => x.upTo === 2), 'ack up to 2')
    const r = await hub.api<{ samples: Array<{ seq: number; unsynced?: boolean }> }>('GET', '/api/devices/dev-1/telemetry?since=0')
    expect(r.body.samples.map((x) => [x.seq, x.unsynced])).toEqual([[1, undefined], [2, true]])
  })

  it('queries by sensor, range and bucket', async () => {
    const { hub, dev, acks } = await setup()
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(1, 120) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 120), 'ack')
    const since = 1_700_000_000_000
    const one = await hub.api<{ samples: Array<{ sensor: string }>; truncated: boolean }>('GET', `/api/devices/dev-1/telemetry?sensor=temp&since=${since}&until=${since + 60_000}`)
    expect(one.body.truncated).toBe(false)
    const capped = await hub.api<{ samples: Array<{ seq: number }>; truncated: boolean }>('GET', `/api/devices/dev-1/telemetry?since=${since}&limit=7`)
    expect([capped.body.samples.length, capped.body.truncated]).toEqual([7, true])
    const expected = samples(1, 120).filter((s) => s.sensor === 'temp' && s.ts >= since && s.ts < since + 60_000)
    expect(one.body.samples.length).toBe(expected.length)
    expect(new Set(one.body.samples.map((s) => s.sensor))).toEqual(new Set(['temp']))
    const b = await hub.api<{ buckets: Array<{ sensor: string; count: number; min: number; max: number }> }>('GET', `/api/devices/dev-1/telemetry?since=${since}&until=${since + 121_000}&bucket=1m&sensor=hum`)
    const hum = samples(1, 120).filter((s) => s.sensor === 'hum')
    const perMinute = [0, 1, 2].map((m) => hum.filter((s) => Math.floor(s.ts / 60_000) === Math.floor(since / 60_000) + m).length).filter((n) => n > 0)
    expect(b.body.buckets.map((x) => x.count)).toEqual(perMinute)
    expect(b.body.buckets.every((x) => x.min <= x.max)).toBe(true)
    const bad = await hub.api<{ error: { code: string } }>('GET', '/api/devices/dev-1/telemetry?since=yesterday-ish')
    expect(bad.status).toBe(400)
    expect(bad.body.error.code).toBe('BAD_REQUEST')
  })

  it('keeps a separate sequence per store (a re-flashed device starts again at 1)', async () => {
    const { hub, dev, acks } = await setup()
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(1, 5) }), { qos: 1 })
    const other = '0b6c3d1e-aaaa-4bbb-8ccc-000000000002'
    // Same seqs and the same timestamps as the old store (a Pi without a clock after a re-flash).
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId: other, samples: samples(1, 3) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.storeId === other && a.upTo === 3), 'ack for the new store')
    const d = await hub.api<{ streams: Array<{ storeId: string; upTo: number }> }>('GET', '/api/devices/dev-1')
    expect(d.body.streams.map((s) => [s.storeId, s.upTo]).sort()).toEqual([[storeId, 5], [other, 3]].sort())
    const rows = await hub.api<{ samples: Array<{ seq: number }> }>('GET', '/api/devices/dev-1/telemetry?since=0&limit=1000')
    expect(rows.body.samples.length).toBe(8)
  })

  it('refuses a batch whose prev the hub does not hold yet, so an ack never covers a lost batch', async () => {
    const { hub, dev, acks } = await setup()
    const send = (prev: number, from: number, to: number) =>
      dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, prev, samples: samples(from, to) }), { qos: 1 })
    await send(0, 1, 5)
    await waitFor(() => acks.find((a) => a.upTo === 5), 'ack up to 5')
    // The batch 6..10 was lost on the way; 11..15 says it follows 10.
    await send(10, 11, 15)
    await waitFor(async () => (await hub.api<{ ingest: { gapsRefused: number } }>('GET', '/api/stats')).body.ingest.gapsRefused === 1, 'gap refused')
    expect(acks.every((a) => a.upTo <= 5)).toBe(true)
    // The sender rewinds: 6..10 then 11..15 again.
    await send(5, 6, 10)
    await send(10, 11, 15)
    await waitFor(() => acks.find((a) => a.upTo === 15), 'ack up to 15')
    const r = await hub.api<{ samples: Array<{ seq: number }> }>('GET', '/api/devices/dev-1/telemetry?since=0&limit=1000')
    expect(r.body.samples.map((x) => x.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1))
  })
})
