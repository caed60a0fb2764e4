import type { Db } from '../../common/sqlite.js'
import type { Writer } from '../storage/group-commit.js'

/**
 * Owns the dead-letter table: every payload the hub could not accept, with the
 * reason, kept for operators to inspect. The table is capped (oldest rows go
 * first) so a hostile or broken device cannot fill the disk; counts by reason
 * are kept in memory for metrics even when rows are pruned. This is the hub's
 * own SQLite file; dead-letters-postgres.ts keeps them in a PostgreSQL shared
 * by several hubs, behind the same interface (`DeadLetters`).
 */

export interface DeadLetter {
  readonly id: number
  readonly ts: number
  readonly deviceId: string | null
  readonly clientId: string | null
  readonly topic: string
  readonly reason: string
  readonly detail: string
  readonly payloadBytes: number
  /** The first bytes of the payload, as UTF-8 where it decodes, else base64 prefixed with "base64:". */
  readonly payloadExcerpt: string
}

export interface NewDeadLetter {
  readonly ts: number
  readonly deviceId: string | undefined
  readonly clientId: string | undefined
  readonly topic: string
  readonly reason: string
  readonly detail: string
  readonly payload: Buffer
}

const EXCERPT_BYTES = 256
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The first bytes of a payload as text: UTF-8 where it decodes, else base64 prefixed with "base64:". */
export function excerpt(payload: Buffer): string {
  const head = payload.subarray(0, EXCERPT_BYTES)
  try {
    return utf8.decode(head)
  } catch {
    return `base64:${head.toString('base64')}`
  }
}

interface Row { id: number; ts: number; device_id: string | null; client_id: string | null; topic: string; reason: string; detail: string; payload_bytes: number; payload_excerpt: string }

export interface DeadLetters {
  /** Keeps a refused message (written with the next group); counted by reason at once. */
  add(d: NewDeadLetter): void
  /** Newest first, optionally one device's, below an id (paging). */
  list(filter: { deviceId?: string | undefined; beforeId?: number | undefined; limit: number }): Promise<DeadLetter[]>
  /** Counts by reason since this hub started, kept even when rows are pruned. */
  countsByReason(): Record<string, number>
}

export function createDeadLetters(db: Db, writer: Writer, options: { maxRows: number }): DeadLetters {
  const stmts = {
    insert: db.prepare<[number, string | null, string | null, string, string, string, number, string]>(
      'INSERT INTO dead_letters (ts, device_id, client_id, topic, reason, detail, payload_bytes, payload_excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    prune: db.prepare<[number]>('DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?'),
    list: db.prepare<{ device: string | null; before: number; limit: number }, Row>(
      'SELECT * FROM dead_letters WHERE (:device IS NULL OR device_id = :device) AND id < :before ORDER BY id DESC LIMIT :limit'),
  }
  const byReason = new Map<string, number>()
  let sinceprune = 0

  function add(d: NewDeadLetter): void {
    byReason.set(d.reason, (byReason.get(d.reason) ?? 0) + 1)
    const text = excerpt(d.payload)
    writer.enqueue(() => {
      stmts.insert.run(d.ts, d.deviceId ?? null, d.clientId ?? null, d.topic.slice(0, 512), d.reason, d.detail.slice(0, 1024), d.payload.byteLength, text)
      if (++sinceprune >= 1000) {
        sinceprune = 0
        stmts.prune.run(options.maxRows)
      }
    })
  }

  return {
    add,
    async list(filter: { deviceId?: string | undefined; beforeId?: number | undefined; limit: number }): Promise<DeadLetter[]> {
      return stmts.list.all({ device: filter.deviceId ?? null, before: filter.beforeId ?? Number.MAX_SAFE_INTEGER, limit: filter.limit }).map((r) => ({
        id: r.id, ts: r.ts, deviceId: r.device_id, clientId: r.client_id, topic: r.topic, reason: r.reason, detail: r.detail,
        payloadBytes: r.payload_bytes, payloadExcerpt: r.payload_excerpt,
      }))
    },
    countsByReason: (): Record<string, number> => Object.fromEntries(byReason),
  }
}
