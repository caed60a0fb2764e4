import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { silentLogger, type Logger } from '../common/logger.js'
import type { Sample } from '../protocol/messages.js'
import { ensureDayPartitions, partitionsOf, DAY_MS } from '../hub/storage/postgres/partitions.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres, PG_SCHEMA_VERSION } from '../hub/storage/postgres/schema.js'
import { createPostgresTelemetryStore, type PostgresTelemetryStore } from '../hub/telemetry/postgres.js'
import type { StoredAck } from '../hub/telemetry/store.js'
import { waitFor } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * Telemetry on a PostgreSQL shared by several hubs (issue #18): what only a
 * shared database can get wrong. Two stores with a pool each stand for two
 * hubs; they are driven directly, as a shared subscription would feed them,
 * including the same batch to both at once.
 */

const { freshDatabase, closers } = privatePostgres('pg-cluster')

async function freshDb(): Promise<{ url: string; admin: pg.Pool }> {
  const url = await freshDatabase()
  const admin = openPostgres(url, silentLogger(), { maxConnections: 3, applicationName: 'test-admin' })
  closers.push(() => admin.end())
  return { url, admin }
}

interface Hub { readonly store: PostgresTelemetryStore; readonly acks: StoredAck[] }

/** A store standing for a hub; its groups are written by flush() only (the timer is an hour), and a batch above its mark waits `gapWaitMs`. */
function hub(url: string, name: string, gapWaitMs = 3_600_000): Hub {
  const logger = silentLogger()
  const pool = openPostgres(url, logger, { maxConnections: 4, applicationName: name })
  const store = createPostgresTelemetryStore(pool, { flushDelayMs: 3_600_000, maxGroupRows: 100_000, gapWaitMs }, logger)
  const acks: StoredAck[] = []
  store.onAcks((a) => { acks.push(...a) })
  closers.push(async () => { await store.close(); await pool.end() })
  return { store, acks }
}

const T0 = Date.now()
const batch = (from: number, n: number): Sample[] => Array.from({ length: n }, (_, i) => ({ seq: from + i, ts: T0 + from + i, sensor: 'temp', value: from + i }))

/** A tiny deterministic random source, so a failure can be run again as it was. */
function random(seed: number): () => number {
  let x = seed
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648
    return x / 2147483648
  }
}

