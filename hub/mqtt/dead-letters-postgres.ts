import type pg from 'pg'
import type { Logger } from '../../common/logger.js'
import { pgBlameOf, withoutNul } from '../storage/postgres/pool.js'
import { excerpt, type DeadLetter, type DeadLetters, type NewDeadLetter } from './dead-letters.js'

/**
 * The dead letters on a PostgreSQL shared by several hubs (issue #18;
 * dead-letters.ts says what they are). Rows are queued and written every
 * `flushDelayMs` in one statement over arrays, so a device that floods the
 * hub with bad messages costs one insert per group, not one per message.
 * The table is capped at `maxRows` as on SQLite, whichever hub prunes it.
 *
 * PostgreSQL cannot store a NUL character in text, and a hostile payload is
 * exactly where one turns up: NULs in the topic, detail and excerpt are
 * shown as U+2400 (␀) instead of failing the row. While the database is
 * away the queue holds up to `maxQueued` rows; past that the newest are
 * dropped and counted (they are diagnostics, and the counts by reason stay
 * exact in memory).
 */

export interface PostgresDeadLetterOptions {
  readonly maxRows: number
  readonly flushDelayMs: number
  readonly maxQueued: number
}

interface Row { id: number; ts: number; device_id: string | null; client_id: string | null; topic: string; reason: string; detail: string; payload_bytes: number; payload_excerpt: string }

interface Queued { ts: number; deviceId: string | null; clientId: string | null; topic: string; reason: string; detail: string; bytes: number; excerpt: string }

export function createPostgresDeadLetters(pool: pg.Pool, opts: PostgresDeadLetterOptions, logger: Logger) {
  const byReason = new Map<string, number>()
  let queue: Queued[] = []
  let timer: NodeJS.Timeout | undefined
  let writing: Promise<void> | undefined
  let sincePrune = 0
  let dropped = 0
  let failedWrites = 0

  // After a failed write, the next waits a second: a database that is away is not asked 50 times a second.
  let backoff = false

  function schedule(): void {
    if (timer || writing) return
    timer = setTimeout(() => { timer = undefined; void write() }, backoff ? Math.max(1000, opts.flushDelayMs) : opts.flushDelayMs)
  }

  async function insert(rows: readonly Queued[]): Promise<void> {
    await pool.query(`INSERT INTO dead_letters (ts, device_id, client_id, topic, reason, detail, payload_bytes, payload_excerpt)
      SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::text[])`, [
      rows.map((r) => r.ts), rows.map((r) => r.deviceId), rows.map((r) => r.clientId), rows.map((r) => r.topic),
      rows.map((r) => r.reason), rows.map((r) => r.detail), rows.map((r) => r.bytes), rows.map((r) => r.excerpt),
    ])
  }

  async function write(): Promise<void> {
    if (writing || queue.length === 0) return
    const rows = queue
    queue = []
    writing = (async () => {
      try {
        await insert(rows)
        backoff = false
      } catch (err) {
        if (pgBlameOf(err) === 'database') {
          // Back in front of what came meanwhile, within the bound (the newest go); tried again later.
          const all = [...rows, ...queue]
          dropped += Math.max(0, all.length - opts.maxQueued)
          queue = all.slice(0, opts.maxQueued)
          failedWrites++
          backoff = true
          logger.warn({ err: (err as Error).message, rows: rows.length }, 'dead letters not written: kept to try again')
          return
        }
        // One row the database will not take: the others go in one at a time, that one is logged and skipped.
        for (const r of rows) {
          try {
            await insert([r])
          } catch (e) {
            dropped++
            logger.error({ err: (e as Error).message, reason: r.reason, deviceId: r.deviceId }, 'a dead letter could not be written')
          }
        }
      }
      sincePrune += rows.length
      if (sincePrune >= 1000) {
        sincePrune = 0
        await pool.query('DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - $1', [opts.maxRows])
          .catch((err: unknown) => { logger.warn({ err: (err as Error).message }, 'pruning dead letters failed; the next group tries again') })
      }
    })()
    await writing
    writing = undefined
    if (queue.length > 0) schedule()
  }

  const store: DeadLetters = {
    add(d: NewDeadLetter): void {
      byReason.set(d.reason, (byReason.get(d.reason) ?? 0) + 1)
      if (queue.length >= opts.maxQueued) {
        dropped++
        return
      }
      queue.push({
        ts: d.ts, deviceId: d.deviceId ?? null, clientId: d.clientId ?? null, topic: withoutNul(d.topic.slice(0, 512)), reason: d.reason,
        detail: withoutNul(d.detail.slice(0, 1024)), bytes: d.payload.byteLength, excerpt: withoutNul(excerpt(d.payload)),
      })
      schedule()
    },
    async list(filter): Promise<DeadLetter[]> {
      const { rows } = await pool.query<Row>(
        'SELECT * FROM dead_letters WHERE ($1::text IS NULL OR device_id = $1) AND id < $2 ORDER BY id DESC LIMIT $3',
        [filter.deviceId ?? null, filter.beforeId ?? Number.MAX_SAFE_INTEGER, filter.limit])
      return rows.map((r) => ({
        id: r.id, ts: r.ts, deviceId: r.device_id, clientId: r.client_id, topic: r.topic, reason: r.reason, detail: r.detail,
        payloadBytes: r.payload_bytes, payloadExcerpt: r.payload_excerpt,
      }))
    },
    countsByReason: () => Object.fromEntries(byReason),
  }

  /** Writes what is queued now and waits for it. */
  async function flush(): Promise<void> {
    if (timer) { clearTimeout(timer); timer = undefined }
    if (writing) await writing
    await write()
  }

  return {
    ...store,
    flush,
    stats: () => ({ queued: queue.length, dropped, failedWrites }),
    async close(): Promise<void> {
      await flush()
      if (timer) { clearTimeout(timer); timer = undefined }
    },
  }
}
