import { join } from 'node:path'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import type { DeviceEvent, Sample } from '../protocol/messages.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { createPostgresTelemetryStore } from '../hub/telemetry/postgres.js'
import { createSqliteTelemetryStore } from '../hub/telemetry/sqlite.js'
import type { SampleRow, StoredAck, TelemetryStore } from '../hub/telemetry/store.js'
import { tempDir } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * One contract, two telemetry stores: the hub's own SQLite file and a
 * PostgreSQL shared by several hubs (issue #18). The same cases run against
 * both, so a behaviour the rest of the hub relies on cannot differ between
 * them. Both are driven directly (no broker): what is checked here is the
 * store, through its interface.
 */

interface Opened {
  readonly store: TelemetryStore
  readonly acks: StoredAck[]
  /** Until everything queued is committed and its after-commit steps have run. */
  readonly settle: () => Promise<void>
  readonly close: () => Promise<void>
}

const { freshDatabase, closers } = privatePostgres('pg-telemetry')

function sqlite(): Opened {
  const tmp = tempDir('telemetry-store')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  // An hour: the cases settle by flushing, never by the timer.
  const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 100_000 }, silentLogger())
  const store = createSqliteTelemetryStore(db, writer, silentLogger())
  const acks: StoredAck[] = []
  store.onAcks((a) => { acks.push(...a) })
  const opened: Opened = {
    store, acks,
    settle: async () => { writer.flush() },
    close: async () => { writer.close(); db.close(); tmp.remove() },
  }
  closers.push(() => opened.close())
  return opened
}

/** A fresh database on the private cluster; `hubs` stores on it, each with its own pool, as separate hubs have. */
async function postgres(hubs = 1): Promise<{ url: string; opened: Opened[]; admin: pg.Pool }> {
  const url = await freshDatabase()
  const admin = openPostgres(url, silentLogger(), { maxConnections: 2 })
  closers.push(() => admin.end())
  await migratePostgres(admin, silentLogger())
  const opened: Opened[] = []
  for (let i = 0; i < hubs; i++) {
    const pool = openPostgres(url, silentLogger(), { maxConnections: 4, applicationName: `hub-${i}` })
    // A batch above the mark is refused at once, as by the SQLite store: the contract of a hub alone.
    const store = createPostgresTelemetryStore(pool, { flushDelayMs: 3_600_000, maxGroupRows: 100_000, gapWaitMs: 0 }, silentLogger())
    const acks: StoredAck[] = []
    store.onAcks((a) => { acks.push(...a) })
    const o: Opened = { store, acks, settle: () => store.flush(), close: async () => { await store.close(); await pool.end() } }
    closers.push(() => o.close())
    opened.push(o)
  }
  return { url, opened, admin }
}

/** Samples from..from+n-1, each at ts0 + its seq (ms): time order is seq order. */
const BASE = Date.now()
const samples = (from: number, n: number, ts0 = BASE, sensor = 'temp'): Sample[] =>
  Array.from({ length: n }, (_, i) => ({ seq: from + i, ts: ts0 + from + i, sensor, value: (from + i) / 2 }))

const backends: Array<[string, () => Promise<Opened>]> = [
  ['SQLite', async () => sqlite()],
  ['PostgreSQL', async () => (await postgres()).opened[0]!],
]

