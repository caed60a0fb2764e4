import { randomUUID } from 'node:crypto'
import type Database from 'better-sqlite3'
import { join } from 'node:path'
import { migrate, openDatabase, type Db } from '../common/sqlite.js'
import type { Logger } from '../common/logger.js'
import { ensurePrivateDir } from '../common/private-files.js'

/**
 * The device ledger: one SQLite file, `<dataDir>/ledger.db`, that holds
 * everything the agent must not lose across a crash or a power cut (meta,
 * outbox, the job queue, recent command ids). One file means one
 * transaction can cover "job result + its outgoing update" (DESIGN.md, "The
 * device ledger survives power loss").
 *
 * The ledger owns the file, the schema migrations and the meta table; each
 * other table is owned (statements and all) by the module named for it.
 */

export const LEDGER_FILE = 'ledger.db'

/**
 * The ledger's page size. Every commit appends a frame of one page per page it
 * changed to the WAL, so the page size is the smallest write a sample can
 * cost: a tick's few rows fill a quarter of a 1 KiB page, and a whole 4 KiB
 * page at SQLite's default (issue #13, flash writes).
 */
export const LEDGER_PAGE_SIZE = 1024

/** A ledger with another page size is rebuilt at open (VACUUM) when its file is smaller than this. */
const REPAGE_MAX_BYTES = 8 * 1024 * 1024

/** Keys of the meta table. A new database is a new store: a new storeId and a new seq space. */
export const META_KEYS = {
  storeId: 'storeId',
  epoch: 'epoch',
  droppedTelemetry: 'droppedTelemetry',
  droppedEvents: 'droppedEvents',
} as const

export type MetaCounter = typeof META_KEYS.epoch | typeof META_KEYS.droppedTelemetry | typeof META_KEYS.droppedEvents

/**
 * Numbered, append-only migrations: index i brings the schema from version i
 * to i + 1. Never edit a released entry; add a new one.
 */
export const LEDGER_MIGRATIONS: readonly string[] = [
  // 1: meta + outbox.
  // meta.value has no declared type so integers stay integers and ids stay text.
  // outbox.seq is AUTOINCREMENT, not a plain rowid alias: a plain rowid may
  // reuse the largest value after it is deleted (an acked, emptied outbox would
  // hand out seq 1 again and the hub would drop it as a duplicate);
  // AUTOINCREMENT never goes back within this store.
  // No index on kind: telemetry dominates the outbox, so finding the oldest
  // telemetry by a rowid-order scan touches few pages, and an index would cost
  // a second b-tree write on every sample.
  `
  CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('telemetry', 'event')),
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,
    bytes INTEGER NOT NULL
  );
  `,
  // 2: the job queue (agent/job-queue.ts owns both tables).
  // jobs keeps a rowid (the key is composite), and rowid order is arrival
  // order: the partial index lists queued rows by priority, then rowid (every
  // index ends in the rowid), so "next to run" is the first entries of a
  // small index. Done rows stay as the dedup record of an (exec_id, attempt).
  // job_updates.id is AUTOINCREMENT for the same reason as outbox.seq: the hub
  // acks updates by id, so an id must never be handed out twice in a store.
  // body is the wire JobUpdate's JSON without its id, which the reporter
  // splices in.
  // The CHECKs are spelled as OR chains: SQLite evaluates `x IN (list)` in a
  // CHECK by building a temporary index on every write, which measured three
  // times slower for the whole enqueue -> claim -> complete path.
  `
  CREATE TABLE jobs (
    exec_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    version INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    expires_at INTEGER,
    priority INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source = 'hub' OR source = 'local'),
    state TEXT NOT NULL CHECK (state = 'queued' OR state = 'running' OR state = 'done'),
    outcome TEXT CHECK (outcome = 'succeeded' OR outcome = 'failed' OR outcome = 'timed_out'
      OR outcome = 'rejected' OR outcome = 'expired' OR outcome = 'canceled'),
    received_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (exec_id, attempt)
  );
  CREATE INDEX jobs_queued ON jobs (priority DESC) WHERE state = 'queued';

  CREATE TABLE job_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exec_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL
  );
  `,
  // 3: recent command ids (agent/command-records.ts owns the table), so a
  // repeated delivery of a command never runs it twice, even after a restart.
  // An id is recorded `running` (committed) before its handler starts, and
  // `done` with the response it got; a repeat of a done id gets that response
  // again. expires_at keeps a row while a repeat could still be run; the
  // index on received_at makes pruning by age and by count a range scan.
  `
  CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state = 'running' OR state = 'done'),
    response TEXT,
    finished_at INTEGER
  ) WITHOUT ROWID;
  CREATE INDEX commands_received ON commands (received_at);
  `,
  // 4: no table changes; the version marks a ledger an older agent must not
  // open. Since this version the outbox keeps sqlite_sequence up to 65,535
  // seqs ahead of the rows (agent/outbox.ts), and the rows of samples taken
  // before the agent knew the hub's time carry their monotonic reading and
  // boot id in the body until they are sent (agent/hub-clock.ts). An older
  // agent would send those bodies as they are, with a key the hub does not
  // take and a timestamp that was never corrected; the version bump makes it
  // refuse the ledger instead ("database schema version 4 is newer than this
  // program knows"), as docs/raspberry-pi.md says a downgrade is.
  `
  -- schema unchanged (see the comment in agent/ledger.ts)
  `,
]

