import type Database from 'better-sqlite3'
import { META_KEYS, type Ledger } from './ledger.js'
import { DEFAULT_OUTBOX_LIMITS, dropChunk, oldestToDrop, overLimits, type OutboxLimits } from './outbox-overflow.js'

/**
 * The outbox: every telemetry sample and device event is written here first,
 * with its seq, and deleted only when the hub's cumulative telemetry ack says
 * it is stored (persist first, delete on the peer's ack; PUBACK proves
 * nothing). Telemetry and events share one table and one seq space, so one
 * ack covers both.
 *
 * A row's `body` is the JSON text of the wire item *without* its seq (seq is
 * the row id, known only after the insert), e.g.
 * `{"sensor":"cpu.load","ts":1700000000000,"value":0.5}`. The sender splices
 * the seq in with string operations, so a batch is built by joining strings,
 * never by parsing and re-serialising.
 *
 * Overflow policy (the outbox is bounded by rows and bytes): when an append
 * pushes it over a limit, rows are dropped by kind priority, oldest first:
 * all telemetry goes before any event is dropped, because events are rare and
 * each one says something a later sample cannot; kinds not in DROP_ORDER (job
 * results, later) are never dropped, and an outbox holding only those may
 * exceed its limits rather than lose them. Every dropped row is counted in
 * meta, in the same transaction that drops it. How many rows a drop takes is
 * worked out in outbox-overflow.ts.
 *
 * Flash wear (issue #13): on an SD card every commit costs at least one 4 KiB
 * page written, so the steady state is one commit per append and nothing else:
 *  - Acked rows are let go at once in memory (counts, stats, reads) and
 *    deleted from the file by an append's transaction once DELETE_BATCH_ROWS
 *    of them wait, or by `flush()` at a clean stop; never by a commit of
 *    their own, and in bulk, which frees whole pages instead of rewriting the
 *    head page at every ack. A row acked but still in the
 *    file when the process dies is sent again after a restart, which the hub
 *    drops as a duplicate (it dedups by seq); the first ack after the birth
 *    lets it go before that in the normal case.
 *  - Seqs are handed out here, not by AUTOINCREMENT, which rewrites the
 *    sqlite_sequence page on every insert. sqlite_sequence still exists (the
 *    table is AUTOINCREMENT since migration 1) and is kept *ahead* of every
 *    seq handed out, moved in blocks of SEQ_BLOCK, so SQLite never has to
 *    move it. The newest seq ever handed out is max(MAX(seq) in the table,
 *    meta.outboxSeq); meta.outboxSeq is written only by the rare deletes that
 *    remove the newest row (an overflow drop, a flush of a fully acked
 *    outbox, a renumbering). So a seq is still never handed out twice in a
 *    store, which is all AUTOINCREMENT was there for.
 */

export const OUTBOX_KINDS = ['telemetry', 'event'] as const
export type OutboxKind = (typeof OUTBOX_KINDS)[number]

/** Which kinds overflow may drop, in the order it drops them. */
export const DROP_ORDER: readonly OutboxKind[] = ['telemetry', 'event']

const DROPPED_COUNTER = {
  telemetry: META_KEYS.droppedTelemetry,
  event: META_KEYS.droppedEvents,
} as const

export interface OutboxRecord {
  readonly kind: OutboxKind
  readonly ts: number
  /** JSON object text of the wire item without seq; see `sampleBody` / `eventBody`. */
  readonly body: string
}

export interface OutboxRow {
  readonly seq: number
  readonly kind: OutboxKind
  readonly ts: number
  readonly body: string
  readonly bytes: number
}

/** Acked rows an append deletes from the file at once (see the header). */
export const DELETE_BATCH_ROWS = 256

/** How far sqlite_sequence is moved ahead of the seqs handed out, in one write. */
export const SEQ_BLOCK = 65_536

/** meta key: a lower bound of the newest seq ever handed out, for when the table no longer holds it. */
const OUTBOX_SEQ_KEY = 'outboxSeq'

export interface OutboxStats {
  readonly backlogRows: number
  /** Sum of the rows' body sizes in bytes (what would go on the wire, minus framing). */
  readonly backlogBytes: number
  readonly droppedTelemetry: number
  readonly droppedEvents: number
  /** Oldest unacked seq, or undefined when the outbox is empty. */
  readonly oldestSeq: number | undefined
  /** Newest seq ever assigned in this store (0 before the first). */
  readonly newestSeq: number
}

/**
 * The body of a telemetry sample. The sensor name must already satisfy
 * SENSOR_NAME_PATTERN (no characters JSON would escape) and value must be
 * finite; the sampler checks both once, not per sample.
 */
