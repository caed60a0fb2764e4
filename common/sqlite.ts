import { dirname } from 'node:path'
import type BetterSqlite3 from 'better-sqlite3'
import { requireCjs } from './cjs.js'
import type { Logger } from './logger.js'
import { ensurePrivateDir, ensurePrivateFile, tightenIfExists } from './private-files.js'

/** better-sqlite3, loaded with require() (see common/cjs.ts). */
const Database = requireCjs('better-sqlite3') as typeof BetterSqlite3

export type Db = BetterSqlite3.Database

export interface OpenOptions {
  /**
   * FULL makes every commit durable across power loss (fsync of the WAL on
   * commit); NORMAL survives a process crash but may lose the last commits on
   * power loss. Group commit makes FULL affordable on the hub.
   */
  readonly synchronous: 'FULL' | 'NORMAL'
  /** The page size of a database this open creates (SQLite's default is 4096); an existing one keeps its own. */
  readonly pageSize?: number
  /**
   * Hold the file's lock for as long as the connection is open
   * (locking_mode=EXCLUSIVE, set before WAL mode so no -shm file is ever
   * made): no other process can read or write it meanwhile, and the WAL
   * index lives in this process's memory instead of a shared file that
   * every commit would dirty.
   */
  readonly exclusive?: boolean
  /** Where "tightened hub.db from 0644 to 0600" goes. */
  readonly logger?: Logger
}

/** The files SQLite keeps for one database in WAL mode. */
export function sqliteFiles(path: string): readonly string[] {
  return [path, `${path}-wal`, `${path}-shm`]
}

/**
 * Opens a SQLite file in WAL mode, private to this user (#12 section 4): a
 * missing folder is made 0700 (its parents as the umask makes them), a missing
 * database file is made 0600 before SQLite opens it, and a database, WAL or
 * SHM file left with looser bits is tightened to 0600. SQLite creates the WAL
 * and SHM with the database file's mode (unix `robust_open` copies it), so a
 * 0600 database gives 0600 companions; an old -wal/-shm from before this rule
 * is tightened here because SQLite reuses it as it is. Warning about a shared
 * folder is the owner's job (hub.ts, Ledger), which knows what the folder is.
 */
export function openDatabase(path: string, options: OpenOptions): Db {
  if (path !== ':memory:') {
    ensurePrivateDir(dirname(path))
    ensurePrivateFile(path, options.logger)
    for (const f of sqliteFiles(path).slice(1)) tightenIfExists(f, options.logger)
  }
  const db = new Database(path)
  try {
    if (options.pageSize !== undefined) db.pragma(`page_size = ${options.pageSize}`)
    if (options.exclusive === true) db.pragma('locking_mode = EXCLUSIVE')
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${options.synchronous}`)
    db.pragma('foreign_keys = ON')
    db.pragma('busy_timeout = 5000')
  } catch (err) {
    // A file another process holds (SQLITE_BUSY): the handle must not keep what locks it took until a GC.
    db.close()
    throw err
  }
  return db
}

/**
 * Applies numbered, append-only migrations. `migrations[i]` brings the schema
 * from version i to i + 1; a released migration is never edited, only
 * followed by a new one. Each runs in its own transaction with the version bump.
 */
export function migrate(db: Db, migrations: readonly string[]): void {
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > migrations.length) {
    throw new Error(`database schema version ${current} is newer than this program knows (${migrations.length}); upgrade rollcall`)
  }
  for (let v = current; v < migrations.length; v++) {
    const sql = migrations[v]
    if (sql === undefined) continue
    db.transaction(() => {
      db.exec(sql)
      db.pragma(`user_version = ${v + 1}`)
    })()
  }
}
