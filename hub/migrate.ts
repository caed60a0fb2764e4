import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type pg from 'pg'
import type { Logger } from '../common/logger.js'
import { migrate, openDatabase, type Db } from '../common/sqlite.js'
import { DAY_MS, ensureDayPartitions } from './storage/postgres/partitions.js'
import { openPostgres, withClient, withoutNul } from './storage/postgres/pool.js'
import { migratePostgres } from './storage/postgres/schema.js'
import { HUB_MIGRATIONS } from './storage/schema.js'
import { HUB_RESTART_ERROR } from './commands/store.js'

/**
 * `rollcall migrate`: copies an embedded hub's state, its SQLite file, into
 * a new PostgreSQL database, so its hubs can move to the shared store without
 * losing history or re-provisioning devices (docs/scale-out.md, "Moving
 * over"). Device and observer token hashes move as they are, so every token
 * keeps working wherever the hub checks it; stream marks move with their
 * samples, so an agent resumes where it was acked.
 *
 * The whole copy is one PostgreSQL transaction: it lands, counted table by
 * table against the file, or nothing does. The file is read under its
 * exclusive lock: a hub still running on it is found and refused (it would go
 * on storing what the copy misses), and a hub started meanwhile cannot open
 * it. A file from an older rollcall is brought up to this version's schema
 * inside a transaction that is rolled back at the end: the file is left as
 * it was, for the rollcall that wrote it.
 *
 * Commands the hub left in flight are recorded as a restart would record
 * them (HUB_RESTART); text a device sent is stored with ␀ for each NUL, which
 * PostgreSQL's text cannot hold.
 */

/** What the move refuses to do, and why: nothing was copied. */
export class MigrateRefused extends Error {
  override readonly name = 'MigrateRefused'
}

export interface MigrateOptions {
  readonly dataDir: string
  readonly url: string
  readonly password?: string | undefined
  /** Copy without the rules (they do not run on PostgreSQL yet); without it, a hub that has rules is refused. */
  readonly withoutRules: boolean
  readonly logger: Logger
}

export interface MigrateReport {
  readonly tables: ReadonlyArray<{ readonly table: string; readonly rows: number }>
  /** Rules left in the file (with --without-rules). */
  readonly rulesLeft: number
  /** Rule firings left in the file: their trace of removed rules' work (the commands and jobs they made keep their cause). */
  readonly firingsLeft: number
  /** Commands the hub left in flight, recorded as ended by its restart. */
  readonly commandsSettled: number
  readonly ms: number
}

/** A table copied as it is: its columns, named alike on both sides, in this order. */
interface TableCopy {
  readonly table: string
  readonly cols: readonly string[]
  /** The identity column whose sequence must go on from the copied ids. */
  readonly identity?: string
  /** Columns PostgreSQL has and the file does not: NULL. */
  readonly absent?: readonly string[]
}

const COMMAND_COLS = ['id', 'device_id', 'name', 'args', 'group_id', 'status', 'created_at', 'sent_at', 'expires_at', 'finished_at', 'result', 'error_code',
  'error_message', 'job_id', 'late_at', 'late_response', 'first_sent_at', 'resent', 'cause_rule', 'cause_firing']
const JOB_COLS = ['id', 'name', 'payload', 'target', 'priority', 'timeout_ms', 'expires_at', 'max_attempts', 'backoff_base_ms', 'backoff_max_ms', 'rate_per_min',
  'rollout_tat', 'abort_min_finished', 'abort_failure_pct', 'continuous', 'status', 'status_reason', 'created_at', 'finished_at', 'schedule_id', 'schedule_tick',
  'cause_rule', 'cause_firing']
const EXECUTION_COLS = ['key', 'job_id', 'device_id', 'priority', 'state', 'attempt', 'version', 'base_version', 'device_version', 'run_after', 'first_delivered_at',
  'delivered_at', 'lease_until', 'cancel_notify', 'started_at', 'finished_at', 'result', 'error_code', 'error_message', 'created_at', 'updated_at']