describe.each(backends)('the telemetry store on %s', (name, open) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('stores what is above the mark once, counts replays as duplicates, and acks the mark after the commit', async () => {
    const { store, acks, settle } = await open()
    store.storeSamples('d1', 'st', 0, Date.now(), samples(1, 5))
    expect(acks).toEqual([])
    await settle()
    expect(acks).toEqual([{ deviceId: 'd1', storeId: 'st', upTo: 5 }])
    // A replay of 3..7 after a lost ack: 3..5 are duplicates, 6..7 new.
    store.storeSamples('d1', 'st', 2, Date.now(), samples(3, 5))
    await settle()
    expect(acks.at(-1)).toEqual({ deviceId: 'd1', storeId: 'st', upTo: 7 })
    expect(await store.markOf('d1', 'st')).toBe(7)
    const rows = (await store.query({ deviceId: 'd1', sinceMs: 0, untilMs: Date.now() + 60_000, limit: 100 })) as SampleRow[]
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7])
    expect(store.counters()).toMatchObject({ samplesStored: 7, samplesDuplicate: 3, batches: 2, gapsRefused: 0 })
  })

  it.skipIf(skip)('refuses a batch whose prev is above the mark, with no ack, and takes it once the gap is filled', async () => {
    const { store, acks, settle } = await open()
    store.storeSamples('d1', 'st', 0, Date.now(), samples(1, 2))
    store.storeSamples('d1', 'st', 4, Date.now(), samples(5, 2))
    await settle()
    expect(acks).toEqual([{ deviceId: 'd1', storeId: 'st', upTo: 2 }])
    expect(store.counters().gapsRefused).toBe(1)
    store.storeSamples('d1', 'st', 2, Date.now(), samples(3, 2))
    store.storeSamples('d1', 'st', 4, Date.now(), samples(5, 2))
    await settle()
    expect(acks.at(-1)).toEqual({ deviceId: 'd1', storeId: 'st', upTo: 6 })
    const rows = (await store.query({ deviceId: 'd1', sinceMs: 0, untilMs: Date.now() + 60_000, limit: 100 })) as SampleRow[]
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6])
  })

  it.skipIf(skip)('announces a mark after what was queued before it, and 0 for a stream never written, without making it', async () => {
    const { store, acks, settle } = await open()
    store.storeSamples('d1', 'st', 0, Date.now(), samples(1, 3))
    store.announceMark('d1', 'st')
    store.announceMark('d2', 'new')
    await settle()
    expect(acks).toContainEqual({ deviceId: 'd1', storeId: 'st', upTo: 3 })
    expect(acks).toContainEqual({ deviceId: 'd2', storeId: 'new', upTo: 0 })
    expect(await store.streamsOf('d2')).toEqual([])
    expect(await store.markOf('d2', 'new')).toBe(0)
  })

  it.skipIf(skip)('answers raw rows by sensor, buckets, the unsynced flag, and streams newest first', async () => {
    const { store, settle } = await open()
    const t0 = 1_700_000_000_000
    store.storeSamples('d1', 'a', 0, t0, [
      { seq: 1, ts: t0, sensor: 'temp', value: 1 }, { seq: 2, ts: t0 + 500, sensor: 'hum', value: 40 },
      { seq: 3, ts: t0 + 1000, sensor: 'temp', value: 3 }, { seq: 4, ts: t0 + 1500, sensor: 'temp', value: 5, unsynced: true },
    ])
    await settle()
    store.storeSamples('d1', 'b', 0, t0 + 10, samples(1, 1, t0 + 5000))
    await settle()
    const temp = (await store.query({ deviceId: 'd1', sensor: 'temp', sinceMs: t0, untilMs: t0 + 2000, limit: 10 })) as SampleRow[]
    expect(temp).toEqual([
      { sensor: 'temp', ts: t0, seq: 1, value: 1 }, { sensor: 'temp', ts: t0 + 1000, seq: 3, value: 3 },
      { sensor: 'temp', ts: t0 + 1500, seq: 4, value: 5, unsynced: true },
    ])
    const buckets = await store.query({ deviceId: 'd1', sinceMs: t0, untilMs: t0 + 2000, bucketMs: 1000, limit: 10 })
    expect(buckets).toEqual([
      { sensor: 'hum', ts: t0, count: 1, avg: 40, min: 40, max: 40 },
      { sensor: 'temp', ts: t0, count: 1, avg: 1, min: 1, max: 1 },
      { sensor: 'temp', ts: t0 + 1000, count: 2, avg: 4, min: 3, max: 5 },
    ])
    expect(await store.query({ deviceId: 'nobody', sinceMs: 0, untilMs: t0 * 2, limit: 10 })).toEqual([])
    expect((await store.streamsOf('d1')).map((s) => [s.storeId, s.upTo])).toEqual([['b', 1], ['a', 4]])
  })

  it.skipIf(skip)('keeps events with their data, newest first, and by kind oldest first', async () => {
    const { store, acks, settle } = await open()
    const t0 = 1_700_000_000_000
    const events: DeviceEvent[] = [
      { seq: 1, ts: t0, kind: 'door', level: 'info', message: 'opened', data: { by: 'alice', n: 1 } },
      { seq: 2, ts: t0 + 1, kind: 'fan', level: 'warn', message: 'slow' },
      { seq: 3, ts: t0 + 2, kind: 'door', level: 'info', message: 'closed', data: { list: [1, 'two'], nested: { ok: true } } },
    ]
    store.storeEvents('d1', 'ev', 0, t0, events)
    await settle()
    expect(acks).toEqual([{ deviceId: 'd1', storeId: 'ev', upTo: 3 }])
    expect((await store.events('d1', t0, t0 + 10, 10)).map((e): unknown[] => [e.seq, e.message, e.data])).toEqual([[3, 'closed', { list: [1, 'two'], nested: { ok: true } }], [2, 'slow', undefined], [1, 'opened', { by: 'alice', n: 1 }]])
    expect((await store.eventsOfKind('d1', 'door', t0, t0 + 10, 10)).map((e) => e.seq)).toEqual([1, 3])
    expect(store.counters()).toMatchObject({ eventsStored: 3, eventsDuplicate: 0 })
  })

  it.skipIf(skip)('tells a live watcher of fresh samples only, after the commit', async () => {
    const { store, settle } = await open()
    const seen: number[] = []
    const stop = store.watchSamples('d1', (rows) => { seen.push(...rows.map((r) => r.seq)) })
    store.storeSamples('d1', 'st', 0, Date.now(), samples(1, 3))
    expect(seen).toEqual([])
    await settle()
    store.storeSamples('d1', 'st', 1, Date.now(), samples(2, 3))
    store.storeSamples('d2', 'st', 0, Date.now(), samples(1, 3))
    await settle()
    expect(seen).toEqual([1, 2, 3, 4])
    stop()
    store.storeSamples('d1', 'st', 4, Date.now(), samples(5, 1))
    await settle()
    expect(seen).toEqual([1, 2, 3, 4])
  })

  it.skipIf(skip)('prunes samples and events older than the cutoff, and keeps the rest', async () => {
    const { store, settle } = await open()
    const now = Date.now()
    const day = 86_400_000
    // Ten days back (no day partition on PostgreSQL: the default one), two days back, and now.
    store.storeSamples('d1', 'st', 0, now, [...samples(1, 3, now - 10 * day), ...samples(4, 2, now - 2 * day), ...samples(6, 2, now)])
    store.storeEvents('d1', 'ev', 0, now, [{ seq: 1, ts: now - 10 * day, kind: 'k', level: 'info', message: 'old' }, { seq: 2, ts: now, kind: 'k', level: 'info', message: 'new' }])
    await settle()
    expect(await store.prune(now - 5 * day, 2)).toEqual({ samples: 3, events: 1 })
    expect(((await store.query({ deviceId: 'd1', sinceMs: 0, untilMs: now + day, limit: 100 })) as SampleRow[]).map((r) => r.seq)).toEqual([4, 5, 6, 7])
    expect(await store.prune(now - day, 2)).toEqual({ samples: 2, events: 0 })
    expect(((await store.query({ deviceId: 'd1', sinceMs: 0, untilMs: now + day, limit: 100 })) as SampleRow[]).map((r) => r.seq)).toEqual([6, 7])
    expect((await store.events('d1', 0, now + day, 10)).map((e) => e.message)).toEqual(['new'])
    // The marks stay: a replay of pruned rows is still a duplicate.
    store.storeSamples('d1', 'st', 0, now, samples(1, 3, now - 10 * day))
    await settle()
    expect(((await store.query({ deviceId: 'd1', sinceMs: 0, untilMs: now + day, limit: 100 })) as SampleRow[]).map((r) => r.seq)).toEqual([6, 7])
  })
})
