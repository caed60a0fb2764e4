import type Database from 'better-sqlite3'
import type { Logger } from '../common/logger.js'
import type { CommandRequest } from '../protocol/messages.js'
import { INTERRUPTED, responseJson } from './command-response.js'
import type { Ledger } from './ledger.js'

/**
 * The ledger's `commands` table, the record of recent command ids (the
 * lifecycle of an id is in agent/command-runner.ts's header). A new id is
 * inserted `running` before its handler starts, or `done` with its refusal;
 * its response is written when it ends; a repeat reads its row. Rows a
 * previous run left `running` are recorded INTERRUPTED at start.
 *
 * Done ids are pruned once their expiresAt has passed (a repeat would be
 * refused as EXPIRED anyway) and they are older than COMMAND_KEEP_MS or
 * beyond the newest COMMAND_KEEP_ROWS: at start, every PRUNE_INTERVAL_MS,
 * and after a burst doubled the table. Every statement is prepared once.
 */

/** Done ids are kept at least this long (if their expiresAt has passed, at most about this long). */
export const COMMAND_KEEP_MS = 3_600_000
/** ... and beyond the newest this many, done ids whose expiresAt has passed are pruned. */
export const COMMAND_KEEP_ROWS = 1000
export const PRUNE_INTERVAL_MS = 600_000

export interface CommandRow {
  state: 'running' | 'done'
  response: string | null
}

export class CommandRecords {
  private readonly ledger: Ledger
  private readonly log: Logger
  private readonly insert: Database.Statement<[string, string, number, number, string, string | null, number | null]>
  private readonly get: Database.Statement<[string], CommandRow>
  private readonly finishStmt: Database.Statement<[string, number, string]>
  private readonly pruneStmt: Database.Statement<{ now: number; cutoff: number; keep: number }>
  private readonly count: Database.Statement<[], number>
  private readonly runningIds: Database.Statement<[], string>
  private prunePending = false
  private rows = 0
  private pruneAtRows = 2 * COMMAND_KEEP_ROWS

  constructor(ledger: Ledger, log: Logger) {
    this.ledger = ledger
    this.log = log
    const db = ledger.db
    this.insert = db.prepare(`INSERT INTO commands (id, name, received_at, expires_at, state, response, finished_at)
      VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`)
    this.get = db.prepare<[string], CommandRow>('SELECT state, response FROM commands WHERE id = ?')
    this.finishStmt = db.prepare<[string, number, string]>('UPDATE commands SET state = \'done\', response = ?, finished_at = ? WHERE id = ?')
    this.pruneStmt = db.prepare(`DELETE FROM commands WHERE state = 'done' AND expires_at <= :now
      AND (received_at < :cutoff OR id NOT IN (SELECT id FROM commands ORDER BY received_at DESC LIMIT :keep))`)
    this.count = db.prepare<[], number>('SELECT COUNT(*) FROM commands').pluck()
    this.runningIds = db.prepare<[], string>('SELECT id FROM commands WHERE state = \'running\'').pluck()
  }

  /**
   * Records a new id at `at`: `running` when `response` is null, else `done`
   * with it (a refusal). False when the id is recorded already (a repeat).
   * Throws when the ledger cannot write it.
   */
  add(req: Pick<CommandRequest, 'id' | 'name' | 'expiresAt'>, at: number, response: string | null): boolean {
    return this.insert.run(req.id, req.name, at, req.expiresAt, response === null ? 'running' : 'done', response, response === null ? null : at).changes > 0
  }

  /** The row of a recorded id; throws when the ledger cannot be read. */
  row(id: string): CommandRow | undefined {
    return this.get.get(id)
  }

  /** Records an id's response: it is `done`. Throws when the ledger cannot write it. */
  finish(id: string, response: string, at: number): void {
    this.finishStmt.run(response, at, id)
  }

  /**
   * Counts a row just added; true when the table has doubled since the last
   * prune and no prune is pending yet (the caller runs one soon).
   */
  noteRow(): boolean {
    this.rows++
    if (this.rows < this.pruneAtRows || this.prunePending) return false
    this.prunePending = true
    return true
  }

  /** Deletes done ids past keeping (see the header); returns how many. */
  prune(now: number): number {
    this.prunePending = false
    if (!this.ledger.isOpen) return 0
    try {
      const deleted = this.pruneStmt.run({ now, cutoff: now - COMMAND_KEEP_MS, keep: COMMAND_KEEP_ROWS }).changes
      this.rows = this.count.get() ?? 0
      // Amortized: the next count-triggered prune waits until the table doubles again.
      this.pruneAtRows = Math.max(2 * COMMAND_KEEP_ROWS, 2 * this.rows)
      return deleted
    } catch (err) {
      this.log.warn({ err }, 'could not prune command ids')
      return 0
    }
  }

  /** Records INTERRUPTED for the ids a previous run left `running`; returns how many. */
  recoverInterrupted(now: number): number {
    const ids = this.runningIds.all()
    if (ids.length === 0) return 0
    this.ledger.db.transaction(() => {
      for (const id of ids) this.finishStmt.run(responseJson(id, INTERRUPTED).json, Math.floor(now), id)
    })()
    return ids.length
  }
}
