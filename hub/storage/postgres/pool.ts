import pg from 'pg'
import type { Logger } from '../../../common/logger.js'

/**
 * The hub's connection pool to a PostgreSQL shared by several hubs
 * (issue #18). Numbers come back as numbers: the hub's int8 columns hold
 * milliseconds, seqs and counts, all far below 2^53, and node-postgres would
 * otherwise hand them over as strings.
 */

const INT8 = 20
const NUMERIC = 1700
const asNumber = (text: string): number => Number(text)

const builtIn = pg.types.getTypeParser as (oid: number, format?: 'text' | 'binary') => (value: string) => unknown
const types: pg.CustomTypesConfig = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === INT8 || oid === NUMERIC ? asNumber : builtIn(oid, format)),
}

export interface PostgresOptions {
  /** Connections at most; the telemetry writer holds one while it commits, reads share the rest. */
  readonly maxConnections?: number
  /** Who the hub is in pg_stat_activity. */
  readonly applicationName?: string
}

export function openPostgres(url: string, logger: Logger, opts: PostgresOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.maxConnections ?? 10,
    application_name: opts.applicationName ?? 'rollcall-hub',
    types,
    connectionTimeoutMillis: 10_000,
  })
  // An idle connection the server ended (a restart, a failover) is dropped by
  // the pool and made again on the next checkout; without a listener its error
  // would end the process.
  pool.on('error', (err) => { logger.warn({ err: err.message }, 'an idle PostgreSQL connection failed; the pool makes a new one when needed') })
  return pool
}

/**
 * Whose failure a PostgreSQL error is, by its SQLSTATE class: the database's
 * own condition (connection, resources, shutdown, a deadlock or
 * serialization failure, an internal error) says nothing about what the
 * write carried, and its senders retry; anything else (a data exception such
 * as a NUL in text, a constraint) is the write's own and would fail again.
 */
export function pgBlameOf(err: unknown): 'operation' | 'database' {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return 'database'
  return /^(08|40|53|54|55|57|58|XX|F0|HV|P0)/.test(code) ? 'database' : 'operation'
}

/** A deadlock or serialization failure: the transaction may simply be tried again. */
export const isRetryable = (err: unknown): boolean => {
  const code = (err as { code?: unknown } | null)?.code
  return code === '40P01' || code === '40001'
}

/**
 * Runs `fn` on a connection of its own from the pool. A connection that
 * fails while checked out (the server ended it: a restart, a failover, an
 * operator's pg_terminate_backend) reports it to the listener set here
 * instead of ending the process, and goes back to the pool destroyed, not
 * reused; `fn`'s own query then fails and its caller decides.
 */
export async function withClient<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect()
  let broken: Error | undefined
  const onError = (err: Error) => { broken = err }
  c.on('error', onError)
  try {
    const result = await fn(c)
    return result
  } catch (err) {
    broken ??= err instanceof Error && pgBlameOf(err) === 'database' ? err : undefined
    throw err
  } finally {
    c.off('error', onError)
    c.release(broken)
  }
}

/** Runs `fn` in a transaction on a connection of its own: COMMIT after it, ROLLBACK if it throws. */
export async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (c) => {
    await c.query('BEGIN')
    try {
      const result = await fn(c)
      await c.query('COMMIT')
      return result
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined)
      throw err
    }
  })
}