/** In an order that satisfies the foreign keys (presence after devices, executions after jobs). */
const TABLES: readonly TableCopy[] = [
  { table: 'devices', cols: ['id', 'grp', 'token_hash', 'created_at'] },
  { table: 'observers', cols: ['name', 'token_hash', 'created_at'] },
  { table: 'device_keys', cols: ['key', 'id'], identity: 'key' },
  { table: 'sensor_keys', cols: ['key', 'name'], identity: 'key' },
  { table: 'streams', cols: ['key', 'device_id', 'store_id', 'up_to', 'updated_at'], identity: 'key' },
  { table: 'samples', cols: ['device_key', 'ts', 'seq', 'stream_key', 'sensor_key', 'value', 'unsynced'] },
  { table: 'device_events', cols: ['id', 'device_key', 'stream_key', 'ts', 'seq', 'kind', 'level', 'message', 'data'], identity: 'id' },
  { table: 'presence', cols: ['device_id', 'status', 'reason', 'since', 'epoch', 'last_seen', 'agent_version', 'boot_id', 'store_id', 'capabilities', 'units'] },
  // The file's history has no ledger column: a change copied from it is not matched against the changes hubs record from now on.
  { table: 'presence_history', cols: ['id', 'device_id', 'ts', 'status', 'reason', 'epoch'], identity: 'id', absent: ['store_id'] },
  { table: 'dead_letters', cols: ['id', 'ts', 'device_id', 'client_id', 'topic', 'reason', 'detail', 'payload_bytes', 'payload_excerpt'], identity: 'id' },
  { table: 'commands', cols: COMMAND_COLS },
  { table: 'schedules', cols: ['id', 'name', 'cron', 'timezone', 'template', 'created_at'], identity: 'id' },
  { table: 'jobs', cols: JOB_COLS },
  { table: 'executions', cols: EXECUTION_COLS, identity: 'key' },
  { table: 'execution_history', cols: ['exec_key', 'version', 'attempt', 'state', 'at', 'source', 'detail'] },
]

/** Parameters per INSERT: below PostgreSQL's 65,535, with room. */
const PARAMS_PER_INSERT = 30_000

/** Day partitions are made for the samples of the last this many days before the newest; older ones go to the default partition. */
const PARTITION_DAYS = 400

export async function migrateToPostgres(o: MigrateOptions): Promise<MigrateReport> {
  const started = performance.now()
  const db = openHubFile(o.dataDir)
  try {
    // Everything below reads one snapshot; the schema upgrade inside it is rolled back at the end.
    db.exec('BEGIN')
    migrate(db, HUB_MIGRATIONS)
    const count = (sql: string) => (db.prepare(sql).get() as { n: number }).n
    const rules = count('SELECT count(*) AS n FROM rules')
    if (rules > 0 && !o.withoutRules) {
      throw new MigrateRefused(`the hub has ${rules} rule${rules === 1 ? '' : 's'}, and rules do not run on PostgreSQL yet (docs/scale-out.md): give --without-rules to move everything else (the file keeps them; the commands and jobs they made keep their cause), or stay on this hub`)
    }
    const firings = count('SELECT count(*) AS n FROM rule_firings')
    const pool = openPostgres(o.url, o.logger, { maxConnections: 2, applicationName: 'rollcall-migrate', password: o.password })
    try {
      await migratePostgres(pool, o.logger)
      await makePartitions(db, pool, o.logger)
      const copied = await withClient(pool, (c) => copyAll(db, c))
      return { ...copied, rulesLeft: rules, firingsLeft: firings, ms: Math.round(performance.now() - started) }
    } finally {
      await pool.end()
    }
  } finally {
    if (db.inTransaction) db.exec('ROLLBACK')
    db.close()
  }
}

/** The hub's file, under its exclusive lock, its schema brought up to this version's as the hub's start would. */
function openHubFile(dataDir: string): Db {
  const path = join(dataDir, 'hub.db')
  if (!existsSync(path)) throw new MigrateRefused(`no hub database in ${dataDir} (no hub.db): give the hub's data dir, the one it was started with --data`)
  let db: Db | undefined
  try {
    db = openDatabase(path, { synchronous: 'FULL', exclusive: true })
    // In exclusive mode the first write takes the file's lock and keeps it while this connection is open.
    db.exec('BEGIN IMMEDIATE')
    db.exec('COMMIT')
    return db
  } catch (err) {
    db?.close()
    if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new MigrateRefused(`a hub is running on ${dataDir}: stop it first (what it stores during the copy would be left behind)`)
    throw err
  }
}

async function makePartitions(db: Db, pool: pg.Pool, logger: Logger): Promise<void> {
  for (const table of ['samples', 'device_events'] as const) {
    const r = db.prepare(`SELECT min(ts) AS lo, max(ts) AS hi FROM ${table}`).get() as { lo: number | null; hi: number | null }
    if (r.lo === null || r.hi === null) continue
    await ensureDayPartitions(pool, table, Math.max(r.lo, r.hi - PARTITION_DAYS * DAY_MS), r.hi, logger)
  }
}