export function sampleBody(sensor: string, ts: number, value: number): string {
  return `{"sensor":"${sensor}","ts":${ts},"value":${value}}`
}

/** The body of a device event; `data` is optional and JSON-serialisable. */
export function eventBody(ts: number, kind: string, level: string, message: string, data?: Record<string, unknown>): string {
  return JSON.stringify(data === undefined ? { ts, kind, level, message } : { ts, kind, level, message, data })
}

interface KindCount { kind: OutboxKind; n: number; b: number }

export type AppendListener = (newestSeq: number) => void

/** Owns the outbox table. Lives as long as its ledger. */
export class Outbox {
  private readonly ledger: Ledger
  private readonly limits: OutboxLimits
  private readonly insert: Database.Statement<[number, OutboxKind, number, string, number]>
  private readonly selectAfter: Database.Statement<[number, number], OutboxRow>
  private readonly countRange: Database.Statement<[number, number], KindCount>
  private readonly deleteUpTo: Database.Statement<[number]>
  private readonly updateSequence: Database.Statement<[number]>
  private readonly insertSequence: Database.Statement<[number]>
  private readonly markSeq: Database.Statement<[number]>
  private readonly oldestOfKind: Database.Statement<[OutboxKind, number, number], [number, number]>
  private readonly deleteKindUpTo: Database.Statement<[OutboxKind, number]>
  private readonly selectOldest: Database.Statement<[number], number>
  private readonly appendTx: (records: readonly OutboxRecord[]) => void
  private readonly appendBodiesTx: (ts: number, bodies: readonly string[], count: number) => void
  private readonly ackTx: (upTo: number) => number
  private readonly flushTx: () => void
  private readonly listeners = new Set<AppendListener>()
  private readonly ackListeners = new Set<(upTo: number) => void>()

  // In-memory mirror of the table's size, so the hot path never runs COUNT(*).
  private readonly rows: Record<OutboxKind, number> = { telemetry: 0, event: 0 }
  private readonly bytes: Record<OutboxKind, number> = { telemetry: 0, event: 0 }
  private newest = 0
  /** sqlite_sequence's value: seqs up to it can be handed out without writing it. */
  private reserved = 0
  /**
   * Every row with seq <= released is acked and gone as far as anyone reading
   * this outbox can tell; some may still be in the file (see the header).
   */
  private released = 0
  /** Rows at or below `released` may still be in the file. */
  private unflushed = false
  /** Acked rows released since the last delete (an estimate: overflow drops may have deleted some). */
  private unflushedRows = 0
  /**
   * The newest seq this ledger had numbered when it was opened, until the
   * first handshake with the hub; undefined after it (see resyncWithHub).
   */
  private openSeq: number | undefined
  private readonly shiftTx: (from: number, shift: number) => void
  private readonly dropped: Record<OutboxKind, number> = { telemetry: 0, event: 0 }

