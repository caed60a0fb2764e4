import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { silentLogger } from '../common/logger.js'
import { openDatabase, type Db } from '../common/sqlite.js'
import { createWriter, type Writer } from '../hub/storage/group-commit.js'
import { createWalSync, type WalSync } from '../hub/storage/wal-sync.js'
import { tempDir } from './support/hub.js'

const cleanups: Array<() => void> = []
afterEach(() => {
  while (cleanups.length) cleanups.pop()!()
})

/** A writer whose commits are synced by `wrap(real WalSync)`, and a second connection. */
function open(wrap: (w: WalSync) => WalSync = (w) => w, onSyncFailed?: (err: Error) => void): { db: Db; writer: Writer; reader: Database.Database; path: string } {
  const tmp = tempDir('wal-sync')
  const path = join(tmp.dir, 'w.db')
  const db = openDatabase(path, { synchronous: 'FULL' })
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY) STRICT')
  const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 10_000, walSync: wrap(createWalSync(db, path)), ...(onSyncFailed ? { onSyncFailed } : {}) }, silentLogger())
  const reader = new Database(path, { readonly: true })
  cleanups.push(tmp.remove, () => db.close(), () => reader.close(), () => writer.close())
  return { db, writer, reader, path }
}

const insert = (db: Db, k: string) => { db.prepare('INSERT INTO t (k) VALUES (?)').run(k) }
const keys = (reader: Database.Database) => (reader.prepare('SELECT k FROM t ORDER BY k').all() as Array<{ k: string }>).map((r) => r.k)
/** Resolves once libuv's thread pool has answered a round of work queued after now (the fsync in flight has had its turn). */
const settled = (writer: Writer) => new Promise<void>((resolve) => {
  const poll = () => { if (writer.stats().awaitingSync === 0) resolve(); else setTimeout(poll, 1) }
  poll()
})

/**
 * The group commit's fsync in the thread pool (hub/storage/wal-sync.ts): the
 * commit is written on the event loop without SQLite's own fsync, and what
 * depends on it being durable (acks, waiters, commit hooks) runs only after
 * the WAL's fdatasync has come back, in commit order.
 */
describe('group commit with the fsync in the thread pool', () => {
  it('commits in flush, runs the after-commit steps only once the fsync is back, and keeps commit order', async () => {
    const { writer, reader } = open()
    const steps: string[] = []
    writer.onCommit(() => { steps.push('hook') })
    writer.enqueue((d) => { insert(d, 'a'); return () => { steps.push('after a') } })
    writer.flush()
    writer.enqueue((d) => { insert(d, 'b'); return () => { steps.push('after b') } })
    writer.flush()
    // Both commits are in the database (another connection reads them) ...
    expect(keys(reader)).toEqual(['a', 'b'])
    // ... but nothing was told yet: the fsync is in the thread pool.
    expect(steps).toEqual([])
    expect(writer.stats().awaitingSync).toBe(2)
    await settled(writer)
    expect(steps).toEqual(['after a', 'hook', 'after b', 'hook'])
    expect(writer.stats().commits).toBe(2)
    expect(writer.stats().failedSyncs).toBe(0)
  })

  it('resolves a waited-on write after its fsync, not at its commit', async () => {
    const { writer, reader } = open()
    let resolved = false
    const done = writer.commit((d) => insert(d, 'x')).then(() => { resolved = true; return writer.stats().awaitingSync })
    // The commit runs at the end of this turn; this runs right after it, before any thread-pool answer.
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(keys(reader)).toEqual(['x'])
    expect(resolved).toBe(false)
    expect(await done).toBe(0)
  })

  it('writes the group under synchronous=NORMAL and leaves the connection at FULL for every other transaction', async () => {
    const { db, writer } = open()
    const during: unknown[] = []
    writer.enqueue((d) => { during.push(d.pragma('synchronous', { simple: true })); insert(d, 'a') })
    writer.flush()
    // 1 is NORMAL, 2 is FULL (SQLite's numbers).
    expect(during).toEqual([1])
    expect(db.pragma('synchronous', { simple: true })).toBe(2)
    await settled(writer)
  })

  it('stops for good at a failed fsync: no step of that commit or a later one runs, waiters and new writes are refused, the owner is told', async () => {
    const failing = (w: WalSync): WalSync => ({ ...w, sync: (done) => { w.sync(() => { done(new Error('EIO: input/output error, fdatasync')) }) } })
    const told: Error[] = []
    const { writer, reader } = open(failing, (err) => { told.push(err) })
    const steps: string[] = []
    writer.onCommit(() => { steps.push('commit hook') })
    writer.enqueue((d) => { insert(d, 'a'); return () => { steps.push('ack a') } })
    const waited = writer.commit((d) => insert(d, 'b'))
    await expect(waited).rejects.toThrow(/EIO/)
    expect(steps).toEqual([])
    expect(told.map((e) => e.message)).toEqual(['EIO: input/output error, fdatasync'])
    expect(writer.stats().failedSyncs).toBe(1)
    // The rows are in the file (a failed fsync cannot be rolled back), and nobody was told they are stored.
    expect(keys(reader)).toEqual(['a', 'b'])
    expect(() => writer.enqueue((d) => insert(d, 'c'))).toThrow(/fsync failed \(EIO.*restarted/)
    await expect(writer.commit((d) => insert(d, 'd'))).rejects.toThrow(/fsync failed/)
    expect(keys(reader)).toEqual(['a', 'b'])
    expect(steps).toEqual([])
  })

  it('commits at the end of the turn when flushed from inside a transaction, where SQLite will not change synchronous', async () => {
    const { db, writer, reader } = open()
    writer.enqueue((d) => insert(d, 'a'))
    db.transaction(() => {
      insert(db, 'outer')
      writer.flush()
    })()
    // The group was not folded into the outer transaction, nor dropped.
    expect(keys(reader)).toEqual(['outer'])
    await settled(writer)
    await new Promise<void>((resolve) => setImmediate(resolve))
    await settled(writer)
    expect(keys(reader)).toEqual(['a', 'outer'])
    expect(writer.stats().failedCommits).toBe(0)
  })

  it('close() waits for the disk on the spot and runs what was waiting, once', async () => {
    const { writer } = open()
    const steps: string[] = []
    writer.enqueue((d) => { insert(d, 'a'); return () => { steps.push('after a') } })
    writer.flush()
    writer.enqueue((d) => { insert(d, 'b'); return () => { steps.push('after b') } })
    writer.close()
    expect(steps).toEqual(['after a', 'after b'])
    // The fsync that was in flight comes back later and runs nothing twice.
    await new Promise<void>((resolve) => setTimeout(resolve, 50))
    expect(steps).toEqual(['after a', 'after b'])
    expect(() => writer.enqueue(() => undefined)).toThrow(/closed/)
  })
})
