import type pg from 'pg'
import type { Logger } from '../../common/logger.js'
import type { DeviceEvent, Sample } from '../../protocol/messages.js'
import type { OnFailed } from '../storage/group-commit.js'
import { DAY_MS, ensureDayPartitions, pruneBefore } from '../storage/postgres/partitions.js'
import { isRetryable, pgBlameOf, withClient } from '../storage/postgres/pool.js'
import { createSampleWatchers, sampleRowOfPg, type PgSampleRow } from './sample-watchers.js'
import { createSampleFollower } from './follow-others.js'
import type { BucketRow, EventRow, IngestCounters, SampleRow, StoredAck, StoredReaction, StreamRow, TelemetryQuery, TelemetryStore } from './store.js'

/**
 * The telemetry store on a PostgreSQL shared by several hubs (issue #18;
 * hub/telemetry/store.ts says what every telemetry store does).
 *
 * Batches are queued and written in groups, one transaction per group, as
 * the SQLite store's group commit does: every `flushDelayMs`, or at once
 * when `maxGroupRows` are queued. One group is written at a time, so the
 * batches of a stream that reach this hub are stored in the order they came.
 *
 * Exactly once across hubs: a group locks the rows of its streams (SELECT
 * ... FOR UPDATE, in key order, so two hubs never deadlock on them) and reads
 * their marks under that lock, which at READ COMMITTED is the mark the last
 * hub to commit left. Only seq above it is stored, a batch whose `prev` is
 * above it is refused, and the new marks commit with the rows. Two hubs
 * given two batches of one device at once (a shared subscription hands out
 * messages, not devices) therefore take turns on the stream's row: the
 * second sees the first's mark.
 *
 * Order across hubs: when the later batch of the two gets there first, its
 * `prev` is above the mark. Refusing it at once (what a hub alone does: the
 * earlier batch is lost, not late) would stall the device until its ack
 * timeout, since every batch it sends after is refused too. So it waits,
 * in order with the stream's later batches on this hub, and is tried again
 * in each group for up to `gapWaitMs` (longer while commits are slow): long
 * enough for the other hub's group to commit the earlier batch. Only then is it refused, and the agent
 * resends from its last ack. Order costs a wait or a resend, never a row.
 *
 * The rows go in with one statement per table over arrays (unnest), not one
 * per row. A group that fails on a row's own content (PostgreSQL refuses a
 * NUL character in text, which SQLite stores) is written again batch by
 * batch, each in a savepoint, so only the batch that carried it is refused
 * (its `onFailed` hears why) and every other batch is stored and acked.
 * A group that fails on the database's own condition (connection lost,
 * shutdown, disk full) stores nothing and acks nothing: the agents resend.
 *
 * Unlike the SQLite store, it keeps no mark in memory: another hub may have
 * moved it. Interned keys and stream keys never change once made, so those
 * are cached.
 */

export interface PostgresTelemetryOptions {
  /** How long a batch may wait for its group (ms). */
  readonly flushDelayMs: number
  /** Write the group at once when this many rows are queued. */
  readonly maxGroupRows: number
  /**
   * How long a batch whose `prev` is above its stream's mark waits for the
   * earlier batch to be stored by another hub before it is refused (ms; 0:
   * refused at once, as a hub alone does), or four times this hub's last
   * commit when that is longer. See "Order across hubs" above.
   */
  readonly gapWaitMs: number
  /**
   * Where the reads (API queries, marks asked for) take their connections;
   * the writer's own pool when not given. A pool of its own for the reads
   * keeps a burst of dashboard queries from making the writer wait for a
   * connection.
   */
  readonly readPool?: pg.Pool
  /** How often a live chart's device is read for the samples other hubs stored (ms; follow-others.ts). Default 1000. */
  readonly followOthersMs?: number
}

