import { afterEach, describe, expect, it } from 'vitest'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { silentLogger } from '../common/logger.js'
import { openDatabase } from '../common/sqlite.js'
import { createCheckpointer } from '../hub/storage/checkpointer.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { createWalSync } from '../hub/storage/wal-sync.js'
import { tempDir } from './support/hub.js'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

/**
 * WAL checkpoints on a thread of their own (hub/storage/checkpointer.ts): the
 * writer's automatic checkpoint is pushed out to a fallback, and a worker
 * thread with its own connection copies the WAL into the database file after
 * commits, so the WAL starts over and stays small without the event loop
 * doing the copying.
 */
describe('checkpointer', () => {
  function open(fallbackPages: number) {
    const tmp = tempDir('checkpointer')
    const path = join(tmp.dir, 'c.db')
    const db = openDatabase(path, { synchronous: 'FULL' })
    db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB) STRICT')
    const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 100_000, walSync: createWalSync(db, path) }, silentLogger())
    const checkpointer = createCheckpointer(db, path, { intervalMs: 0, fallbackPages }, silentLogger())
    writer.onCommit(() => { checkpointer.committed() })
    cleanups.push(tmp.remove, () => { db.close() }, () => writer.close(), () => checkpointer.close())
    return { db, writer, checkpointer, path }
  }

  /** 200 commits of 20 rows of 2 KB (about 2,000 pages in all), each waited for, as a busy hub makes them. */
  async function write(writer: ReturnType<typeof open>['writer'], db: ReturnType<typeof open>['db']) {
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)')
    for (let c = 0; c < 200; c++) {
      await writer.commit(() => { for (let i = 0; i < 20; i++) insert.run(Buffer.alloc(2048, c)) }, 20)
      if (c % 20 === 0) await sleep(5)
    }
  }

  it('keeps the WAL small while the writer\'s own checkpoint is pushed out of reach', async () => {
    // The writer would not checkpoint before 100,000 pages (400 MB): whatever is copied, the thread copied.
    const { db, writer, checkpointer, path } = open(100_000)
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(100_000)
    await write(writer, db)
    const walPages = statSync(`${path}-wal`).size / 4096
    const { checkpoints, failed, lastCopiedPages } = checkpointer.stats()
    expect(failed).toBe(0)
    expect(checkpoints).toBeGreaterThan(5)
    expect(lastCopiedPages).toBeGreaterThan(0)
    // About 2,000 pages were written; without the thread the WAL would hold them all.
    expect(walPages).toBeLessThan(1_000)
    // The rows are in the database file itself, not only in the WAL.
    expect(statSync(path).size).toBeGreaterThan(2_000 * 4096 * 0.5)
  })

  it('without the thread the same writes stay in the WAL (the control)', async () => {
    const { db, writer, checkpointer, path } = open(100_000)
    await checkpointer.close()
    await write(writer, db)
    expect(checkpointer.stats().checkpoints).toBe(0)
    expect(statSync(`${path}-wal`).size / 4096).toBeGreaterThan(2_000)
  })

  it('close() ends the thread and later commits ask it for nothing', async () => {
    const { checkpointer } = open(100_000)
    await checkpointer.close()
    checkpointer.committed()
    expect(checkpointer.stats().checkpoints).toBe(0)
    // A second close is the same one.
    await checkpointer.close()
  })
})