  constructor(ledger: Ledger, limits: OutboxLimits = DEFAULT_OUTBOX_LIMITS) {
    this.ledger = ledger
    this.limits = limits
    const db = ledger.db
    this.insert = db.prepare('INSERT INTO outbox (seq, kind, ts, body, bytes) VALUES (?, ?, ?, ?, ?)')
    this.selectAfter = db.prepare('SELECT seq, kind, ts, body, bytes FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?')
    this.countRange = db.prepare('SELECT kind, COUNT(*) AS n, TOTAL(bytes) AS b FROM outbox WHERE seq > ? AND seq <= ? GROUP BY kind')
    this.deleteUpTo = db.prepare('DELETE FROM outbox WHERE seq <= ?')
    this.oldestOfKind = db.prepare<[OutboxKind, number, number], [number, number]>('SELECT seq, bytes FROM outbox WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?').raw()
    this.deleteKindUpTo = db.prepare('DELETE FROM outbox WHERE kind = ? AND seq <= ?')
    this.selectOldest = db.prepare<[number], number>('SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1').pluck()
    this.updateSequence = db.prepare<[number]>("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'")
    this.insertSequence = db.prepare<[number]>("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)")
    this.markSeq = db.prepare<[number]>(`UPDATE meta SET value = MAX(value, ?) WHERE key = '${OUTBOX_SEQ_KEY}'`)

    for (const row of db.prepare<[], KindCount>('SELECT kind, COUNT(*) AS n, TOTAL(bytes) AS b FROM outbox GROUP BY kind').all()) {
      this.rows[row.kind] = row.n
      this.bytes[row.kind] = row.b
    }
    const sequence = db.prepare<[], number>("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").pluck().get() ?? 0
    // A ledger from before this allocator has sqlite_sequence = the newest seq
    // exactly: that is the starting mark. Writes nothing once the key exists.
    db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run(OUTBOX_SEQ_KEY, sequence)
    const mark = Number(ledger.db.prepare<[string], unknown>('SELECT value FROM meta WHERE key = ?').pluck().get(OUTBOX_SEQ_KEY) ?? 0)
    const maxSeq = db.prepare<[], number | null>('SELECT MAX(seq) FROM outbox').pluck().get() ?? 0
    this.newest = Math.max(mark, maxSeq)
    this.reserved = sequence
    this.openSeq = this.newest
    const shiftDown = db.prepare<[number, number]>('UPDATE outbox SET seq = -(seq + ?) WHERE seq > ?')
    const flip = db.prepare('UPDATE outbox SET seq = -seq WHERE seq < 0')
    this.shiftTx = db.transaction((from: number, shift: number) => {
      this.deleteReleased()
      // Two steps so no row ever lands on a seq another row still holds.
      shiftDown.run(shift, from)
      flip.run()
      this.markSeq.run(this.newest + shift)
      if (this.newest + shift > this.reserved) this.reserve(this.newest + shift + SEQ_BLOCK)
    })
    this.flushTx = db.transaction(() => { this.deleteReleased() })
    this.dropped.telemetry = ledger.counter(META_KEYS.droppedTelemetry)
    this.dropped.event = ledger.counter(META_KEYS.droppedEvents)

    this.appendTx = db.transaction((records: readonly OutboxRecord[]) => {
      if (this.unflushedRows >= DELETE_BATCH_ROWS) this.deleteReleased()
      for (const r of records) this.insertOne(r.kind, r.ts, r.body)
      this.enforceLimits()
    })
    this.appendBodiesTx = db.transaction((ts: number, bodies: readonly string[], count: number) => {
      if (this.unflushedRows >= DELETE_BATCH_ROWS) this.deleteReleased()
      for (let i = 0; i < count; i++) this.insertOne('telemetry', ts, bodies[i]!)
      this.enforceLimits()
    })
    // Reads only: the rows leave the file with the next append (see the header).
    this.ackTx = db.transaction((upTo: number) => {
      let released = 0
      for (const c of this.countRange.all(this.released, upTo)) {
        this.rows[c.kind] -= c.n
        this.bytes[c.kind] -= c.b
        released += c.n
      }
      if (upTo > this.released) {
        this.released = upTo
        this.unflushed = true
        this.unflushedRows += released
      }
      return released
    })
  }

  /** Appends records in one transaction (a sensor tick writes all its samples at once). */
  append(records: readonly OutboxRecord[]): void {
    if (records.length === 0) return
    this.guarded(() => { this.appendTx(records) })
    this.notify()
  }

  /**
   * The sampler's path: the first `count` bodies of `bodies`, all telemetry
   * with the same ts, in one transaction. Takes a reused array so a tick
   * allocates nothing but the body strings.
   */
  appendTelemetry(ts: number, bodies: readonly string[], count = bodies.length): void {
    if (count <= 0) return
    this.guarded(() => { this.appendBodiesTx(ts, bodies, count) })
    this.notify()
  }

  /** Up to `limit` rows with seq > `seq`, in seq order (never a released row). */
  readAfter(seq: number, limit: number): OutboxRow[] {
    return this.selectAfter.all(Math.max(seq, this.released), limit)
  }

  /**
   * Deletes from the file the rows acked since the last append, in a
   * transaction of its own; for a clean stop, so a stopped agent's ledger
   * holds only unacked rows. Writes nothing when there is nothing to delete.
   */
  flush(): void {
    if (!this.unflushed) return
    this.guarded(() => { this.flushTx() })
  }

  /** Lets go of every row with seq <= upTo (the hub has stored them); returns how many. */
  ackUpTo(upTo: number): number {
    let deleted = 0
    this.guarded(() => { deleted = this.ackTx(upTo) })
    for (const listener of this.ackListeners) listener(upTo)
    return deleted
  }

  /** Called (synchronously, after commit) with the hub's cumulative mark whenever acked rows are let go. */
  onAck(listener: (upTo: number) => void): () => void {
    this.ackListeners.add(listener)
    return () => { this.ackListeners.delete(listener) }
  }

