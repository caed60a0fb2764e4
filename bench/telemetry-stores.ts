import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { silentLogger } from '../common/logger.js'
import { percentiles } from '../common/latency.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { createWalSync } from '../hub/storage/wal-sync.js'
import { createPostgresTelemetryStore, type PostgresTelemetryStore } from '../hub/telemetry/postgres.js'
import { createSqliteTelemetryStore } from '../hub/telemetry/sqlite.js'
import type { StoredAck, TelemetryStore } from '../hub/telemetry/store.js'
import { table } from '../cli/output.js'
import { startPostgres } from './postgres-cluster.js'

/**
 * `npm run bench -- stores`: how fast each telemetry store takes a fleet's
 * batches, with no network in the way: the hub's SQLite file (as the hub
 * runs it: group commit, fsync in the thread pool) beside PostgreSQL with
 * one hub and with two hubs writing the same devices (issue #18). PostgreSQL
 * is a private cluster made for the run, fsync on.
 *
 * Closed loop, as agents are: each device has one batch in flight and sends
 * its next when the ack for the last comes back, to whichever store (with two
 * hubs, each batch to one of them at random, as a shared subscription hands
 * them out). Reported: samples stored a second, the time from a batch handed
 * to the store to its ack, the share of one core the hub's event loop spent
 * (the hubs share this process), and the CPU PostgreSQL's processes used,
 * per 1,000 samples.
 */
function tempDir(name: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `rollcall-${name}-`))
  return { dir, remove: () => { rmSync(dir, { recursive: true, force: true }) } }
}

export interface StoresBenchOptions {
  readonly devices: number
  readonly batch: number
  readonly seconds: number
  readonly warmup: number
  readonly rounds: number
  /** Batches each device keeps in flight (the agent's inflightBatches, 4 by default). */
  readonly inFlight: number
}

type Kind = 'sqlite' | 'pg-1' | 'pg-2'
const KINDS: Record<Kind, string> = { 'sqlite': 'SQLite (embedded hub)', 'pg-1': 'PostgreSQL, one hub', 'pg-2': 'PostgreSQL, two hubs' }

interface Row {
  readonly store: string
  readonly samplesPerS: number
  readonly ackP50Ms: number
  readonly ackP99Ms: number
  readonly loopPct: number
  readonly dbCpuMsPer1k: number | undefined
  /** Table and index bytes per stored sample. */
  readonly bytesPerSample: number
  /** Batches that waited for their device's earlier one (two hubs), and that were refused, per 100 batches. */
  readonly waitedPct: number
  readonly refusedPct: number
}

/** The CPU time (ms) of a process and its children, from /proc: PostgreSQL's postmaster and its backends. */
function treeCpuMs(root: number): number {
  const tick = 10 // USER_HZ is 100 on Linux
  let total = 0
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    try {
      const stat = readFileSync(join('/proc', e, 'stat'), 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const pid = Number(e)
      const ppid = Number(f[1])
      if (pid === root || ppid === root) total += (Number(f[11]) + Number(f[12])) * tick
    } catch {
      // a process that ended meanwhile
    }
  }
  return total
}