describe.skipIf(SKIP_WITHOUT_POSTGRES)('telemetry on PostgreSQL shared by two hubs', () => {
  it('stores every sample exactly once when both hubs get batches of the same devices at once, twice over, out of order', async () => {
    const { url, admin } = await freshDb()
    await migratePostgres(admin, silentLogger())
    const hubs = [hub(url, 'hub-a'), hub(url, 'hub-b')]
    const DEVICES = 20
    const BATCHES = 40
    const PER = 5
    const TOTAL = BATCHES * PER
    const rnd = random(18)
    const acked = new Array<number>(DEVICES).fill(0)
    const seen = [0, 0]
    let rounds = 0
    // As an agent does: up to 4 batches in flight above the acked mark, all sent again
    // until acked. Each goes to one hub at random, a third of them to both (a redelivery
    // after a hub's crash), and in a shuffled order (two hubs race for one device).
    while (acked.some((a) => a < TOTAL)) {
      rounds++
      expect(rounds, 'the run ends by itself').toBeLessThan(400)
      const sends: Array<[number, number, number]> = []
      for (let d = 0; d < DEVICES; d++) {
        for (let b = acked[d]! / PER; b < Math.min(BATCHES, acked[d]! / PER + 4); b++) {
          const first = rnd() < 0.5 ? 0 : 1
          sends.push([first, d, b])
          if (rnd() < 1 / 3) sends.push([1 - first, d, b])
        }
      }
      for (let i = sends.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1))
        ;[sends[i], sends[j]] = [sends[j]!, sends[i]!]
      }
      for (const [h, d, b] of sends) hubs[h]!.store.storeSamples(`dev-${d}`, 'st', b * PER, Date.now(), batch(b * PER + 1, PER))
      // Both hubs' groups start together: the streams table is held until both wait on it.
      const busy = new Set(sends.map(([h]) => h)).size
      const gate = await admin.connect()
      // A connection the server ends (it should not) fails its next query, in the test, not the process.
      gate.on('error', () => undefined)
      let flushed: Promise<unknown> | undefined
      try {
        await gate.query('BEGIN')
        await gate.query('LOCK TABLE streams IN EXCLUSIVE MODE')
        flushed = Promise.all(hubs.map((h) => h.store.flush()))
        // Until both wait, or 2 s: a hub whose batches all wait behind a gap this round opens no group, and the
        // gate only makes the race likelier (the run's figures below show it happened); it must not hold the
        // table for the server's idle-in-transaction limit.
        for (const until = Date.now() + 2000; Date.now() < until;) {
          const { rowCount } = await admin.query(`SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'hub-_' AND wait_event_type = 'Lock'`)
          if ((rowCount ?? 0) >= busy) break
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      } finally {
        await gate.query('ROLLBACK')
        gate.release()
      }
      await flushed
      hubs.forEach((h, i) => {
        for (const a of h.acks.slice(seen[i])) {
          const d = Number(a.deviceId.slice(4))
          // An ack never goes backwards or past what was sent.
          expect(a.upTo).toBeLessThanOrEqual(TOTAL)
          acked[d] = Math.max(acked[d]!, a.upTo)
        }
        seen[i] = h.acks.length
      })
    }
    const { rows } = await admin.query<{ device: string; n: number; distinct: number; min: number; max: number }>(`
      SELECT k.id AS device, count(*) AS n, count(DISTINCT s.seq) AS distinct, min(s.seq) AS min, max(s.seq) AS max
      FROM samples s JOIN device_keys k ON k.key = s.device_key GROUP BY k.id ORDER BY k.id`)
    expect(rows).toHaveLength(DEVICES)
    for (const r of rows) expect(r, r.device).toMatchObject({ n: TOTAL, distinct: TOTAL, min: 1, max: TOTAL })
    const [a, b] = hubs.map((h) => h.store.counters())
    // Batches did reach a hub before their device's earlier one was stored there, and waited for it.
    expect(hubs[0]!.store.stats().gapsWaited + hubs[1]!.store.stats().gapsWaited).toBeGreaterThan(0)
    // The row locks kept the hubs apart: no group ever ran into the other's rows (the primary key
    // would refuse those, and the group be written again batch by batch) and nothing failed.
    for (const h of hubs) expect(h.store.stats()).toMatchObject({ failedOps: 0, failedCommits: 0, isolatedGroups: 0 })
    // Lost 0, duplicates 0: the two hubs together stored each sample once, and turned the rest away.
    expect(a!.samplesStored + b!.samplesStored).toBe(DEVICES * TOTAL)
    expect(a!.samplesStored).toBeGreaterThan(0)
    expect(b!.samplesStored).toBeGreaterThan(0)
    expect(a!.samplesDuplicate + b!.samplesDuplicate).toBeGreaterThan(0)
    const { rows: marks } = await admin.query<{ up_to: number }>('SELECT up_to FROM streams')
    expect(marks.map((m) => m.up_to)).toEqual(new Array<number>(DEVICES).fill(TOTAL))
  }, 120_000)

  it('holds a batch that reaches one hub before the device\'s earlier batch is stored by the other, then stores it in order; refuses it once its wait is over', async () => {
    const { url, admin } = await freshDb()
    await migratePostgres(admin, silentLogger())
    const [a, b] = [hub(url, 'hub-a'), hub(url, 'hub-b')]
    // Batch 2 (prev 5) and 3 reach hub b first; batch 1 is at hub a, not yet written.
    b.store.storeSamples('d1', 'st', 5, Date.now(), batch(6, 5))
    b.store.storeSamples('d1', 'st', 10, Date.now(), batch(11, 5))
    a.store.storeSamples('d1', 'st', 0, Date.now(), batch(1, 5))
    await b.store.flush()
    expect(b.acks).toEqual([])
    expect(b.store.stats().gapsWaited).toBe(2)
    await a.store.flush()
    expect(a.acks).toEqual([{ deviceId: 'd1', storeId: 'st', upTo: 5 }])
    await b.store.flush()
    expect(b.acks).toEqual([{ deviceId: 'd1', storeId: 'st', upTo: 15 }])
    expect((await admin.query<{ seq: number }>('SELECT seq FROM samples ORDER BY seq')).rows.map((r) => r.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1))
    expect(b.store.counters()).toMatchObject({ samplesStored: 10, gapsRefused: 0 })

    // Its predecessor later in the same group: both stored in that group, one ack for the two, no wait.
    b.store.storeSamples('d1', 'st', 20, Date.now(), batch(21, 5))
    b.store.storeSamples('d1', 'st', 15, Date.now(), batch(16, 5))
    await b.store.flush()
    expect(b.acks.at(-1)).toEqual({ deviceId: 'd1', storeId: 'st', upTo: 25 })
    expect(b.store.stats().gapsWaited).toBe(2)

    // Its wait over (here 100 ms, or four of the hub's last commits if longer), it is refused, with no ack: the agent resends from its last ack.
    const brief = hub(url, 'hub-brief', 100)
    brief.store.storeSamples('d1', 'st', 30, Date.now(), batch(31, 5))
    await brief.store.flush()
    expect(brief.store.stats().gapsWaited).toBe(1)
    expect(brief.store.counters().gapsRefused).toBe(0)
    await new Promise((resolve) => setTimeout(resolve, Math.max(100, 4 * brief.store.stats().lastCommitMs) + 50))
    await brief.store.flush()
    expect(brief.store.counters().gapsRefused).toBe(1)
    expect(brief.acks).toEqual([])
    expect(await brief.store.markOf('d1', 'st')).toBe(25)

    // With no wait (a hub alone: the earlier batch was lost, not late), it is refused at once, with no ack.
    const alone = hub(url, 'hub-alone', 0)
    alone.store.storeSamples('d1', 'st', 30, Date.now(), batch(31, 5))
    await alone.store.flush()
    expect(alone.acks).toEqual([])
    expect(alone.store.counters().gapsRefused).toBe(1)
    // A hub that stops refuses what still waits: its agent resends to the hub that remains.
    b.store.storeSamples('d1', 'st', 30, Date.now(), batch(31, 5))
    await b.store.flush()
    expect(b.store.counters().gapsRefused).toBe(0)
    await b.store.close()
    expect(b.store.counters().gapsRefused).toBe(1)
  })

  it('refuses only the batch PostgreSQL cannot store (a NUL in text), stores and acks the rest of its group, and tells its owner why', async () => {
    const { url, admin } = await freshDb()
    await migratePostgres(admin, silentLogger())
    const { store, acks } = hub(url, 'hub-a', 0)
    const failures: string[] = []
    store.storeSamples('good-1', 'st', 0, Date.now(), batch(1, 3))
    store.storeEvents('bad', 'ev', 0, Date.now(), [{ seq: 1, ts: T0, kind: 'k', level: 'info', message: 'a\u0000b' }], (err) => { failures.push(err.message) })
    // The bad stream's next batch in the same group is not stored either: no ack may cover the refused one.
    store.storeEvents('bad', 'ev', 1, Date.now(), [{ seq: 2, ts: T0 + 1, kind: 'k', level: 'info', message: 'fine' }])
    store.storeSamples('good-2', 'st', 0, Date.now(), batch(1, 2))
    await store.flush()
    expect(failures).toHaveLength(1)
    expect(failures[0]).toMatch(/0x00/)
    expect(acks).toEqual(expect.arrayContaining([{ deviceId: 'good-1', storeId: 'st', upTo: 3 }, { deviceId: 'good-2', storeId: 'st', upTo: 2 }]))
    expect(acks.some((a) => a.deviceId === 'bad')).toBe(false)
    expect(await store.markOf('bad', 'ev')).toBe(0)
    expect((await admin.query('SELECT 1 FROM device_events')).rowCount).toBe(0)
    expect(store.stats()).toMatchObject({ commits: 1, failedOps: 1, failedCommits: 0, isolatedGroups: 1 })
  })

  it('stores and acks nothing of a group whose connection is lost mid-commit, and everything once when it is sent again', async () => {
    const { url, admin } = await freshDb()
    await migratePostgres(admin, silentLogger())
    const { store, acks } = hub(url, 'hub-lost', 0)
    store.storeSamples('d1', 'st', 0, Date.now(), batch(1, 3))
    await store.flush()
    // Hold the streams table so the next group waits inside its transaction, then end its connection.
    const holder = await admin.connect()
    try {
      await holder.query('BEGIN')
      await holder.query('LOCK TABLE streams IN ACCESS EXCLUSIVE MODE')
      store.storeSamples('d1', 'st', 3, Date.now(), batch(4, 3))
      const flushed = store.flush()
      await waitFor(async () => (await admin.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'hub-lost' AND wait_event_type = 'Lock'`)).rowCount === 1, 'the group waiting on the lock')
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hub-lost' AND wait_event_type = 'Lock'`)
      await flushed
    } finally {
      await holder.query('ROLLBACK')
      holder.release()
    }
    expect(store.stats().failedCommits).toBe(1)
    expect(acks).toEqual([{ deviceId: 'd1', storeId: 'st', upTo: 3 }])
    expect(await store.markOf('d1', 'st')).toBe(3)
    // The agent sends it again; a new connection takes it.
    store.storeSamples('d1', 'st', 3, Date.now(), batch(4, 3))
    await store.flush()
    expect(acks.at(-1)).toEqual({ deviceId: 'd1', storeId: 'st', upTo: 6 })
    const { rows } = await admin.query<{ n: number }>('SELECT count(*) AS n FROM samples')
    expect(rows[0]!.n).toBe(6)
  })

  it('migrates once when three hubs start at the same moment, and refuses a schema newer than it knows', async () => {
    const { url, admin } = await freshDb()
    const pools = [0, 1, 2].map((i) => openPostgres(url, silentLogger(), { maxConnections: 1, applicationName: `starter-${i}` }))
    try {
      const results = await Promise.all(pools.map((p) => migratePostgres(p, silentLogger())))
      expect(results.filter((r) => r.from === 0)).toHaveLength(1)
      expect(results.every((r) => r.to === PG_SCHEMA_VERSION)).toBe(true)
    } finally {
      await Promise.all(pools.map((p) => p.end()))
    }
    const { rows } = await admin.query<{ version: number }>('SELECT version FROM rollcall_schema ORDER BY version')
    expect(rows.map((r) => r.version)).toEqual(Array.from({ length: PG_SCHEMA_VERSION }, (_, i) => i + 1))
    await admin.query('INSERT INTO rollcall_schema (version) VALUES (99)')
    await expect(migratePostgres(admin, silentLogger())).rejects.toThrow(/schema is version 99, newer than this hub knows/)
  })

  it('keeps samples in day partitions, drops only whole days at retention, and leaves a day to the default partition when it already holds that day', async () => {
    const { url, admin } = await freshDb()
    await migratePostgres(admin, silentLogger())
    const { store } = hub(url, 'hub-a')
    const now = Date.now()
    const today = now - (now % DAY_MS)
    store.storeSamples('d1', 'st', 0, now, [
      { seq: 1, ts: today - DAY_MS + 1000, sensor: 't', value: 1 }, { seq: 2, ts: today - DAY_MS + 2000, sensor: 't', value: 2 },
      { seq: 3, ts: now, sensor: 't', value: 3 },
      // A clock a week ahead: no partition for that day yet.
      { seq: 4, ts: today + 7 * DAY_MS, sensor: 't', value: 4 },
    ])
    await store.flush()
    const where = await admin.query<{ seq: number; part: string }>('SELECT seq, tableoid::regclass::text AS part FROM samples ORDER BY seq')
    const day = (t: number) => `samples_d${new Date(t).toISOString().slice(0, 10).replaceAll('-', '')}`
    expect(where.rows).toEqual([
      { seq: 1, part: day(today - DAY_MS) }, { seq: 2, part: day(today - DAY_MS) }, { seq: 3, part: day(today) }, { seq: 4, part: 'samples_default' },
    ])
    // The default partition holds a row of that day: the day cannot be made, and nothing is lost.
    const lines: string[] = []
    const logger: Logger = pino({ level: 'warn' }, { write: (l: string) => { lines.push(l) } })
    expect(await ensureDayPartitions(admin, 'samples', today + 7 * DAY_MS, today + 8 * DAY_MS, logger)).toBe(1)
    expect(lines.join('')).toMatch(/its rows stay in the default partition/)
    // Retention in whole days: a cutoff inside yesterday keeps yesterday (its rows go within a day) ...
    expect(await store.prune(today - DAY_MS / 2)).toEqual({ samples: 0, events: 0 })
    // ... and at the start of today, yesterday's partition goes whole, with its two rows counted.
    expect(await store.prune(today)).toEqual({ samples: 2, events: 0 })
    const names = (await partitionsOf(admin, 'samples')).map((p) => p.name)
    expect(names).not.toContain(day(today - DAY_MS))
    expect(names).toContain(day(today))
    expect((await admin.query<{ seq: number }>('SELECT seq FROM samples ORDER BY seq')).rows.map((r) => r.seq)).toEqual([3, 4])
  })

  it('tells a live watcher on one hub of the samples every hub stores, each once, in order, and of nothing from before the watch', async () => {
    const { url, admin } = await freshDb()
    await migratePostgres(admin, silentLogger())
    // Reads come only from each hub's commits and flushes here (their timer is an hour), so the test says when.
    const open = (name: string) => {
      const pool = openPostgres(url, silentLogger(), { maxConnections: 4, applicationName: name })
      const store = createPostgresTelemetryStore(pool, { flushDelayMs: 3_600_000, maxGroupRows: 100_000, gapWaitMs: 0, followOthersMs: 3_600_000 }, silentLogger())
      closers.push(async () => { await store.close(); await pool.end() })
      return store
    }
    const [a, b] = [open('hub-a'), open('hub-b')]
    const now = (from: number, n: number): Sample[] => Array.from({ length: n }, (_, i) => ({ seq: from + i, ts: Date.now(), sensor: 'temp', value: from + i }))
    b.storeSamples('d1', 'st', 0, Date.now(), now(1, 2))
    await b.flush()
    const seen: number[] = []
    const stop = a.watchSamples('d1', (rows) => { seen.push(...rows.map((r) => r.seq)) })
    // The watch's first read notes the marks: what was stored before is history.
    await a.flush()
    expect(seen).toEqual([])
    // Stored by the other hub: delivered by this hub's next read.
    b.storeSamples('d1', 'st', 2, Date.now(), now(3, 2))
    await b.flush()
    expect(seen).toEqual([])
    await a.flush()
    expect(seen).toEqual([3, 4])
    // By this hub: read right after its commit.
    a.storeSamples('d1', 'st', 4, Date.now(), now(5, 2))
    await a.flush()
    expect(seen).toEqual([3, 4, 5, 6])
    // The other hub, then this one above it: this hub's commit reads both, in order, once.
    b.storeSamples('d1', 'st', 6, Date.now(), now(7, 2))
    await b.flush()
    a.storeSamples('d1', 'st', 8, Date.now(), now(9, 2))
    await a.flush()
    await a.flush()
    expect(seen).toEqual([3, 4, 5, 6, 7, 8, 9, 10])
    // A second stream (the device re-flashed) is read from its start.
    b.storeSamples('d1', 'st2', 0, Date.now(), now(1, 1))
    await b.flush()
    await a.flush()
    expect(seen).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 1])
    stop()
    b.storeSamples('d1', 'st', 10, Date.now(), now(11, 1))
    await b.flush()
    await a.flush()
    expect(seen).toHaveLength(9)
  })
})
