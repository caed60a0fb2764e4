import { afterEach, describe, expect, it } from 'vitest'
import { existsSync, readdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { silentLogger } from '../common/logger.js'
import { openDatabase, type Db } from '../common/sqlite.js'
import { blameOf, createWriter, type Writer } from '../hub/storage/group-commit.js'
import { openHubDb } from '../hub/storage/schema.js'
import { tempDir } from './support/hub.js'

const cleanups: Array<() => void> = []
afterEach(() => {
  while (cleanups.length) cleanups.pop()!()
})

/** A writer on a fresh file with one table t (k, v), and a second connection that sees only what is durable. */
function open(): { db: Db; writer: Writer; reader: Database.Database } {
  const tmp = tempDir('writer')
  const path = join(tmp.dir, 'w.db')
  const db = openDatabase(path, { synchronous: 'FULL' })
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT) STRICT')
  // An hour: nothing here may be waiting for the timer.
  const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 10_000 }, silentLogger())
  const reader = new Database(path, { readonly: true })
  cleanups.push(tmp.remove, () => db.close(), () => reader.close(), () => writer.flush())
  return { db, writer, reader }
}

const keys = (reader: Database.Database) => (reader.prepare('SELECT k FROM t ORDER BY k').all() as Array<{ k: string }>).map((r) => r.k)

/**
 * The group-commit writer's `commit`: a write someone waits on. It commits at
 * the end of the event loop's turn (not after flushDelayMs), shares that
 * transaction with everything queued by then, and resolves only once the row
 * is durable in the file, as a second connection sees it.
 */
describe('writer.commit', () => {
  const insert = (db: Db, k: string) => { db.prepare('INSERT INTO t (k) VALUES (?)').run(k) }

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

  it('commitWithGroup waits for the group\'s own commit (it forces none), then resolves once it is durable, or rejects its own failure', async () => {
    const { writer, reader } = open()
    let settled = false
    const late = writer.commitWithGroup((d) => insert(d, 'g')).then(() => { settled = true })
    const dup = writer.commitWithGroup((d) => insert(d, 'g'))
    dup.catch(() => undefined)
    // Several turns of the event loop later, with the timer an hour away: not committed.
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
    expect(settled).toBe(false)
    expect(keys(reader)).toEqual([])
    // A commit someone waits on now takes it along.
    await writer.commit((d) => insert(d, 'h'))
    await late
    expect(keys(reader)).toEqual(['g', 'h'])
    await expect(dup).rejects.toThrow(/UNIQUE/)
  })
})

/**
 * M19b: one operation that throws inside the group commit (here the stack
 * overflow a 30,000-deep value gave JSON.stringify) is rolled back alone;
 * every other operation in the group commits and its after-commit step (its
 * ack) runs; the failing one's owner is told after the commit, so ingress can
 * dead-letter the message and strike its sender.
 */
