import pg from 'pg'
import type { Logger } from '../../../common/logger.js'
import { inTransaction } from './pool.js'

/**
 * Day partitions of the tables partitioned by `ts` (milliseconds since the
 * epoch, UTC days): `samples_d20261207` holds [that day, the next). The hub
 * makes the days around now ahead of need; a row whose day has none lands
 * in the table's DEFAULT partition, so nothing is refused for want of one.
 * Retention drops whole days, and deletes in chunks from the DEFAULT
 * partition (by its index on ts); the day it cuts through is kept until it is
 * wholly past, so a row outlives the retention by less than a day.
 */

export const DAY_MS = 86_400_000

/** The tables this module may partition: names only from here, never from input. */
export type PartitionedTable = 'samples' | 'device_events'

const dayName = (table: PartitionedTable, dayStart: number): string =>
  `${table}_d${new Date(dayStart).toISOString().slice(0, 10).replaceAll('-', '')}`

/** Any 64-bit number of our own: hubs making partitions at once take turns. */
const PARTITION_LOCK = '7526411835502309121'

/**
 * Makes the day partitions of `table` from `fromMs`'s day through `toMs`'s
 * that do not exist yet. A day the DEFAULT partition already holds rows of
 * cannot be made (PostgreSQL refuses: those rows would belong to it); it is
 * left to the DEFAULT partition and logged, which loses nothing.
 */
export async function ensureDayPartitions(pool: pg.Pool, table: PartitionedTable, fromMs: number, toMs: number, logger: Logger): Promise<number> {
  const existing = new Set((await partitionsOf(pool, table)).map((p) => p.name))
  let made = 0
  for (let day = fromMs - (fromMs % DAY_MS); day <= toMs; day += DAY_MS) {
    const name = dayName(table, day)
    if (existing.has(name)) continue
    try {
      await inTransaction(pool, async (c) => {
        await c.query('SELECT pg_advisory_xact_lock($1)', [PARTITION_LOCK])
        await c.query(`CREATE TABLE IF NOT EXISTS ${pg.escapeIdentifier(name)} PARTITION OF ${table} FOR VALUES FROM (${day}) TO (${day + DAY_MS})`)
      })
      made++
    } catch (err) {
      // 23514: the DEFAULT partition holds rows of that day.
      if ((err as { code?: string }).code !== '23514') throw err
      logger.warn({ table, day: new Date(day).toISOString().slice(0, 10) }, 'a day partition could not be made: its rows stay in the default partition')
    }
  }
  return made
}

export interface Partition { readonly name: string; readonly fromMs: number | undefined; readonly toMs: number | undefined }

/** The partitions of `table`, with their ranges (none for DEFAULT). */
export async function partitionsOf(pool: pg.Pool, table: PartitionedTable): Promise<Partition[]> {
  const { rows } = await pool.query<{ name: string; bound: string }>(`
    SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = $1 AND p.relnamespace = current_schema()::regnamespace`, [table])
  return rows.map((r) => {
    const m = /FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)/.exec(r.bound)
    return { name: r.name, fromMs: m ? Number(m[1]) : undefined, toMs: m ? Number(m[2]) : undefined }
  })
}

/**
 * Deletes the rows of `table` older than `cutoffMs`, in whole days: drops
 * the day partitions wholly before it, keeps the one it cuts through (a
 * DELETE there would scan a day of rows for each chunk), and deletes from
 * DEFAULT in chunks of `chunkRows`, each its own short transaction so ingest
 * goes on between them. A dropped day's rows are counted just before the
 * drop; hubs pruning at once take turns, and a partition another hub
 * dropped meanwhile is passed over.
 */
export async function pruneBefore(pool: pg.Pool, table: PartitionedTable, cutoffMs: number, chunkRows: number): Promise<number> {
  let removed = 0
  for (const p of await partitionsOf(pool, table)) {
    const name = pg.escapeIdentifier(p.name)
    try {
      if (p.toMs !== undefined && p.toMs <= cutoffMs) {
        removed += await inTransaction(pool, async (c) => {
          await c.query('SELECT pg_advisory_xact_lock($1)', [PARTITION_LOCK])
          if ((await c.query<{ r: string | null }>('SELECT to_regclass($1) AS r', [name])).rows[0]?.r === null) return 0
          const { rows } = await c.query<{ n: number }>(`SELECT count(*) AS n FROM ${name}`)
          // The parent first, as an insert takes them (else the two could deadlock): it holds inserts
          // of every hub for the moment the drop takes, once a day.
          await c.query(`LOCK TABLE ${table} IN SHARE ROW EXCLUSIVE MODE`)
          await c.query(`DROP TABLE ${name}`)
          return rows[0]!.n
        })
      } else if (p.fromMs === undefined) {
        for (;;) {
          const r = await pool.query(`DELETE FROM ${name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${name} WHERE ts < $1 LIMIT $2))`, [cutoffMs, chunkRows])
          removed += r.rowCount ?? 0
          if ((r.rowCount ?? 0) < chunkRows) break
        }
      }
    } catch (err) {
      // 42P01: another hub dropped it meanwhile.
      if ((err as { code?: string }).code !== '42P01') throw err
    }
  }
  return removed
}
