import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { silentLogger } from '../common/logger.js'
import { openDatabase, type Db } from '../common/sqlite.js'
import { createWriter, type Writer } from '../hub/writer.js'
import { tempDir } from './support/hub.js'

/**
 * The group-commit writer's `commit`: a write someone waits on. It commits at
 * the end of the event loop's turn (not after flushDelayMs), shares that
 * transaction with everything queued by then, and resolves only once the row
 * is durable in the file, as a second connection sees it.
 */
describe('writer.commit', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => {
    while (cleanups.length) cleanups.pop()!()
  })

  function open(): { db: Db; writer: Writer; reader: Database.Database } {
    const tmp = tempDir('writer')
    const path = join(tmp.dir, 'w.db')
    const db = openDatabase(path, { synchronous: 'FULL' })
    db.exec('CREATE TABLE t (k TEXT PRIMARY KEY) STRICT')
    // An hour: nothing here may be waiting for the timer.
    const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 10_000 }, silentLogger())
    const reader = new Database(path, { readonly: true })
    cleanups.push(tmp.remove, () => db.close(), () => reader.close(), () => writer.flush())
    return { db, writer, reader }
  }

  const insert = (db: Db, k: string) => { db.prepare('INSERT INTO t (k) VALUES (?)').run(k) }
  const keys = (reader: Database.Database) => (reader.prepare('SELECT k FROM t ORDER BY k').all() as Array<{ k: string }>).map((r) => r.k)

  it('commits at the end of the turn, with what was queued before it, and resolves once another connection sees it', async () => {
    const { writer, reader } = open()
    writer.enqueue((d) => insert(d, 'a'))
    const steps: string[] = []
    const b = writer.commit((d) => {
      insert(d, 'b')
      return () => { steps.push('after-commit b') }
    }).then(() => { steps.push('resolved b'); return keys(reader) })
    const c = writer.commit((d) => insert(d, 'c')).then(() => keys(reader))
    expect(keys(reader)).toEqual([])
    expect(await b).toEqual(['a', 'b', 'c'])
    expect(await c).toEqual(['a', 'b', 'c'])
    // One transaction for all three; the after-commit step ran before the promise resolved.
    expect(writer.stats().commits).toBe(1)
    expect(steps).toEqual(['after-commit b', 'resolved b'])
  })

  it('rejects only the write that failed; the rest of its group commits and resolves', async () => {
    const { writer, reader } = open()
    const ok1 = writer.commit((d) => insert(d, 'x'))
    const dup = writer.commit((d) => insert(d, 'x'))
    const ok2 = writer.commit((d) => insert(d, 'y'))
    await expect(ok1).resolves.toBeUndefined()
    await expect(dup).rejects.toThrow(/UNIQUE/)
    await expect(ok2).resolves.toBeUndefined()
    expect(keys(reader)).toEqual(['x', 'y'])
    expect(writer.stats()).toMatchObject({ commits: 1, failedOps: 1 })
  })

  it('rejects on a closed writer instead of queueing a write nobody will commit', async () => {
    const { writer } = open()
    writer.close()
    await expect(writer.commit((d) => insert(d, 'z'))).rejects.toThrow(/closed/)
  })
})