describe('writer: a failing operation in a group', () => {
  /** 30,000 objects inside each other: JSON.stringify overflows the stack on it. */
  function deepValue(): unknown {
    let v: unknown = {}
    for (let i = 0; i < 30_000; i++) v = { d: v }
    return v
  }

  it('commits and acks every other operation, and tells the failing one\'s owner after the commit', () => {
    const { db, writer, reader } = open()
    const insert = db.prepare<[string, string]>('INSERT INTO t (k, v) VALUES (?, ?)')
    const events: string[] = []
    const failures: Array<{ who: string; err: Error; committedThen: string[] }> = []
    const deep = deepValue()
    for (const who of ['a', 'b', 'c', 'd']) {
      writer.enqueue(() => {
        insert.run(`${who}-1`, 'x')
        // b writes a row, then throws half-way: the row must go with it.
        if (who === 'b') insert.run(`${who}-2`, JSON.stringify(deep))
        return () => { events.push(`ack ${who}`) }
      }, 1, (err) => { failures.push({ who, err, committedThen: keys(reader) }) })
    }
    writer.flush()
    expect(keys(reader)).toEqual(['a-1', 'c-1', 'd-1'])
    expect(events).toEqual(['ack a', 'ack c', 'ack d'])
    expect(failures).toHaveLength(1)
    expect(failures[0]!.who).toBe('b')
    expect(failures[0]!.err).toBeInstanceOf(RangeError)
    // Told after the commit, when the others are durable.
    expect(failures[0]!.committedThen).toEqual(['a-1', 'c-1', 'd-1'])
    expect(writer.stats()).toMatchObject({ commits: 1, failedCommits: 0, failedOps: 1 })
  })

  it('does not blame the operation for the database\'s own failure (disk full)', () => {
    const { db, writer, reader } = open()
    writer.enqueue((d) => { d.prepare('INSERT INTO t (k) VALUES (?)').run('small') })
    writer.flush()
    const pages = db.pragma('page_count', { simple: true }) as number
    // A database that cannot grow: a real SQLITE_FULL from SQLite.
    db.pragma(`max_page_count = ${pages + 2}`)
    const failures: Error[] = []
    writer.enqueue((d) => {
      const ins = d.prepare('INSERT INTO t (k, v) VALUES (?, ?)')
      for (let i = 0; i < 1000; i++) ins.run(`big-${i}`, 'y'.repeat(4000))
    }, 1, (err) => failures.push(err))
    writer.enqueue((d) => { d.prepare('INSERT INTO t (k) VALUES (?)').run('after') }, 1, (err) => failures.push(err))
    writer.flush()
    expect(keys(reader)).toEqual(['after', 'small'])
    expect(failures).toEqual([])
    expect(writer.stats().failedOps).toBe(1)
  })

  it.each([
    ['a RangeError (stack overflow)', 'operation', () => JSON.stringify(deepValue())],
    ['a constraint', 'operation', (db: Db) => { db.exec('INSERT INTO t (k) VALUES (\'x\'); INSERT INTO t (k) VALUES (\'x\')') }],
    ['a full database', 'database', (db: Db) => {
      db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`)
      db.prepare('INSERT INTO t (k, v) VALUES (?, ?)').run('w', 'y'.repeat(100_000))
    }],
  ] as const)('blames %s on the %s', (_what, blame, fail) => {
    const { db } = open()
    let caught: unknown
    try { fail(db) } catch (err) { caught = err }
    expect(caught).toBeDefined()
    expect(blameOf(caught)).toBe(blame)
  })
})

/**
 * Each write of a group runs in a savepoint, whose undo copies of the pages
 * it touches go to SQLite's sub-journal. Spilled to a temp file (past 64 KiB:
 * one write touching ~16 pages, as a rule's firing with its outbox rows and
 * indexes does), the sub-journal stays a file for the rest of the group, and
 * every later write pays write syscalls for its undo pages: with 100 rules
 * firing ~60 times a second, that was ~40% of group commits and a fifth of
 * ingest's rate. The hub's database keeps it in memory (hub/storage/schema.ts).
 * SQLite names its temp files etilqs_*; Linux shows the open ones in /proc.
 */
describe('the hub\'s database', () => {
  const sqliteTempFiles = () => readdirSync('/proc/self/fd').flatMap((fd) => {
    try { return [readlinkSync(`/proc/self/fd/${fd}`)] } catch { return [] }
  }).filter((target) => target.includes('etilqs_'))

  it.runIf(existsSync('/proc/self/fd'))('keeps a group\'s undo pages in memory after a write that touched many pages', () => {
    const tmp = tempDir('hubdb')
    const db = openHubDb(join(tmp.dir, 'hub.db'))
    const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 10_000 }, silentLogger())
    cleanups.push(tmp.remove, () => db.close(), () => writer.flush())
    // 40 rows of 3000 bytes: 40 pages, committed, so a later write must keep undo copies of them.
    db.exec('CREATE TABLE wide (k INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT')
    const insert = db.prepare('INSERT INTO wide (k, v) VALUES (?, ?)')
    db.transaction(() => { for (let k = 0; k < 40; k++) insert.run(k, 'x'.repeat(3000)) })()
    let during: string[] | undefined
    writer.enqueue((d) => { d.prepare('UPDATE wide SET v = \'y\' || substr(v, 2)').run() })
    writer.enqueue(() => { during = sqliteTempFiles() })
    writer.flush()
    expect(writer.stats()).toMatchObject({ commits: 1, failedOps: 0 })
    expect(during).toEqual([])
    expect(db.prepare('SELECT count(*) FROM wide WHERE v LIKE \'y%\'').pluck().get()).toBe(40)
  })
})
