import type { Db } from '../../common/sqlite.js'
import type { DeviceEvent, Sample } from '../../protocol/messages.js'
import { deleteInChunks } from '../storage/chunked-delete.js'
import type { OnFailed, Writer } from '../storage/group-commit.js'
import type { Logger } from '../../common/logger.js'
import { createSampleWatchers, sampleRow } from './sample-watchers.js'
import type { BucketRow, EventRow, IngestCounters, SampleListener, SampleRow, StoredAck, StoredReaction, TelemetryQuery, TelemetryStore } from './store.js'

/**
 * The telemetry store on the hub's own SQLite file (hub/telemetry/store.ts
 * says what every telemetry store does). Owns samples, device events, the
 * interned device/sensor keys and the per-(device, store) high-water marks
 * (`streams`).
 * Its reads answer at once (promises only for the interface's sake), and
 * its writes go through the group-commit writer, a savepoint each.
 */

interface SampleSqlRow { readonly sensor: string; readonly ts: number; readonly seq: number; readonly value: number; readonly unsynced: number | null }

export function createSqliteTelemetryStore(db: Db, writer: Writer, logger: Logger): TelemetryStore {
  const stmts = {
    internDevice: db.prepare<[string]>('INSERT OR IGNORE INTO device_keys (id) VALUES (?)'),
    deviceKey: db.prepare<[string], { key: number }>('SELECT key FROM device_keys WHERE id = ?'),
    internSensor: db.prepare<[string]>('INSERT OR IGNORE INTO sensor_keys (name) VALUES (?)'),
    sensorKey: db.prepare<[string], { key: number }>('SELECT key FROM sensor_keys WHERE name = ?'),
    getStream: db.prepare<[string, string], { key: number; up_to: number }>('SELECT key, up_to FROM streams WHERE device_id = ? AND store_id = ?'),
    newStream: db.prepare<[string, string, number]>('INSERT INTO streams (device_id, store_id, up_to, updated_at) VALUES (?, ?, 0, ?)'),
    setMark: db.prepare<[number, number, number]>('UPDATE streams SET up_to = ?, updated_at = ? WHERE key = ?'),
    insertSample: db.prepare<[number, number, number, number, number, number]>('INSERT INTO samples (device_key, ts, seq, stream_key, sensor_key, value) VALUES (?, ?, ?, ?, ?, ?)'),
    // Rare: only samples whose time could not be checked against the hub's are flagged; the common insert leaves the column NULL.
    insertUnsynced: db.prepare<[number, number, number, number, number, number]>('INSERT INTO samples (device_key, ts, seq, stream_key, sensor_key, value, unsynced) VALUES (?, ?, ?, ?, ?, ?, 1)'),
    insertEvent: db.prepare<[number, number, number, number, string, string, string, string | null]>(
      'INSERT INTO device_events (device_key, stream_key, ts, seq, kind, level, message, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    streamsOf: db.prepare<[string], { store_id: string; up_to: number; updated_at: number }>('SELECT store_id, up_to, updated_at FROM streams WHERE device_id = ? ORDER BY updated_at DESC'),
    raw: db.prepare<[string, number, number, number], SampleSqlRow>(`
      SELECT k.name AS sensor, s.ts, s.seq, s.value, s.unsynced FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
      WHERE s.device_key = (SELECT key FROM device_keys WHERE id = ?) AND s.ts >= ? AND s.ts < ?
      ORDER BY s.ts, s.seq LIMIT ?`),
    rawSensor: db.prepare<[string, number, number, string, number], SampleSqlRow>(`
      SELECT k.name AS sensor, s.ts, s.seq, s.value, s.unsynced FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
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
    // Oldest first, one kind: what a rule's dry run replays from `since` (hub/rules/replay.ts).
    eventsOfKind: db.prepare<[string, number, number, string, number], { ts: number; seq: number; kind: string; level: string; message: string; data: string | null }>(`
      SELECT ts, seq, kind, level, message, data FROM device_events
      WHERE device_key = (SELECT key FROM device_keys WHERE id = ?) AND ts >= ? AND ts < ? AND kind = ? ORDER BY ts, seq LIMIT ?`),
    allDeviceKeys: db.prepare<[], { key: number }>('SELECT key FROM device_keys'),
    prune: db.prepare<[number, number]>('DELETE FROM samples WHERE device_key = ? AND ts < ?'),
    pruneThrough: db.prepare<[number, number]>('DELETE FROM samples WHERE device_key = ? AND ts <= ?'),
    pruneBoundary: db.prepare<[number, number, number], number>('SELECT ts FROM samples WHERE device_key = ? AND ts < ? ORDER BY ts LIMIT 1 OFFSET ?').pluck(),
    pruneEvents: db.prepare<[number, number]>('DELETE FROM device_events WHERE id IN (SELECT id FROM device_events WHERE ts < ? LIMIT ?)'),
  }

  // Caches advanced inside transactions; dropped wholesale if one rolls back.
  let deviceKeys = new Map<string, number>()
  let sensorKeys = new Map<string, number>()
  let streams = new Map<string, { key: number; upTo: number }>()
  // Streams one of whose writes failed in the current group: their later writes
  // in the same group are skipped, so no ack can cover the failed one.
  let failedStreams = new Set<string>()
  writer.onRollback(() => {
    deviceKeys = new Map()
    sensorKeys = new Map()
    streams = new Map()
  })

  const counters: IngestCounters = { samplesStored: 0, samplesDuplicate: 0, eventsStored: 0, eventsDuplicate: 0, batches: 0, gapsRefused: 0 }

  /** The integer key of an interned string, cached; inserted on first use (inside a transaction). */
  function intern(cache: Map<string, number>, insert: typeof stmts.internDevice, select: typeof stmts.deviceKey, text: string): number {
    let k = cache.get(text)
    if (k === undefined) {
      insert.run(text)
      k = select.get(text)!.key
      cache.set(text, k)
    }
    return k
  }
  const deviceKeyOf = (id: string) => intern(deviceKeys, stmts.internDevice, stmts.deviceKey, id)
  const sensorKeyOf = (name: string) => intern(sensorKeys, stmts.internSensor, stmts.sensorKey, name)

  /** The stream's key and mark, created (mark 0) on first use; inside a transaction. */
  function streamOf(deviceId: string, storeId: string, now: number): { key: number; upTo: number } {
    const id = `${deviceId}\0${storeId}`
    let st = streams.get(id)
    if (st === undefined) {
      let row = stmts.getStream.get(deviceId, storeId)
      if (!row) {
        stmts.newStream.run(deviceId, storeId, now)
        row = stmts.getStream.get(deviceId, storeId)!
      }
      st = { key: row.key, upTo: row.up_to }
      streams.set(id, st)
    }
    return st
  }

  // Acks coalesced per stream within one commit, sent after it.
  let pendingAcks = new Map<string, StoredAck>()
  let ackSink: ((acks: StoredAck[]) => void) | undefined
  // The group's own: the next group may be written before this one's fsync is back.
  writer.onWritten(() => { failedStreams = new Set() })
  writer.onCommit(() => {
    if (pendingAcks.size === 0) return
    const acks = [...pendingAcks.values()]
    pendingAcks = new Map()
    ackSink?.(acks)
  })
  // No rollback hook clears pendingAcks: acks are queued only by after-commit
  // steps, so the ones pending are all committed. Dropping them when some
  // other write rolls back would cost innocent devices their acks (M19b).

  let reaction: StoredReaction | undefined

  const watchers = createSampleWatchers(logger)

  function counted(kind: 'samples' | 'events', stored: number, duplicate: number): void {
    counters.batches++
    if (kind === 'samples') {
      counters.samplesStored += stored
      counters.samplesDuplicate += duplicate
    } else {
      counters.eventsStored += stored
      counters.eventsDuplicate += duplicate
    }
  }

  /**
   * Stores the items with seq above the stream's mark and advances it, in the
   * writer's next transaction; after the commit an ack with the new mark is
   * sent (also when everything was a duplicate, so the agent can let go).
   */
  function store(deviceId: string, storeId: string, prev: number, now: number, items: readonly Sample[] | readonly DeviceEvent[], kind: 'samples' | 'events', onFailed: OnFailed | undefined): void {
    const id = `${deviceId}\0${storeId}`
    writer.enqueue(() => {
      if (failedStreams.has(id)) return
      try {
        const st = streamOf(deviceId, storeId, now)
        const mark = st.upTo
        // The sender says it sent up to `prev` before this batch; a mark below
        // it means an earlier batch never got stored. Storing this one would
        // let the cumulative ack cover the gap, so refuse it: the sender
        // resends from its oldest unacknowledged row.
        if (mark < prev) return () => { counters.gapsRefused++ }
        const dk = deviceKeyOf(deviceId)
        let top = mark
        let stored = 0
        const fresh: SampleRow[] | undefined = kind === 'samples' && watchers.watched(deviceId) ? [] : undefined
        const kept: Array<Sample | DeviceEvent> | undefined = reaction?.watching(kind) ? [] : undefined
        if (kind === 'samples') {
          for (const s of items as readonly Sample[]) {
            if (s.seq <= mark) continue
            kept?.push(s)
            ;(s.unsynced ? stmts.insertUnsynced : stmts.insertSample).run(dk, s.ts, s.seq, st.key, sensorKeyOf(s.sensor), s.value)
            fresh?.push(sampleRow(s))
            top = s.seq
            stored++
          }
        } else {
          for (const e of items as readonly DeviceEvent[]) {
            if (e.seq <= mark) continue
            kept?.push(e)
            stmts.insertEvent.run(dk, st.key, e.ts, e.seq, e.kind, e.level, e.message, e.data === undefined ? null : JSON.stringify(e.data))
            top = e.seq
            stored++
          }
        }
        if (top > mark) {
          stmts.setMark.run(top, now, st.key)
          st.upTo = top
        }
        const reacted = reaction && kept && kept.length > 0
          ? (kind === 'samples' ? reaction.samples(deviceId, storeId, kept as Sample[], now) : reaction.events(deviceId, storeId, kept as DeviceEvent[], now))
          : undefined
        return () => {
          counted(kind, stored, items.length - stored)
          pendingAcks.set(id, { deviceId, storeId, upTo: top })
          if (fresh && fresh.length > 0) watchers.notify(deviceId, fresh)
          reacted?.()
        }
      } catch (err) {
        failedStreams.add(id)
        throw err
      }
    }, items.length, onFailed)
  }

  /** The committed mark of a stream (0 if unknown), without creating it. */
  function markOf(deviceId: string, storeId: string): number {
    return streams.get(`${deviceId}\0${storeId}`)?.upTo ?? stmts.getStream.get(deviceId, storeId)?.up_to ?? 0
  }

  return {
    storeSamples: (deviceId: string, storeId: string, prev: number, now: number, samples: readonly Sample[], onFailed?: OnFailed) => { store(deviceId, storeId, prev, now, samples, 'samples', onFailed) },
    storeEvents: (deviceId: string, storeId: string, prev: number, now: number, events: readonly DeviceEvent[], onFailed?: OnFailed) => { store(deviceId, storeId, prev, now, events, 'events', onFailed) },
    // The mark as the writer's next group sees it, sent once that group is durable: the
    // cached mark may include rows written but not yet fsynced, which no ack may cover yet.
    announceMark(deviceId: string, storeId: string): void {
      writer.enqueue(() => {
        const upTo = markOf(deviceId, storeId)
        return () => { pendingAcks.set(`${deviceId}\0${storeId}`, { deviceId, storeId, upTo }) }
      })
    },
    markOf: async (deviceId: string, storeId: string) => markOf(deviceId, storeId),
    reactWith(r: StoredReaction): void { reaction = r },
    onAcks(sink: (acks: StoredAck[]) => void): void { ackSink = sink },
    counters: (): Readonly<IngestCounters> => ({ ...counters }),
    watchSamples: (deviceId: string, listener: SampleListener) => watchers.watch(deviceId, listener),
    streamsOf: async (deviceId: string) => stmts.streamsOf.all(deviceId).map((r) => ({ storeId: r.store_id, upTo: r.up_to, updatedAt: r.updated_at })),
    async query(q: TelemetryQuery): Promise<SampleRow[] | BucketRow[]> {
      if (q.bucketMs !== undefined) {
        return stmts.buckets.all({ device: q.deviceId, since: q.sinceMs, until: q.untilMs, sensor: q.sensor ?? null, bucket: q.bucketMs, limit: q.limit })
      }
      const rows = q.sensor !== undefined
        ? stmts.rawSensor.all(q.deviceId, q.sinceMs, q.untilMs, q.sensor, q.limit)
        : stmts.raw.all(q.deviceId, q.sinceMs, q.untilMs, q.limit)
      return rows.map((r) => r.unsynced === null
        ? { sensor: r.sensor, ts: r.ts, seq: r.seq, value: r.value }
        : { sensor: r.sensor, ts: r.ts, seq: r.seq, value: r.value, unsynced: true })
    },
    async events(deviceId: string, sinceMs: number, untilMs: number, limit: number): Promise<EventRow[]> {
      return stmts.events.all(deviceId, sinceMs, untilMs, limit).map((r) => ({ ...r, data: r.data === null ? undefined : JSON.parse(r.data) as unknown }))
    },
    async eventsOfKind(deviceId: string, kind: string, sinceMs: number, untilMs: number, limit: number): Promise<EventRow[]> {
      return stmts.eventsOfKind.all(deviceId, sinceMs, untilMs, kind, limit).map((r) => ({ ...r, data: r.data === null ? undefined : JSON.parse(r.data) as unknown }))
    },
    /**
     * Deletes raw samples and events older than the cutoff in chunks of about
     * `chunkRows`, yielding to the event loop between chunks: a day of a busy
     * fleet is millions of rows, and one long DELETE would stall ingest and
     * keepalives for all of its duration.
     */
    async prune(cutoffMs: number, chunkRows = 5000): Promise<{ samples: number; events: number }> {
      const breathe = () => new Promise<void>((resolve) => setImmediate(resolve))
      let samples = 0
      for (const { key } of stmts.allDeviceKeys.all()) {
        for (;;) {
          // Delete below the chunkRows-th oldest row's time, or everything left when fewer remain.
          const boundary = stmts.pruneBoundary.get(key, cutoffMs, chunkRows)
          let n = stmts.prune.run(key, boundary ?? cutoffMs).changes
          // A chunk of rows all at the boundary's time: take the ties (still before the cutoff).
          if (n === 0 && boundary !== undefined) n = stmts.pruneThrough.run(key, boundary).changes
          samples += n
          await breathe()
          if (boundary === undefined) break
        }
      }
      const events = await deleteInChunks((limit) => stmts.pruneEvents.run(cutoffMs, limit).changes, chunkRows)
      return { samples, events }
    },
  }
}