async function round(kind: Kind, o: StoresBenchOptions, pg: { url: (name: string) => Promise<string>; pid: number }): Promise<Row> {
  const closers: Array<() => Promise<void>> = []
  let stores: TelemetryStore[]
  let footprint: () => Promise<{ bytes: number; rows: number }>
  const pgStores: PostgresTelemetryStore[] = []
  const tmp = tempDir('bench-stores')
  if (kind === 'sqlite') {
    const path = join(tmp.dir, 'hub.db')
    const db = openHubDb(path)
    const writer = createWriter(db, { flushDelayMs: 20, maxBatchWeight: 10_000, walSync: createWalSync(db, path) }, silentLogger())
    stores = [createSqliteTelemetryStore(db, writer, silentLogger())]
    footprint = async () => ({
      bytes: (db.prepare(`SELECT sum(pgsize) AS b FROM dbstat WHERE name = 'samples' OR name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'samples')`).get() as { b: number }).b,
      rows: (db.prepare('SELECT count(*) AS n FROM samples').get() as { n: number }).n,
    })
    closers.push(async () => { writer.close(); db.close() })
  } else {
    const url = await pg.url(`bench_${kind.replace('-', '_')}_${Date.now() % 1_000_000}`)
    const admin = openPostgres(url, silentLogger(), { maxConnections: 1 })
    await migratePostgres(admin, silentLogger())
    closers.push(() => admin.end())
    footprint = async () => {
      const { rows } = await admin.query<{ b: number; n: number }>(`SELECT
        (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'samples'::regclass) AS b, (SELECT count(*) FROM samples) AS n`)
      return { bytes: rows[0]!.b, rows: rows[0]!.n }
    }
    stores = []
    for (let i = 0; i < (kind === 'pg-2' ? 2 : 1); i++) {
      const pool = openPostgres(url, silentLogger(), { maxConnections: 4, applicationName: `bench-hub-${i}` })
      const s = createPostgresTelemetryStore(pool, { flushDelayMs: 20, maxGroupRows: 10_000, gapWaitMs: 250 }, silentLogger())
      stores.push(s)
      pgStores.push(s)
      closers.push(async () => { await s.close(); await pool.end() })
    }
  }
  try {
    const ids = Array.from({ length: o.devices }, (_, i) => `dev-${String(i).padStart(5, '0')}`)
    // Per device, as the agent's sender keeps them: acked up to, sent up to, the batches in flight (top seq, sent at).
    const acked = new Array<number>(o.devices).fill(0)
    const sent = new Array<number>(o.devices).fill(0)
    const progressAt = new Array<number>(o.devices).fill(0)
    const flying: Array<Array<[number, number]>> = Array.from({ length: o.devices }, () => [])
    const index = new Map(ids.map((id, i) => [id, i]))
    let measuring = false
    let stored = 0
    const latencies: number[] = []
    let stopped = false
    const send = (i: number) => {
      const prev = sent[i]!
      const now = Date.now()
      const batch = Array.from({ length: o.batch }, (_, k) => ({ sensor: `s${k % 4}`, ts: now + k, seq: prev + k + 1, value: Math.random() }))
      sent[i] = prev + o.batch
      flying[i]!.push([sent[i], performance.now()])
      stores[stores.length === 1 ? 0 : Math.floor(Math.random() * stores.length)]!.storeSamples(ids[i]!, 'bench', prev, now, batch)
    }
    const fill = (i: number) => {
      while (!stopped && sent[i]! - acked[i]! < o.inFlight * o.batch) send(i)
    }
    const onAcks = (acks: StoredAck[]) => {
      const t = performance.now()
      for (const a of acks) {
        const i = index.get(a.deviceId)!
        if (a.upTo <= acked[i]!) continue
        if (measuring) stored += a.upTo - acked[i]!
        const f = flying[i]!
        while (f.length > 0 && f[0]![0] <= a.upTo) {
          const [, at] = f.shift()!
          if (measuring) latencies.push(t - at)
        }
        acked[i] = a.upTo
        progressAt[i] = t
        fill(i)
      }
    }
    for (const s of stores) s.onAcks(onAcks)
    // A batch refused or lost with its group gets no ack: with no progress for 2 s, the device
    // resends from its last ack, as the agent does after its ack timeout (10 s there).
    const resend = setInterval(() => {
      const late = performance.now() - 2_000
      for (let i = 0; i < o.devices; i++) {
        if (stopped || sent[i] === acked[i] || progressAt[i]! > late) continue
        sent[i] = acked[i]!
        flying[i] = []
        progressAt[i] = performance.now()
        fill(i)
      }
    }, 500)
    for (let i = 0; i < o.devices; i++) { progressAt[i] = performance.now(); fill(i) }
    await sleep(o.warmup * 1000)
    measuring = true
    const elu0 = performance.eventLoopUtilization()
    const cpu0 = kind === 'sqlite' ? 0 : treeCpuMs(pg.pid)
    const t0 = performance.now()
    await sleep(o.seconds * 1000)
    const wall = performance.now() - t0
    const elu = performance.eventLoopUtilization(elu0)
    const dbCpu = kind === 'sqlite' ? undefined : treeCpuMs(pg.pid) - cpu0
    measuring = false
    stopped = true
    clearInterval(resend)
    const sum = (f: (st: TelemetryStore) => number) => stores.reduce((n, st) => n + f(st), 0)
    const batches = Math.max(1, sum((st) => st.counters().batches + st.counters().gapsRefused))
    const waited = pgStores.reduce((n, st) => n + st.stats().gapsWaited, 0)
    const refused = sum((st) => st.counters().gapsRefused)
    // Let what is in flight settle before the table is measured.
    await sleep(500)
    const { bytes, rows } = await footprint()
    const { p50, p99 } = percentiles(latencies)
    return {
      store: KINDS[kind], samplesPerS: Math.round((stored / wall) * 1000), ackP50Ms: p50, ackP99Ms: p99,
      loopPct: Math.round(elu.utilization * 100), dbCpuMsPer1k: dbCpu === undefined ? undefined : (dbCpu / Math.max(1, stored)) * 1000,
      bytesPerSample: bytes / Math.max(1, rows), waitedPct: (waited / batches) * 100, refusedPct: (refused / batches) * 100,
    }
  } finally {
    for (const c of closers.reverse()) await c()
    tmp.remove()
  }
}

export async function runStoresBench(o: StoresBenchOptions): Promise<void> {
  const dir = tempDir('bench-pg')
  const cluster = await startPostgres(dir.dir, { fsync: true, maxConnections: 50 })
  const pid = Number(readFileSync(join(dir.dir, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0])
  try {
    console.log(`telemetry stores: ${o.devices} devices, ${o.batch} samples a batch, ${o.inFlight} batch(es) in flight each; ${o.warmup} s warm-up, ${o.seconds} s measured, ${o.rounds} round(s)`)
    const rows: Row[] = []
    for (let r = 0; r < o.rounds; r++) {
      for (const kind of Object.keys(KINDS) as Kind[]) rows.push(await round(kind, o, { url: (name) => cluster.database(name), pid }))
    }
    console.log(table([['store', 'samples/s', 'ack p50 ms', 'ack p99 ms', 'hub loop %', 'PostgreSQL CPU ms / 1k samples', 'bytes / sample', 'waited %', 'refused %'], ...rows.map((x) => [
      x.store, x.samplesPerS.toLocaleString('en-US'), x.ackP50Ms.toFixed(1), x.ackP99Ms.toFixed(1), String(x.loopPct), x.dbCpuMsPer1k === undefined ? '-' : x.dbCpuMsPer1k.toFixed(1),
      x.bytesPerSample.toFixed(0), x.waitedPct.toFixed(2), x.refusedPct.toFixed(2),
    ])]))
  } finally {
    await cluster.stop()
    dir.remove()
  }
}
