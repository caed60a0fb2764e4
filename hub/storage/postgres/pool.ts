import pg from 'pg'
import { parse as parseConnectionString } from 'pg-connection-string'
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
  /** Connections at most. A writer holds one while it commits; a writer that waits more than 10 s for one fails its group (its senders resend). */
  readonly maxConnections?: number
  /** Who the hub is in pg_stat_activity. */
  readonly applicationName?: string
  /** The account's password, when it is not in the URL, PGPASSWORD or ~/.pgpass (the hub reads it from databasePasswordFile). */
  readonly password?: string | undefined
}

export function openPostgres(url: string, logger: Logger, opts: PostgresOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    ...connectionConfig(url, opts.password),
    max: opts.maxConnections ?? 10,
    application_name: opts.applicationName ?? 'rollcall-hub',
    types,
    connectionTimeoutMillis: 10_000,
    // A hub whose network is cut while it holds a device's stream row must not hold it for
    // the two hours of the kernel's default keepalive: the server ends a transaction left idle,
    // a lock waited on too long fails the wait, and the hub's end notices a dead socket.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    options: '-c idle_in_transaction_session_timeout=30000 -c lock_timeout=10000 -c statement_timeout=60000',
    query_timeout: 70_000,
  })
  // An idle connection the server ended (a restart, a failover) is dropped by
  // the pool and made again on the next checkout; without a listener its error
  // would end the process.
  pool.on('error', (err) => { logger.warn({ err: err.message }, 'an idle PostgreSQL connection failed; the pool makes a new one when needed') })
  return pool
}

/**
 * What node-postgres connects with: the URL, and the password from the
 * hub's password file when there is one. Not both as given: node-postgres
 * lays the URL's fields over the others, and a URL without a password sets
 * it to '', hiding the file's.
 */
export function connectionConfig(url: string, password: string | undefined): pg.ClientConfig {
  if (password === undefined) return { connectionString: url }
  const fields = Object.entries(parseConnectionString(url)).filter(([, v]) => v !== null && v !== undefined && v !== '')
  return { ...(Object.fromEntries(fields) as pg.ClientConfig), password }
}

/**
 * Whose failure a PostgreSQL error is, by its SQLSTATE class. Only a data
 * exception (22: a NUL in text, a number out of range) or a broken
 * constraint (23) is the write's own and would fail again: its owner hears
 * of it and its sender is told. Anything else is the database's condition
 * (a lost connection, a timeout, resources, shutdown, a revoked grant, a
 * schema changed under the hub) and says nothing about what the write
 * carried: nothing of it is acked and its senders resend, so a database
 * that goes wrong never gets healthy devices struck off.
 */
export function pgBlameOf(err: unknown): 'operation' | 'database' {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^(22|23)[0-9A-Z]{3}$/.test(code) ? 'operation' : 'database'
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
    // The connection itself failed (no SQLSTATE: a socket error or a timeout; 08: connection; 57P0x: the server ended it).
    const code = (err as { code?: unknown } | null)?.code
    if (err instanceof Error && (typeof code !== 'string' || /^(08|57P0)/.test(code))) broken ??= err
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

/**
 * PostgreSQL's text cannot hold a NUL character (SQLite's can): where text
 * comes from outside and only has to be shown (a dead letter's topic, detail
 * and excerpt), each NUL is written as U+2400 (␀) instead.
 */
export const withoutNul = (text: string): string => (text.includes('\u0000') ? text.replaceAll('\u0000', '\u2400') : text)
