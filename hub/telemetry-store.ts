import type { Db } from '../common/sqlite.js'
import type { DeviceEvent, Sample } from '../protocol/messages.js'
import type { Writer } from './writer.js'

/**
 * Owns samples, device events, the interned device/sensor keys and the
 * per-(device, store) high-water marks (`streams`).
 *
 * Exactly-once storage: a batch's rows and the advance of its stream's
 * high-water mark commit in the same transaction, and only seq > mark is
 * inserted, so a replay after any crash (agent, hub, network) is dropped as a
 * duplicate. The mark is cumulative because the agent sends in seq order on
 * one connection and replays from its oldest unacknowledged row.
 */

export interface StoredAck {
  readonly deviceId: string
  readonly storeId: string
  readonly upTo: number
}

export interface TelemetryQuery {
  readonly deviceId: string
  readonly sensor?: string | undefined
  readonly sinceMs: number
  readonly untilMs: number
  /** Downsample into buckets of this width (avg/min/max/count per sensor and bucket). */
  readonly bucketMs?: number | undefined
  readonly limit: number
}

export interface SampleRow { readonly sensor: string; readonly ts: number; readonly seq: number; readonly value: number }
export interface EventRow { readonly ts: number; readonly seq: number; readonly kind: string; readonly level: string; readonly message: string; readonly data: unknown }
export interface BucketRow { readonly sensor: string; readonly ts: number; readonly count: number; readonly avg: number; readonly min: number; readonly max: number }

export interface IngestCounters {
  samplesStored: number
  samplesDuplicate: number
  eventsStored: number
  eventsDuplicate: number
  batches: number
}