interface Write {
  readonly kind: 'samples' | 'events'
  readonly deviceId: string
  readonly storeId: string
  readonly prev: number
  readonly now: number
  readonly items: readonly Sample[] | readonly DeviceEvent[]
  readonly onFailed: OnFailed | undefined
  /** performance.now() when it was first found above its stream's mark; set while it waits. */
  readonly waitingSince?: number
}

interface MarkAsk { readonly kind: 'mark'; readonly deviceId: string; readonly storeId: string }

type Queued = Write | MarkAsk

interface PgEventRow { readonly ts: number; readonly seq: number; readonly kind: string; readonly level: string; readonly message: string; readonly data: string | null }

/** What a group decided for one write: rows to insert, the mark it leaves, what to do after the commit. */
interface Planned {
  readonly write: Write
  readonly streamKey: number
  readonly samples: Sample[]
  readonly events: DeviceEvent[]
  readonly top: number
  readonly gap: boolean
}

export interface PostgresWriterStats {
  readonly commits: number
  readonly failedCommits: number
  readonly failedOps: number
  /** Batches that waited for a later group because their device's earlier batch was not stored yet. */
  readonly gapsWaited: number
  /** Groups written again batch by batch after a failure of a row's own. */
  readonly isolatedGroups: number
  readonly queuedRows: number
  /** How long the oldest write queued now has waited for its group, in ms (0: nothing queued). */
  readonly oldestQueuedMs: number
  readonly lastCommitMs: number
  readonly lastCommitRows: number
}

const streamId = (deviceId: string, storeId: string) => `${deviceId}\0${storeId}`