export interface LedgerOptions {
  readonly dataDir: string
  /**
   * NORMAL (default): a commit survives a crash of the process, and a power
   * cut can lose at most the last few commits (the WAL is fsynced at
   * checkpoints, not per commit). That is the right trade for a device that
   * samples several times a second on an SD card: FULL fsyncs every tick, which
   * costs SD-card wear and milliseconds per tick, and the samples lost to a
   * power cut are ones nobody could have sent anyway. FULL is for devices whose
   * every record matters (e.g. metering); the ack protocol is correct with both.
   */
  readonly synchronous?: 'NORMAL' | 'FULL'
  /** Gets the warning about a data dir open to others, and file-mode fixes. */
  readonly logger?: Logger
}

/** Owns the ledger file's lifecycle; `close()` is safe to call twice. */
export class Ledger {
  readonly db: Db
  readonly path: string
  readonly storeId: string
  /** True when this open created the database (a new store). */
  readonly created: boolean
  private readonly getMeta: Database.Statement<[string], unknown>
  private readonly addMeta: Database.Statement<[number, string]>
  private closed = false

  constructor(options: LedgerOptions) {
    this.path = join(options.dataDir, LEDGER_FILE)
    // The ledger holds job results including shell output: the dir is 0700 when
    // we make it, a warning when it exists open to others (#12 section 4).
    ensurePrivateDir(options.dataDir, options.logger)
    // Exclusive: the agent is the ledger's only user; this also keeps a second
    // agent off the same data dir ("database is locked" at open).
    this.db = openDatabase(this.path, { synchronous: options.synchronous ?? 'NORMAL', logger: options.logger, pageSize: LEDGER_PAGE_SIZE, exclusive: true })
    try {
      this.repage(options.logger)
      // A small page cache: the outbox is append at the tail, read and delete
      // at the head, so hot pages are few; the 2 MiB default times 200 agents
      // in one simulator process would be 400 MiB.
      this.db.pragma('cache_size = -512')
      // Truncate the WAL after checkpoints so a backlog burst does not leave a
      // large file behind on a small disk.
      this.db.pragma('journal_size_limit = 4194304')
      const before = this.db.pragma('user_version', { simple: true }) as number
      migrate(this.db, LEDGER_MIGRATIONS)
      this.created = before === 0
      this.getMeta = this.db.prepare<[string], unknown>('SELECT value FROM meta WHERE key = ?').pluck()
      this.addMeta = this.db.prepare<[number, string]>('UPDATE meta SET value = value + ? WHERE key = ?')
      const init = this.db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)')
      this.db.transaction(() => {
        init.run(META_KEYS.storeId, randomUUID())
        init.run(META_KEYS.epoch, 0)
        init.run(META_KEYS.droppedTelemetry, 0)
        init.run(META_KEYS.droppedEvents, 0)
      })()
      this.storeId = String(this.getMeta.get(META_KEYS.storeId))
    } catch (err) {
      this.db.close()
      throw err
    }
  }

  /**
   * A ledger made before LEDGER_PAGE_SIZE (4 KiB pages) costs four times the
   * flash per commit: rebuild it with the small pages once, while it is small
   * (a drained outbox); a large one is left for a later start. WAL mode cannot
   * change the page size, so the rebuild runs in rollback-journal mode, which
   * is as safe across a power cut.
   */
  private repage(logger: Logger | undefined): void {
    const current = this.db.pragma('page_size', { simple: true }) as number
    if (current === LEDGER_PAGE_SIZE) return
    const bytes = current * (this.db.pragma('page_count', { simple: true }) as number)
    if (bytes > REPAGE_MAX_BYTES) {
      logger?.info({ pageSize: current, bytes }, 'the ledger keeps its page size until it is smaller (it is rebuilt with smaller pages, which wear the SD card less, at a start when it holds under 8 MiB)')
      return
    }
    this.db.pragma('journal_mode = DELETE')
    this.db.pragma(`page_size = ${LEDGER_PAGE_SIZE}`)
    // In rollback-journal mode only FULL syncs the journal before the database is rewritten.
    this.durably(() => this.db.exec('VACUUM'))
    this.db.pragma('journal_mode = WAL')
    logger?.info({ from: current, to: LEDGER_PAGE_SIZE }, 'ledger rebuilt with smaller pages')
  }

  /** The counter's current value (0 when missing). */
  counter(key: MetaCounter): number {
    return Number(this.getMeta.get(key) ?? 0)
  }

  /** Adds to a counter; joins the caller's transaction when there is one. */
  addToCounter(key: MetaCounter, delta: number): void {
    this.addMeta.run(delta, key)
  }

  /**
   * Increments and commits the connection epoch, returning the new value. Run
   * before every connection attempt so a Will of an older attempt can never
   * carry the epoch of a newer birth (DESIGN.md, "Presence"). This one commit is
   * always fsynced, whatever `synchronous` says: an epoch that a power cut
   * rolled back would repeat one the hub already saw, and the hub would take
   * the device's births for stale ones. One fsync per connection attempt costs
   * nothing that matters.
   */
  nextEpoch(): number {
    return this.durably(() => this.db.transaction(() => {
      this.addMeta.run(1, META_KEYS.epoch)
      return this.counter(META_KEYS.epoch)
    }).immediate())
  }

  /**
   * Runs `commit` (which commits a transaction) with synchronous=FULL,
   * whatever the ledger's mode: for the few commits a power cut must not roll
   * back (the epoch; a job's claim, which is what keeps a run from starting
   * twice). FULL's fsync covers every earlier commit in the WAL too.
   */
  durably<T>(commit: () => T): T {
    const mode = this.db.pragma('synchronous', { simple: true }) as number
    if (mode >= 2) return commit()
    this.db.pragma('synchronous = FULL')
    try {
      return commit()
    } finally {
      this.db.pragma(`synchronous = ${mode}`)
    }
  }

  get isOpen(): boolean {
    return !this.closed
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.db.close()
  }
}