  /**
   * The first answer of the hub after this ledger was opened: it holds every
   * seq <= hubMark of this store. Normally that never exceeds what the ledger
   * had numbered when it opened. If it does, a power cut rolled back the
   * ledger's last commits after the hub had stored them, and the rows numbered
   * since reuse seqs the hub would drop as duplicates. Those rows are
   * renumbered to follow the hub's mark, and the older rows, which the hub
   * holds, are let go. Only the first call after opening checks: later marks
   * include what this run sent. Returns what was done, or undefined.
   */
  resyncWithHub(hubMark: number): { renumbered: number; released: number } | undefined {
    const openSeq = this.openSeq
    this.openSeq = undefined
    if (openSeq === undefined || hubMark <= openSeq) return undefined
    const released = this.ackUpTo(openSeq)
    const renumbered = this.rows.telemetry + this.rows.event
    const shift = hubMark - openSeq
    this.guarded(() => { this.shiftTx(openSeq, shift) })
    this.newest += shift
    return { renumbered, released }
  }

  /** Called (synchronously, after commit) with the newest seq whenever rows are appended. */
  onAppend(listener: AppendListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Newest seq ever assigned in this store (0 before the first); no query. */
  get newestSeq(): number {
    return this.newest
  }

  /** Rows the hub has not acknowledged yet; no query (the sender puts it in every batch). */
  get backlogRows(): number {
    return this.rows.telemetry + this.rows.event
  }

  /** Sum of the backlog's body sizes in bytes; no query. */
  private get backlogBytes(): number {
    return this.bytes.telemetry + this.bytes.event
  }

  stats(): OutboxStats {
    const backlogRows = this.backlogRows
    return {
      backlogRows,
      backlogBytes: this.backlogBytes,
      droppedTelemetry: this.dropped.telemetry,
      droppedEvents: this.dropped.event,
      oldestSeq: backlogRows > 0 ? this.selectOldest.get(this.released) : undefined,
      newestSeq: this.newest,
    }
  }

  /**
   * Runs a transaction; if it rolls back, puts the in-memory mirror back the
   * way it was, so the counts never drift from the table.
   */
  private guarded(tx: () => void): void {
    const saved = [this.rows.telemetry, this.rows.event, this.bytes.telemetry, this.bytes.event, this.dropped.telemetry, this.dropped.event, this.newest, this.reserved, this.released] as const
    const unflushed = this.unflushed
    const unflushedRows = this.unflushedRows
    try {
      tx()
    } catch (err) {
      [this.rows.telemetry, this.rows.event, this.bytes.telemetry, this.bytes.event, this.dropped.telemetry, this.dropped.event, this.newest, this.reserved, this.released] = saved
      this.unflushed = unflushed
      this.unflushedRows = unflushedRows
      throw err
    }
  }

  /** Inside a transaction: moves sqlite_sequence ahead to `upTo`. */
  private reserve(upTo: number): void {
    if (this.updateSequence.run(upTo).changes === 0) this.insertSequence.run(upTo)
    this.reserved = upTo
  }

  /** Inside a transaction: deletes the released rows still in the file. */
  private deleteReleased(): void {
    if (!this.unflushed) return
    this.deleteUpTo.run(this.released)
    // The table no longer holds the newest seq: meta keeps it.
    if (this.released >= this.newest) this.markSeq.run(this.newest)
    this.unflushed = false
    this.unflushedRows = 0
  }

  private insertOne(kind: OutboxKind, ts: number, body: string): void {
    // Telemetry bodies are ASCII by construction (sensor names are ASCII,
    // numbers are), so their length is their byte count; events may not be.
    const size = kind === 'telemetry' ? body.length : Buffer.byteLength(body)
    const seq = this.newest + 1
    if (seq > this.reserved) this.reserve(seq + SEQ_BLOCK - 1)
    this.insert.run(seq, kind, ts, body, size)
    this.newest = seq
    this.rows[kind]++
    this.bytes[kind] += size
  }

  /** Runs inside the append transaction: drop, delete and count happen together or not at all. */
  private enforceLimits(): void {
    if (!overLimits(this.backlogRows, this.backlogBytes, this.limits)) return
    for (const kind of DROP_ORDER) {
      while (overLimits(this.backlogRows, this.backlogBytes, this.limits) && this.rows[kind] > 0) {
        const chunk = dropChunk(this.rows[kind], this.backlogRows, this.limits)
        const drop = oldestToDrop(this.oldestOfKind.all(kind, this.released, chunk), this.backlogRows, this.backlogBytes, this.limits)
        if (drop.rows === 0) break
        this.deleteKindUpTo.run(kind, drop.lastSeq)
        if (drop.lastSeq >= this.newest) this.markSeq.run(this.newest)
        this.rows[kind] -= drop.rows
        this.bytes[kind] -= drop.bytes
        this.dropped[kind] += drop.rows
        this.ledger.addToCounter(DROPPED_COUNTER[kind], drop.rows)
      }
    }
  }

  private notify(): void {
    for (const listener of this.listeners) listener(this.newest)
  }
}
