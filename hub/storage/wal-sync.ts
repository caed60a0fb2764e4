import { closeSync, fdatasync, fdatasyncSync, openSync } from 'node:fs'
import type { Db } from '../../common/sqlite.js'

/**
 * The fsync of a group commit, taken off the event loop.
 *
 * Under synchronous=FULL SQLite fsyncs the WAL inside COMMIT, and the hub's
 * one thread waits for the disk: 1.5 ms at the median here, 4 ms at p90,
 * 50 times a second, all of it time in which no packet is read. So a group
 * commit runs under synchronous=NORMAL (the WAL is written, not synced) and
 * the writer then asks for `fdatasync` of the WAL file in libuv's thread
 * pool; its acks, and every other after-commit step, wait for that. An ack
 * still means "survives a power cut", and the loop reads packets meanwhile.
 *
 * One sync is in flight at a time: commits made while it runs are covered by
 * the next one, so a slow disk costs fewer syncs, not a queue of them. Every
 * other transaction on the connection (jobs, the registry, migrations) keeps
 * synchronous=FULL and its own fsync, which covers the WAL's earlier frames
 * too. A failed fsync stops the writer for good (group-commit.ts, `fail`).
 * The WAL file keeps its inode for the life of the connection (SQLite
 * resets it by writing over it from the start), so the descriptor opened here
 * stays the file SQLite writes.
 */
export interface WalSync {
  /** Runs `commit` (a write transaction) without SQLite's own fsync. */
  unsynced<T>(commit: () => T): T
  /** Calls `done` once everything committed before this call is on disk. */
  sync(done: (err: Error | null) => void): void
  /** Waits for the disk on this thread: for a close, which cannot wait for a callback. */
  syncNow(): void
  close(): void
}

export function createWalSync(db: Db, dbPath: string): WalSync {
  // SQLite made the WAL when the connection went into WAL mode and wrote its migrations.
  const fd = openSync(`${dbPath}-wal`, 'r')
  // Not prepared once: SQLite applies this pragma when the statement is compiled, so running a prepared one again does nothing.
  const normal = () => db.exec('PRAGMA synchronous = NORMAL')
  const full = () => db.exec('PRAGMA synchronous = FULL')
  let inFlight = false
  let closing = false
  /** Waiting for the sync after the one in flight. */
  let next: Array<(err: Error | null) => void> = []

  function start(waiters: Array<(err: Error | null) => void>): void {
    inFlight = true
    fdatasync(fd, (err) => {
      inFlight = false
      const more = next
      next = []
      // The descriptor is closed only once no sync is using it.
      if (closing) closeSync(fd)
      else if (more.length > 0) start(more)
      for (const w of waiters) w(err)
      if (closing) for (const w of more) w(new Error('the WAL sync was closed'))
    })
  }

  return {
    unsynced(commit) {
      normal()
      try {
        return commit()
      } finally {
        full()
      }
    },
    sync(done) {
      if (inFlight) next.push(done)
      else start([done])
    },
    syncNow() {
      fdatasyncSync(fd)
    },
    close() {
      if (closing) return
      closing = true
      if (!inFlight) closeSync(fd)
    },
  }
}