export function createPostgresTelemetryStore(pool: pg.Pool, opts: PostgresTelemetryOptions, logger: Logger) {
  const reads = opts.readPool ?? pool
  const counters: IngestCounters = { samplesStored: 0, samplesDuplicate: 0, eventsStored: 0, eventsDuplicate: 0, batches: 0, gapsRefused: 0 }
  const stats = { commits: 0, failedCommits: 0, failedOps: 0, gapsWaited: 0, isolatedGroups: 0, lastCommitMs: 0, lastCommitRows: 0 }
  const deviceKeys = new Map<string, number>()
  const sensorKeys = new Map<string, number>()
  const streamKeys = new Map<string, number>()
  const watchers = createSampleWatchers(logger)
  const follower = createSampleFollower(reads, watchers, { everyMs: opts.followOthersMs ?? 1000 }, logger)
  let ackSink: ((acks: StoredAck[]) => void) | undefined

  let queue: Queued[] = []
  let queuedRows = 0
  /** performance.now() of the first write queued since the last group began. */
  let queuedSince = 0
  // Writes above their stream's mark, waiting for a group in which the earlier batch is there; they go first in it.
  let waiting: Write[] = []
  let timer: NodeJS.Timeout | undefined
  let writing: Promise<void> | undefined
  let closed = false
  // Set by close(): nothing waits any more.
  let closing = false
  // Day partitions are made through this time; a group past it makes the next days first.
  let partitionsUntil = 0

  function enqueue(q: Queued, rows: number): void {
    if (closed) throw new Error('the telemetry store is closed')
    if (queue.length === 0) queuedSince = performance.now()
    queue.push(q)
    queuedRows += rows
    if (queuedRows >= opts.maxGroupRows) schedule(0)
    else schedule(opts.flushDelayMs)
  }

  function schedule(delayMs: number): void {
    if (writing) return // the running group schedules the next when it ends
    if (timer && delayMs > 0) return
    if (timer) clearTimeout(timer)
    timer = setTimeout(() => { timer = undefined; void runGroup() }, delayMs)
  }

  async function runGroup(): Promise<void> {
    if (writing || (queue.length === 0 && waiting.length === 0)) return
    const group = waiting.length === 0 ? queue : [...waiting, ...queue]
    const rows = queuedRows
    queue = []
    queuedRows = 0
    waiting = []
    writing = writeGroup(group, rows)
    await writing
    writing = undefined
    if (queue.length > 0 || waiting.length > 0) schedule(queuedRows >= opts.maxGroupRows ? 0 : opts.flushDelayMs)
  }

  /** Makes the keys of new device ids, sensor names and streams, each committed on its own (they never change once made). */
  async function internKeys(group: readonly Queued[], now: number): Promise<void> {
    const devices = new Set<string>()
    const sensors = new Set<string>()
    const streams = new Map<string, [string, string]>()
    const asked = new Map<string, [string, string]>()
    for (const q of group) {
      const id = streamId(q.deviceId, q.storeId)
      if (streamKeys.has(id)) continue
      if (q.kind === 'mark') { asked.set(id, [q.deviceId, q.storeId]); continue }
      streams.set(id, [q.deviceId, q.storeId])
    }
    for (const q of group) {
      if (q.kind === 'mark') continue
      if (!deviceKeys.has(q.deviceId)) devices.add(q.deviceId)
      if (q.kind === 'samples') for (const s of q.items as readonly Sample[]) if (!sensorKeys.has(s.sensor)) sensors.add(s.sensor)
    }
    if (devices.size > 0) {
      const ids = [...devices].sort()
      await pool.query('INSERT INTO device_keys (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING', [ids])
      for (const r of (await pool.query<{ key: number; id: string }>('SELECT key, id FROM device_keys WHERE id = ANY($1::text[])', [ids])).rows) deviceKeys.set(r.id, r.key)
    }
    if (sensors.size > 0) {
      const names = [...sensors].sort()
      await pool.query('INSERT INTO sensor_keys (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING', [names])
      for (const r of (await pool.query<{ key: number; name: string }>('SELECT key, name FROM sensor_keys WHERE name = ANY($1::text[])', [names])).rows) sensorKeys.set(r.name, r.key)
    }
    // A stream is made (mark 0) by the first batch to reach any hub; asking for a mark makes none.
    if (streams.size > 0) {
      const pairs = [...streams.values()].sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1))
      await pool.query(`INSERT INTO streams (device_id, store_id, up_to, updated_at)
        SELECT d, s, 0, $3 FROM unnest($1::text[], $2::text[]) AS u(d, s) ON CONFLICT DO NOTHING`, [pairs.map((p) => p[0]), pairs.map((p) => p[1]), now])
    }
    for (const pairs of [streams, asked]) {
      if (pairs.size === 0) continue
      const list = [...pairs.values()]
      const { rows } = await pool.query<{ key: number; device_id: string; store_id: string }>(`
        SELECT s.key, s.device_id, s.store_id FROM streams s JOIN unnest($1::text[], $2::text[]) AS u(d, st) ON s.device_id = u.d AND s.store_id = u.st`,
      [list.map((p) => p[0]), list.map((p) => p[1])])
      for (const r of rows) streamKeys.set(streamId(r.device_id, r.store_id), r.key)
    }
  }

  /** Locks the group's streams in key order and returns their committed marks. */
  async function lockMarks(c: pg.PoolClient, keys: readonly number[]): Promise<Map<number, number>> {
    const { rows } = await c.query<{ key: number; up_to: number }>('SELECT key, up_to FROM streams WHERE key = ANY($1::int8[]) ORDER BY key FOR UPDATE', [keys])
    return new Map(rows.map((r) => [r.key, r.up_to]))
  }

  /**
   * Decides each write against the marks, in queue order, advancing them as
   * it goes; then tries the writes above their mark again while that fills
   * a gap (a waiting batch whose predecessor came later in the same group).
   */
  function plan(writes: readonly Write[], marks: Map<number, number>): Planned[] {
    const planned = writes.map((w) => planOne(w, marks))
    for (let again = true; again;) {
      again = false
      for (let i = 0; i < planned.length; i++) {
        const p = planned[i]!
        if (p.gap && (marks.get(p.streamKey) ?? 0) >= p.write.prev) {
          planned[i] = planOne(p.write, marks)
          again = true
        }
      }
    }
    return planned
  }

  function planOne(w: Write, marks: Map<number, number>): Planned {
    const key = streamKeys.get(streamId(w.deviceId, w.storeId))!
    const mark = marks.get(key)
    // Every stream of the group was made before it and locked in it: a missing row is the database changed under the hub.
    if (mark === undefined) throw Object.assign(new Error(`the stream of ${w.deviceId} (${w.storeId}) is missing from the streams table`), { code: 'XX000' })
    if (mark < w.prev) return { write: w, streamKey: key, samples: [], events: [], top: mark, gap: true }
    let top = mark
    const samples: Sample[] = []
    const events: DeviceEvent[] = []
    for (const item of w.items) {
      if (item.seq <= mark) continue
      if (w.kind === 'samples') samples.push(item as Sample)
      else events.push(item as DeviceEvent)
      top = item.seq
    }
    marks.set(key, top)
    return { write: w, streamKey: key, samples, events, top, gap: false }
  }

  /** Inserts the planned rows and moves the marks: three statements, whatever the group's size. */
  async function insert(c: pg.PoolClient, planned: readonly Planned[], now: number): Promise<void> {
    const s = { dev: [] as number[], ts: [] as number[], seq: [] as number[], stream: [] as number[], sensor: [] as number[], value: [] as number[], unsynced: [] as Array<boolean | null> }
    const e = { dev: [] as number[], stream: [] as number[], ts: [] as number[], seq: [] as number[], kind: [] as string[], level: [] as string[], message: [] as string[], data: [] as Array<string | null> }
    const marks = new Map<number, number>()
    for (const p of planned) {
      if (p.gap) continue
      const dk = deviceKeys.get(p.write.deviceId)!
      for (const x of p.samples) {
        s.dev.push(dk); s.ts.push(x.ts); s.seq.push(x.seq); s.stream.push(p.streamKey)
        s.sensor.push(sensorKeys.get(x.sensor)!); s.value.push(x.value); s.unsynced.push(x.unsynced ? true : null)
      }
      for (const x of p.events) {
        e.dev.push(dk); e.stream.push(p.streamKey); e.ts.push(x.ts); e.seq.push(x.seq)
        e.kind.push(x.kind); e.level.push(x.level); e.message.push(x.message); e.data.push(x.data === undefined ? null : JSON.stringify(x.data))
      }
      if (p.samples.length + p.events.length > 0 && (marks.get(p.streamKey) ?? -1) < p.top) marks.set(p.streamKey, p.top)
    }
    if (s.dev.length > 0) {
      await c.query(`INSERT INTO samples (device_key, ts, seq, stream_key, sensor_key, value, unsynced)
        SELECT * FROM unnest($1::int4[], $2::int8[], $3::int8[], $4::int8[], $5::int4[], $6::float8[], $7::bool[])`,
      [s.dev, s.ts, s.seq, s.stream, s.sensor, s.value, s.unsynced])
    }
    if (e.dev.length > 0) {
      await c.query(`INSERT INTO device_events (device_key, stream_key, ts, seq, kind, level, message, data)
        SELECT * FROM unnest($1::int4[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[])`,
      [e.dev, e.stream, e.ts, e.seq, e.kind, e.level, e.message, e.data])
    }
    if (marks.size > 0) {
      await c.query('UPDATE streams SET up_to = v.up_to, updated_at = $3 FROM unnest($1::int8[], $2::int8[]) AS v(key, up_to) WHERE streams.key = v.key',
        [[...marks.keys()], [...marks.values()], now])
    }
  }

  /**
   * Writes the group in one transaction; on a failure of a row's own, again
   * write by write in savepoints. Returns what was decided, and the writes
   * that failed on their own with why.
   */
  async function transact(c: pg.PoolClient, writes: readonly Write[], keys: readonly number[], now: number, isolate: boolean): Promise<{ planned: Planned[]; failed: Map<Write, Error>; marks: Map<number, number> }> {
    await c.query('BEGIN')
    try {
      const marks = await lockMarks(c, keys)
      const failed = new Map<Write, Error>()
      let planned: Planned[]
      if (!isolate) {
        planned = plan(writes, marks)
        await insert(c, planned, now)
      } else {
        planned = []
        const failedStreams = new Set<number>()
        for (const w of writes) {
          const key = streamKeys.get(streamId(w.deviceId, w.storeId))!
          // A stream whose earlier write failed stores nothing more in this group: no ack may cover the failed one.
          if (failedStreams.has(key)) continue
          const before = marks.get(key) ?? 0
          const p = planOne(w, marks)
          await c.query('SAVEPOINT w')
          try {
            await insert(c, [p], now)
            await c.query('RELEASE SAVEPOINT w')
            planned.push(p)
          } catch (err) {
            await c.query('ROLLBACK TO SAVEPOINT w')
            if (pgBlameOf(err) === 'database') throw err
            marks.set(key, before)
            failedStreams.add(key)
            failed.set(w, err instanceof Error ? err : new Error(String(err)))
          }
        }
      }
      await c.query('COMMIT')
      return { planned, failed, marks }
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined)
      throw err
    }
  }

  async function writeGroup(group: readonly Queued[], rows: number): Promise<void> {
    // From the transaction's start: making partitions and keys is not what a commit costs.
    let t0 = performance.now()
    let now = Date.now()
    for (const q of group) if (q.kind !== 'mark' && q.now > now) now = q.now
    const writes = group.filter((q): q is Write => q.kind !== 'mark')
    let result: Awaited<ReturnType<typeof transact>> | undefined
    try {
      if (now + DAY_MS > partitionsUntil) await makePartitions(now)
      await internKeys(group, now)
      const keys = [...new Set(group.map((q) => streamKeys.get(streamId(q.deviceId, q.storeId))).filter((k): k is number => k !== undefined))].sort((a, b) => a - b)
      t0 = performance.now()
      result = await withClient(pool, async (c) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await transact(c, writes, keys, now, false)
          } catch (err) {
            if (isRetryable(err) && attempt < 3) continue
            if (pgBlameOf(err) === 'database') throw err
            logger.warn({ err: (err as Error).message }, 'a telemetry group failed on a row of its own: writing it again batch by batch')
            stats.isolatedGroups++
            return await transact(c, writes, keys, now, true)
          }
        }
      })
    } catch (err) {
      stats.failedCommits++
      logger.error({ err: (err as Error).message, batches: writes.length, rows }, 'a telemetry group was not stored: nothing of it is acked, its senders resend')
      return
    }
    stats.commits++
    stats.lastCommitMs = performance.now() - t0
    stats.lastCommitRows = rows
    after(group, result)
  }

  /** After the commit: counters, one ack per stream, live views, and the failed writes' owners. */
  function after(group: readonly Queued[], result: { planned: Planned[]; failed: Map<Write, Error>; marks: Map<number, number> }): void {
    const acks = new Map<string, StoredAck>()
    const watchedStored: string[] = []
    const t = performance.now()
    // A loaded database commits slower, and the other hub's group with it: the wait grows with this hub's own commits.
    const wait = opts.gapWaitMs === 0 ? 0 : Math.max(opts.gapWaitMs, 4 * stats.lastCommitMs)
    for (const p of result.planned) {
      const w = p.write
      if (p.gap) {
        if (!closing && t - (w.waitingSince ?? t) < wait) {
          if (w.waitingSince === undefined) stats.gapsWaited++
          waiting.push(w.waitingSince === undefined ? { ...w, waitingSince: t } : w)
        } else {
          counters.gapsRefused++
        }
        continue
      }
      const stored = p.samples.length + p.events.length
      counters.batches++
      if (w.kind === 'samples') {
        counters.samplesStored += stored
        counters.samplesDuplicate += w.items.length - stored
      } else {
        counters.eventsStored += stored
        counters.eventsDuplicate += w.items.length - stored
      }
      // The highest mark of the stream in the group: a waiting batch planned again after its predecessor comes first in the list.
      const id = streamId(w.deviceId, w.storeId)
      if ((acks.get(id)?.upTo ?? -1) < p.top) acks.set(id, { deviceId: w.deviceId, storeId: w.storeId, upTo: p.top })
      if (p.samples.length > 0 && follower.watched(w.deviceId)) watchedStored.push(w.deviceId)
    }
    // Live charts: their devices are read now, so they see what this group stored (and what other hubs did) in order.
    follower.committed(watchedStored)
    for (const q of group) {
      if (q.kind !== 'mark') continue
      const key = streamKeys.get(streamId(q.deviceId, q.storeId))
      acks.set(streamId(q.deviceId, q.storeId), { deviceId: q.deviceId, storeId: q.storeId, upTo: key === undefined ? 0 : result.marks.get(key) ?? 0 })
    }
    if (acks.size > 0) {
      try {
        ackSink?.([...acks.values()])
      } catch (err) {
        logger.error({ err }, 'publishing acks failed')
      }
    }
    for (const [w, err] of result.failed) {
      stats.failedOps++
      try {
        w.onFailed?.(err)
      } catch (e) {
        logger.error({ err: e }, 'a failed write\'s owner failed')
      }
    }
  }

  /**
   * Makes the day partitions around now. If that fails (a role without
   * CREATE, a lock held too long), the rows still go in, to the DEFAULT
   * partition: it is logged and tried again in a minute, and ingest goes on.
   */
  async function makePartitions(now: number): Promise<void> {
    try {
      for (const table of ['samples', 'device_events'] as const) await ensureDayPartitions(pool, table, now - DAY_MS, now + 2 * DAY_MS, logger)
      partitionsUntil = now - (now % DAY_MS) + 3 * DAY_MS
    } catch (err) {
      partitionsUntil = now - DAY_MS + 60_000
      logger.warn({ err: (err as Error).message }, 'the day partitions could not be made: rows go to the default partition meanwhile; trying again in a minute')
    }
  }

  const parseData = (r: PgEventRow): EventRow => ({ ...r, data: r.data === null ? undefined : JSON.parse(r.data) as unknown })

  const store: TelemetryStore = {
    storeSamples(deviceId, storeId, prev, now, samples, onFailed) {
      enqueue({ kind: 'samples', deviceId, storeId, prev, now, items: samples, onFailed }, samples.length)
    },
    storeEvents(deviceId, storeId, prev, now, events, onFailed) {
      enqueue({ kind: 'events', deviceId, storeId, prev, now, items: events, onFailed }, events.length)
    },
    announceMark(deviceId, storeId) {
      enqueue({ kind: 'mark', deviceId, storeId }, 0)
    },
    async markOf(deviceId, storeId) {
      const { rows } = await reads.query<{ up_to: number }>('SELECT up_to FROM streams WHERE device_id = $1 AND store_id = $2', [deviceId, storeId])
      return rows[0]?.up_to ?? 0
    },
    reactWith(_r: StoredReaction) {
      // The rules keep their state in the hub's SQLite file and react inside its transaction;
      // on PostgreSQL they need a store of their own there first (issue #18, next part).
      throw new Error('rules do not run on a hub on PostgreSQL yet')
    },
    onAcks(sink) { ackSink = sink },
    counters: () => ({ ...counters }),
    watchSamples: (deviceId, listener) => follower.watch(deviceId, listener),
    async streamsOf(deviceId): Promise<StreamRow[]> {
      const { rows } = await reads.query<{ store_id: string; up_to: number; updated_at: number }>(
        'SELECT store_id, up_to, updated_at FROM streams WHERE device_id = $1 ORDER BY updated_at DESC', [deviceId])
      return rows.map((r) => ({ storeId: r.store_id, upTo: r.up_to, updatedAt: r.updated_at }))
    },
    async query(q: TelemetryQuery): Promise<SampleRow[] | BucketRow[]> {
      if (q.bucketMs !== undefined) {
        const { rows } = await reads.query<BucketRow>(`
          SELECT k.name AS sensor, s.ts - s.ts % $5 AS ts, count(*) AS count, avg(s.value) AS avg, min(s.value) AS min, max(s.value) AS max
          FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
          WHERE s.device_key = (SELECT key FROM device_keys WHERE id = $1) AND s.ts >= $2 AND s.ts < $3
            AND ($4::text IS NULL OR k.name = $4)
          GROUP BY k.name, s.ts - s.ts % $5 ORDER BY 2, 1 LIMIT $6`, [q.deviceId, q.sinceMs, q.untilMs, q.sensor ?? null, q.bucketMs, q.limit])
        return rows
      }
      const { rows } = await reads.query<PgSampleRow>(`
        SELECT k.name AS sensor, s.ts, s.seq, s.value, s.unsynced FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
        WHERE s.device_key = (SELECT key FROM device_keys WHERE id = $1) AND s.ts >= $2 AND s.ts < $3
          AND ($4::text IS NULL OR k.name = $4)
        ORDER BY s.ts, s.seq LIMIT $5`, [q.deviceId, q.sinceMs, q.untilMs, q.sensor ?? null, q.limit])
      return rows.map(sampleRowOfPg)
    },
    async events(deviceId, sinceMs, untilMs, limit) {
      const { rows } = await reads.query<PgEventRow>(`
        SELECT ts, seq, kind, level, message, data FROM device_events
        WHERE device_key = (SELECT key FROM device_keys WHERE id = $1) AND ts >= $2 AND ts < $3 ORDER BY ts DESC, seq DESC LIMIT $4`,
      [deviceId, sinceMs, untilMs, limit])
      return rows.map(parseData)
    },
    async eventsOfKind(deviceId, kind, sinceMs, untilMs, limit) {
      const { rows } = await reads.query<PgEventRow>(`
        SELECT ts, seq, kind, level, message, data FROM device_events
        WHERE device_key = (SELECT key FROM device_keys WHERE id = $1) AND ts >= $2 AND ts < $3 AND kind = $4 ORDER BY ts, seq LIMIT $5`,
      [deviceId, sinceMs, untilMs, kind, limit])
      return rows.map(parseData)
    },
    async prune(cutoffMs, chunkRows = 5000) {
      return {
        samples: await pruneBefore(pool, 'samples', cutoffMs, chunkRows),
        events: await pruneBefore(pool, 'device_events', cutoffMs, chunkRows),
      }
    },
  }

  /**
   * Writes what is queued now and waits for it (and for a group already
   * being written). Unlike the SQLite writer's, it may leave writes waiting
   * for their device's earlier batch (see gapWaitMs); each gets one more try
   * here.
   */
  async function flush(): Promise<void> {
    if (timer) { clearTimeout(timer); timer = undefined }
    if (writing) await writing
    // Once with what waits, then until nothing new is queued: waiting writes get one more try here, not a loop.
    await runGroup()
    while (writing || queue.length > 0) {
      if (writing) await writing
      else await runGroup()
    }
    // What is committed has reached the live watchers.
    await follower.readAll()
  }

  return {
    ...store,
    flush,
    stats: (): PostgresWriterStats => {
      // Writes waiting for their device's earlier batch count too: they have not been stored either.
      const since = Math.min(queue.length === 0 ? Infinity : queuedSince, ...waiting.map((w) => w.waitingSince ?? Infinity))
      return { ...stats, queuedRows, oldestQueuedMs: since === Infinity ? 0 : performance.now() - since }
    },
    /** Writes what is queued, then takes no more; what still waits gets one last try and is refused (its agent resends to another hub). The pool is its owner's to end. */
    async close(): Promise<void> {
      closing = true
      await follower.close()
      await flush()
      if (timer) { clearTimeout(timer); timer = undefined }
      closed = true
    },
  }
}

export type PostgresTelemetryStore = ReturnType<typeof createPostgresTelemetryStore>
