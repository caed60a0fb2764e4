import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

export type Db = Database.Database

export interface OpenOptions {
  /**
   * FULL makes every commit durable across power loss (fsync of the WAL on
   * commit); NORMAL survives a process crash but may lose the last commits on
   * power loss. Group commit makes FULL affordable on the hub.
   */
  readonly synchronous: 'FULL' | 'NORMAL'
}

/** Opens (creating folders as needed) a SQLite file in WAL mode. */
export function openDatabase(path: string, options: OpenOptions): Db {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${options.synchronous}`)
  db.pragma('foreign_keys = ON')
  db.pragma('busy_timeout = 5000')
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