export function createTelemetryStore(db: Db, writer: Writer) {
  const stmts = {
    internDevice: db.prepare<[string]>('INSERT OR IGNORE INTO device_keys (id) VALUES (?)'),
    deviceKey: db.prepare<[string], { key: number }>('SELECT key FROM device_keys WHERE id = ?'),
    internSensor: db.prepare<[string]>('INSERT OR IGNORE INTO sensor_keys (name) VALUES (?)'),
    sensorKey: db.prepare<[string], { key: number }>('SELECT key FROM sensor_keys WHERE name = ?'),
    getMark: db.prepare<[string, string], { up_to: number }>('SELECT up_to FROM streams WHERE device_id = ? AND store_id = ?'),
    setMark: db.prepare<[string, string, number, number]>(
      'INSERT INTO streams (device_id, store_id, up_to, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (device_id, store_id) DO UPDATE SET up_to = excluded.up_to, updated_at = excluded.updated_at'),
    insertSample: db.prepare<[number, number, number, number, number]>('INSERT INTO samples (device_key, ts, seq, sensor_key, value) VALUES (?, ?, ?, ?, ?)'),
    insertEvent: db.prepare<[number, number, number, string, string, string, string | null]>(
      'INSERT INTO device_events (device_key, ts, seq, kind, level, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    streamsOf: db.prepare<[string], { store_id: string; up_to: number; updated_at: number }>('SELECT store_id, up_to, updated_at FROM streams WHERE device_id = ? ORDER BY updated_at DESC'),
    raw: db.prepare<[string, number, number, number], SampleRow>(`
      SELECT k.name AS sensor, s.ts, s.seq, s.value FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
      WHERE s.device_key = (SELECT key FROM device_keys WHERE id = ?) AND s.ts >= ? AND s.ts < ?
      ORDER BY s.ts, s.seq LIMIT ?`),
    rawSensor: db.prepare<[string, number, number, string, number], SampleRow>(`
      SELECT k.name AS sensor, s.ts, s.seq, s.value FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
      WHERE s.device_key = (SELECT key FROM device_keys WHERE id = ?) AND s.ts >= ? AND s.ts < ?
        AND s.sensor_key = (SELECT key FROM sensor_keys WHERE name = ?)
      ORDER BY s.ts, s.seq LIMIT ?`),
    buckets: db.prepare<{ device: string; since: number; until: number; sensor: string | null; bucket: number; limit: number }, BucketRow>(`
      SELECT k.name AS sensor, s.ts - s.ts % :bucket AS ts, count(*) AS count, avg(s.value) AS avg, min(s.value) AS min, max(s.value) AS max
      FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
      WHERE s.device_key = (SELECT key FROM device_keys WHERE id = :device) AND s.ts >= :since AND s.ts < :until
        AND (:sensor IS NULL OR s.sensor_key = (SELECT key FROM sensor_keys WHERE name = :sensor))
      GROUP BY s.sensor_key, s.ts - s.ts % :bucket ORDER BY 2, 1 LIMIT :limit`),
    events: db.prepare<[string, number, number, number], { ts: number; seq: number; kind: string; level: string; message: string; data: string | null }>(`
      SELECT ts, seq, kind, level, message, data FROM device_events
      WHERE device_key = (SELECT key FROM device_keys WHERE id = ?) AND ts >= ? AND ts < ? ORDER BY ts DESC, seq DESC LIMIT ?`),
    allDeviceKeys: db.prepare<[], { key: number }>('SELECT key FROM device_keys'),
    prune: db.prepare<[number, number]>('DELETE FROM samples WHERE device_key = ? AND ts < ?'),
    pruneEvents: db.prepare<[number]>('DELETE FROM device_events WHERE ts < ?'),
  }

  // Caches advanced inside transactions; dropped wholesale if one rolls back.
  let deviceKeys = new Map<string, number>()
  let sensorKeys = new Map<string, number>()
  let marks = new Map<string, number>()
  writer.onRollback(() => {
    deviceKeys = new Map()
    sensorKeys = new Map()
    marks = new Map()
  })

  const counters: IngestCounters = { samplesStored: 0, samplesDuplicate: 0, eventsStored: 0, eventsDuplicate: 0, batches: 0 }

  function deviceKeyOf(id: string): number {
    let k = deviceKeys.get(id)
    if (k === undefined) {
      stmts.internDevice.run(id)
      k = stmts.deviceKey.get(id)!.key
      deviceKeys.set(id, k)
    }
    return k
  }

  function sensorKeyOf(name: string): number {
    let k = sensorKeys.get(name)
    if (k === undefined) {
      stmts.internSensor.run(name)
      k = stmts.sensorKey.get(name)!.key
      sensorKeys.set(name, k)
    }
    return k
  }

  function markOf(deviceId: string, storeId: string): number {
    const key = `${deviceId}\0${storeId}`
    let m = marks.get(key)
    if (m === undefined) {
      m = stmts.getMark.get(deviceId, storeId)?.up_to ?? 0
      marks.set(key, m)
    }
    return m
  }

  // Acks coalesced per stream within one commit, sent after it.
  let pendingAcks = new Map<string, StoredAck>()
  let ackSink: ((acks: StoredAck[]) => void) | undefined
  writer.onCommit(() => {
    if (pendingAcks.size === 0) return
    const acks = [...pendingAcks.values()]
    pendingAcks = new Map()
    ackSink?.(acks)
  })
  writer.onRollback(() => { pendingAcks = new Map() })

  /**
   * Stores the items with seq above the stream's mark and advances it, in the
   * writer's next transaction; after the commit an ack with the new mark is
   * sent (also when everything was a duplicate, so the agent can let go).
   */
  function store(deviceId: string, storeId: string, now: number, items: readonly Sample[] | readonly DeviceEvent[], kind: 'samples' | 'events'): void {
    writer.enqueue(() => {
      const mark = markOf(deviceId, storeId)
      const dk = deviceKeyOf(deviceId)
      let top = mark
      let stored = 0
      if (kind === 'samples') {
        for (const s of items as readonly Sample[]) {
          if (s.seq <= mark) continue
          stmts.insertSample.run(dk, s.ts, s.seq, sensorKeyOf(s.sensor), s.value)
          top = s.seq
          stored++
        }
      } else {
        for (const e of items as readonly DeviceEvent[]) {
          if (e.seq <= mark) continue
          stmts.insertEvent.run(dk, e.ts, e.seq, e.kind, e.level, e.message, e.data === undefined ? null : JSON.stringify(e.data))
          top = e.seq
          stored++
        }
      }
      if (top > mark) {
        stmts.setMark.run(deviceId, storeId, top, now)
        marks.set(`${deviceId}\0${storeId}`, top)
      }
      return () => {
        counters.batches++
        if (kind === 'samples') {
          counters.samplesStored += stored
          counters.samplesDuplicate += items.length - stored
        } else {
          counters.eventsStored += stored
          counters.eventsDuplicate += items.length - stored
        }
        pendingAcks.set(`${deviceId}\0${storeId}`, { deviceId, storeId, upTo: top })
      }
    }, items.length)
  }

  return {
    storeSamples: (deviceId: string, storeId: string, now: number, samples: readonly Sample[]) => store(deviceId, storeId, now, samples, 'samples'),
    storeEvents: (deviceId: string, storeId: string, now: number, events: readonly DeviceEvent[]) => store(deviceId, storeId, now, events, 'events'),
    /** Where acks go after each commit (the hub publishes them on telemetry/ack). */
    onAcks(sink: (acks: StoredAck[]) => void): void { ackSink = sink },
    counters: (): Readonly<IngestCounters> => ({ ...counters }),
    streamsOf: (deviceId: string) => stmts.streamsOf.all(deviceId).map((r) => ({ storeId: r.store_id, upTo: r.up_to, updatedAt: r.updated_at })),
    query(q: TelemetryQuery): SampleRow[] | BucketRow[] {
      if (q.bucketMs !== undefined) {
        return stmts.buckets.all({ device: q.deviceId, since: q.sinceMs, until: q.untilMs, sensor: q.sensor ?? null, bucket: q.bucketMs, limit: q.limit })
      }
      return q.sensor !== undefined
        ? stmts.rawSensor.all(q.deviceId, q.sinceMs, q.untilMs, q.sensor, q.limit)
        : stmts.raw.all(q.deviceId, q.sinceMs, q.untilMs, q.limit)
    },
    /** A device's events in a time range, newest first. */
    events(deviceId: string, sinceMs: number, untilMs: number, limit: number): EventRow[] {
      return stmts.events.all(deviceId, sinceMs, untilMs, limit).map((r) => ({ ...r, data: r.data === null ? undefined : JSON.parse(r.data) as unknown }))
    },
    /** Deletes raw samples and events older than the cutoff, one device range at a time. */
    prune(cutoffMs: number): { samples: number; events: number } {
      let samples = 0
      for (const { key } of stmts.allDeviceKeys.all()) samples += stmts.prune.run(key, cutoffMs).changes
      const events = stmts.pruneEvents.run(cutoffMs).changes
      return { samples, events }
    },
  }
}

export type TelemetryStore = ReturnType<typeof createTelemetryStore>