async function copyAll(db: Db, c: pg.PoolClient): Promise<{ tables: Array<{ table: string; rows: number }>; commandsSettled: number }> {
  await c.query('BEGIN')
  try {
    // The hub's limits are for its short transactions; a copy of a year of samples is one long one.
    await c.query('SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL lock_timeout = 0')
    const { rows: [held] } = await c.query<{ tables: string | null }>(`SELECT string_agg(t, ', ') AS tables FROM (${TABLES.map((t) => `SELECT '${t.table}' AS t WHERE EXISTS (SELECT 1 FROM ${t.table})`).join(' UNION ALL ')}) x`)
    if (held?.tables) throw new MigrateRefused(`the database holds a hub's state already (rows in ${held.tables}): migrate into a new, empty database (a second copy would mix two fleets' histories)`)
    const tables: Array<{ table: string; rows: number }> = []
    for (const t of TABLES) tables.push({ table: t.table, rows: await copyTable(db, c, t) })
    // A schedule's id is never used again, removed schedules' included (their jobs still name them).
    const lastSchedule = (db.prepare(`SELECT max(m) AS n FROM (SELECT seq AS m FROM sqlite_sequence WHERE name = 'schedules'
      UNION ALL SELECT max(id) FROM schedules UNION ALL SELECT max(schedule_id) FROM jobs)`).get() as { n: number | null }).n
    if (lastSchedule !== null) await c.query(`SELECT setval(pg_get_serial_sequence('schedules', 'id'), $1)`, [lastSchedule])
    // As the hub's next start would: a command left in flight ends as ended by the restart.
    const settled = await c.query(`UPDATE commands SET status = 'disconnected', finished_at = $1, error_code = $2, error_message = $3 WHERE status = 'sent'`,
      [Date.now(), HUB_RESTART_ERROR.code, HUB_RESTART_ERROR.message])
    await c.query('COMMIT')
    return { tables, commandsSettled: settled.rowCount ?? 0 }
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined)
    throw err
  }
}

async function copyTable(db: Db, c: pg.PoolClient, t: TableCopy): Promise<number> {
  const cols = [...t.cols, ...(t.absent ?? [])]
  const perRow = cols.length
  const batchRows = Math.floor(PARAMS_PER_INSERT / perRow)
  const unsynced = t.cols.indexOf('unsynced')
  const insert = (n: number) => `INSERT INTO ${t.table} (${cols.join(', ')})${t.identity !== undefined ? ' OVERRIDING SYSTEM VALUE' : ''} VALUES ${
    Array.from({ length: n }, (_, r) => `(${cols.map((_, k) => `$${r * perRow + k + 1}`).join(', ')})`).join(', ')}`
  let params: unknown[] = []
  let rows = 0
  const flush = async () => {
    if (params.length === 0) return
    await c.query(insert(params.length / perRow), params)
    params = []
  }
  for (const row of db.prepare(`SELECT ${t.cols.join(', ')} FROM ${t.table}`).raw().iterate() as IterableIterator<unknown[]>) {
    for (let k = 0; k < row.length; k++) {
      const v = row[k]
      if (k === unsynced) params.push(v === null ? null : v === 1)
      // Ids and names were checked on their way in and hold no NUL; what devices wrote freely may.
      else if (typeof v === 'string') params.push(withoutNul(v))
      else params.push(v)
    }
    for (let k = 0; k < (t.absent?.length ?? 0); k++) params.push(null)
    rows++
    if (params.length >= batchRows * perRow) await flush()
  }
  await flush()
  // Counted on the database's side: what was read from the file (one snapshot) is what it now holds.
  const { rows: [inDb] } = await c.query<{ n: number }>(`SELECT count(*) AS n FROM ${t.table}`)
  if (inDb?.n !== rows) throw new Error(`${t.table}: ${rows} rows read from the file, ${inDb?.n ?? 0} in the database: nothing was moved`)
  if (t.identity !== undefined && t.table !== 'schedules' && rows > 0) {
    await c.query(`SELECT setval(pg_get_serial_sequence('${t.table}', '${t.identity}'), (SELECT max(${t.identity}) FROM ${t.table}))`)
  }
  return rows
}
