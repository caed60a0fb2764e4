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
    // Not asked after every commit, as the hub does: the test asks at its pauses, so no checkpoint
    // runs beside a commit (one that does can keep the WAL from starting over, by chance).
    const checkpointer = createCheckpointer(db, path, { intervalMs: 0, fallbackPages }, silentLogger())
    cleanups.push(tmp.remove, () => { db.close() }, () => writer.close(), () => checkpointer.close())
    return { db, writer, checkpointer, path }
  }

  /**
   * 200 commits of 20 rows of 2 KB (about 2,000 pages in all), each waited
   * for, as a busy hub makes them; every 20 commits a pause in which the
   * thread is asked for a checkpoint and waited for (bounded) until one has
   * copied every frame, after which the next commit starts the WAL over.
   */
  async function write(writer: ReturnType<typeof open>['writer'], db: ReturnType<typeof open>['db'], checkpointer?: ReturnType<typeof open>['checkpointer']) {
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)')
    for (let c = 1; c <= 200; c++) {
      await writer.commit(() => { for (let i = 0; i < 20; i++) insert.run(Buffer.alloc(2048, c)) }, 20)
      if (c % 20 !== 0 || checkpointer === undefined) continue
      const n = checkpointer.stats().checkpoints
      // A hang guard far above the few ms this takes.
      for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
        const st = checkpointer.stats()
        if (st.checkpoints > n && st.lastCopiedPages === st.lastWalPages) break
        checkpointer.committed()
        await sleep(5)
      }
    }
  }

  it('keeps the WAL small while the writer\'s own checkpoint is pushed out of reach', async () => {
    // The writer would not checkpoint before 100,000 pages (400 MB): whatever is copied, the thread copied.
    const { db, writer, checkpointer, path } = open(100_000)
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(100_000)
    await write(writer, db, checkpointer)
    const walPages = statSync(`${path}-wal`).size / 4096
    const { checkpoints, failed, lastCopiedPages } = checkpointer.stats()
    expect(failed).toBe(0)
    expect(checkpoints).toBeGreaterThan(5)
    expect(lastCopiedPages).toBeGreaterThan(0)
    // About 2,000 pages were written; without the thread the WAL would hold them all (the control
    // below). With it, the WAL starts over after each pause: at most 20 commits' worth (some 300 pages).
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

  it('close() ends the thread; commits after it ask it for nothing and the WAL grows again', async () => {
    const { db, writer, checkpointer, path } = open(100_000)
    await write(writer, db, checkpointer)
    expect(checkpointer.stats().checkpoints).toBeGreaterThan(0)
    await checkpointer.close()
    // Counted after the close: a checkpoint asked for before it may have finished meanwhile.
    const before = checkpointer.stats().checkpoints
    await write(writer, db)
    expect(checkpointer.stats().checkpoints).toBe(before)
    expect(statSync(`${path}-wal`).size / 4096).toBeGreaterThan(2_000)
    // A second close is the same one.
    await checkpointer.close()
  })
})
