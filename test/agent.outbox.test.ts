import { afterEach, describe, expect, it } from 'vitest'
import Database from 'better-sqlite3'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Ledger, LEDGER_FILE, LEDGER_MIGRATIONS, LEDGER_PAGE_SIZE } from '../agent/ledger.js'
import { DELETE_BATCH_ROWS, eventBody, Outbox, sampleBody, SEQ_BLOCK } from '../agent/outbox.js'
import type { OutboxLimits } from '../agent/outbox-overflow.js'
import { migrate } from '../common/sqlite.js'
import { removeDir, tempDir } from './agent.support.js'

const dirs: string[] = []
const ledgers: Ledger[] = []

afterEach(() => {
  for (const l of ledgers.splice(0)) l.close()
  for (const d of dirs.splice(0)) removeDir(d)
})

function open(dir?: string, limits?: OutboxLimits): { dir: string; ledger: Ledger; outbox: Outbox } {
  const d = dir ?? tempDir()
  if (!dir) dirs.push(d)
  const ledger = new Ledger({ dataDir: d })
  ledgers.push(ledger)
  return { dir: d, ledger, outbox: new Outbox(ledger, limits) }
}

/**
 * Counts straight from the file, to check the in-memory mirror. Acked rows
 * leave the file with the next append or a flush (a clean stop): count after one.
 */
function countInFile(ledger: Ledger): { rows: number; bytes: number } {
  const r = ledger.db.prepare('SELECT COUNT(*) AS rows, TOTAL(bytes) AS bytes FROM outbox').get() as { rows: number; bytes: number }
  return r
}

const tick = (outbox: Outbox, ts: number, n: number) => {
  const bodies = Array.from({ length: n }, (_, i) => sampleBody(`s${i}`, ts, i + 0.5))
  outbox.appendTelemetry(ts, bodies)
}

describe('ledger', () => {
  it('creates a store with a random id, keeps it on reopen, and a new file is a new store', () => {
    const a = open()
    const storeId = a.ledger.storeId
    expect(a.ledger.created).toBe(true)
    expect(storeId).toMatch(/^[0-9a-f-]{36}$/)
    a.ledger.close()
    const again = open(a.dir)
    expect(again.ledger.created).toBe(false)
    expect(again.ledger.storeId).toBe(storeId)
    expect(open().ledger.storeId).not.toBe(storeId)
  })

  it('commits every epoch bump, so it only rises across reopens', () => {
    const a = open()
    expect([a.ledger.nextEpoch(), a.ledger.nextEpoch()]).toEqual([1, 2])
    a.ledger.close()
    expect(open(a.dir).ledger.nextEpoch()).toBe(3)
  })

  it('is one WAL file in the data dir', () => {
    const a = open()
    expect(a.ledger.path).toBe(join(a.dir, LEDGER_FILE))
    expect(a.ledger.db.pragma('journal_mode', { simple: true })).toBe('wal')
  })
})

describe('ledger file (flash wear, issue #13)', () => {
  it('is made with small pages, and holds its lock: no -shm file, no second opener', () => {
    const a = open()
    expect(a.ledger.db.pragma('page_size', { simple: true })).toBe(LEDGER_PAGE_SIZE)
    expect(a.ledger.db.pragma('locking_mode', { simple: true })).toBe('exclusive')
    tick(a.outbox, 1, 3)
    expect(existsSync(join(a.dir, `${LEDGER_FILE}-shm`))).toBe(false)
    const other = new Database(join(a.dir, LEDGER_FILE), { readonly: true, timeout: 0 })
    try {
      expect(() => other.prepare('SELECT COUNT(*) FROM outbox').get()).toThrow(/locked/)
    } finally {
      other.close()
    }
  })

  it('is refused by an agent that knows fewer migrations (a downgrade), which cannot read what this version writes', () => {
    const d = tempDir()
    dirs.push(d)
    const { ledger } = open(d)
    ledger.close()
    const db = new Database(join(d, LEDGER_FILE))
    try {
      expect(db.pragma('user_version', { simple: true })).toBe(LEDGER_MIGRATIONS.length)
      // The agent before this version knew three.
      expect(() => migrate(db, LEDGER_MIGRATIONS.slice(0, 3))).toThrow(/database schema version 4 is newer than this program knows \(3\); upgrade rollcall/)
    } finally {
      db.close()
    }
  })

  it('rebuilds a small ledger made with 4 KiB pages, keeping its rows and store', () => {
    const d = tempDir()
    dirs.push(d)
    const old = new Database(join(d, LEDGER_FILE))
    old.pragma('journal_mode = WAL')
    migrate(old, LEDGER_MIGRATIONS)
    old.exec("INSERT INTO meta (key, value) VALUES ('storeId', 'old-store'); INSERT INTO outbox (kind, ts, body, bytes) VALUES ('telemetry', 1, '{}', 2)")
    expect(old.pragma('page_size', { simple: true })).toBe(4096)
    old.close()
    const { ledger, outbox } = open(d)
    expect(ledger.db.pragma('page_size', { simple: true })).toBe(LEDGER_PAGE_SIZE)
    expect(ledger.db.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(ledger.storeId).toBe('old-store')
    expect(outbox.stats()).toMatchObject({ backlogRows: 1, newestSeq: 1 })
  })
})

describe('outbox', () => {
  it('appends a tick in one transaction and reads rows in seq order after a cursor', () => {
    const { outbox } = open()
    tick(outbox, 1000, 3)
    outbox.append([{ kind: 'event', ts: 1001, body: eventBody(1001, 'boot', 'info', 'hello') }])
    tick(outbox, 1002, 2)
    const all = outbox.readAfter(0, 100)
    expect(all.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6])
    expect(all.map((r) => r.kind)).toEqual(['telemetry', 'telemetry', 'telemetry', 'event', 'telemetry', 'telemetry'])
    expect(JSON.parse(all[0]!.body)).toEqual({ sensor: 's0', ts: 1000, value: 0.5 })
    expect(outbox.readAfter(4, 1).map((r) => r.seq)).toEqual([5])
    expect(outbox.stats()).toMatchObject({ backlogRows: 6, oldestSeq: 1, newestSeq: 6 })
  })

  it('rolls a failed tick back entirely and keeps its counts true', () => {
    const { ledger, outbox } = open()
    tick(outbox, 1, 2)
    // A body that breaks the CHECK on kind halfway through the transaction.
    expect(() => outbox.append([
      { kind: 'telemetry', ts: 2, body: sampleBody('a', 2, 1) },
      { kind: 'bogus' as 'event', ts: 2, body: '{"x":1}' },
    ])).toThrow()
    expect(countInFile(ledger).rows).toBe(2)
    expect(outbox.stats()).toMatchObject({ backlogRows: 2, backlogBytes: countInFile(ledger).bytes, newestSeq: 2 })
  })

  it.each([
    ['nothing', 0, 5, 1],
    ['part of the backlog', 3, 2, 4],
    ['everything', 5, 0, undefined],
    ['beyond the newest', 99, 0, undefined],
  ])('ackUpTo deletes %s', (_name, upTo, left, oldest) => {
    const { ledger, outbox } = open()
    tick(outbox, 1, 5)
    outbox.ackUpTo(upTo)
    expect(outbox.stats()).toMatchObject({ backlogRows: left, oldestSeq: oldest, newestSeq: 5 })
    expect(outbox.readAfter(0, 10)).toHaveLength(left)
    outbox.flush()
    expect(countInFile(ledger)).toEqual({ rows: left, bytes: outbox.stats().backlogBytes })
    // The sender's figure for each batch: the same count, without a query.
    expect(outbox.backlogRows).toBe(left)
  })

  it('never reuses a seq, even after the outbox was emptied and reopened', () => {
    const a = open()
    tick(a.outbox, 1, 3)
    a.outbox.ackUpTo(3)
    a.outbox.flush()
    expect(countInFile(a.ledger).rows).toBe(0)
    a.ledger.close()
    const b = open(a.dir)
    expect(b.outbox.stats()).toMatchObject({ backlogRows: 0, newestSeq: 3, oldestSeq: undefined })
    tick(b.outbox, 2, 1)
    expect(b.outbox.readAfter(0, 10).map((r) => r.seq)).toEqual([4])
  })

  it('deletes acked rows in bulk, in an append\'s transaction, never in a commit of its own', () => {
    const { ledger, outbox } = open()
    tick(outbox, 1, 4)
    const changes = () => ledger.db.prepare('SELECT total_changes()').pluck().get() as number
    const before = changes()
    outbox.ackUpTo(3)
    // The ack wrote nothing: the rows are gone for readers, not yet from the file.
    expect(changes()).toBe(before)
    expect(countInFile(ledger).rows).toBe(4)
    expect(outbox.readAfter(0, 10).map((r) => r.seq)).toEqual([4])
    // Fewer than DELETE_BATCH_ROWS wait: an append leaves them.
    tick(outbox, 2, 1)
    expect(countInFile(ledger).rows).toBe(5)
    expect(outbox.stats()).toMatchObject({ backlogRows: 2, oldestSeq: 4, newestSeq: 5 })
    // Enough of them: the next append deletes them all in its transaction.
    tick(outbox, 3, DELETE_BATCH_ROWS)
    outbox.ackUpTo(outbox.newestSeq - 1)
    tick(outbox, 4, 1)
    expect(countInFile(ledger)).toEqual({ rows: 2, bytes: outbox.stats().backlogBytes })
    expect(outbox.stats()).toMatchObject({ backlogRows: 2, oldestSeq: DELETE_BATCH_ROWS + 5, newestSeq: DELETE_BATCH_ROWS + 6 })
  })

  it('after a crash, acked rows still in the file come back as backlog (the hub drops them as duplicates) and no seq is reused', () => {
    const a = open()
    tick(a.outbox, 1, 3)
    a.outbox.ackUpTo(3)
    // No flush: the process died.
    a.ledger.close()
    const b = open(a.dir)
    expect(b.outbox.stats()).toMatchObject({ backlogRows: 3, oldestSeq: 1, newestSeq: 3 })
    // The hub's first ack after the birth lets them go.
    b.outbox.ackUpTo(3)
    tick(b.outbox, 2, 1)
    expect(b.outbox.readAfter(0, 10).map((r) => r.seq)).toEqual([4])
  })

  it('hands out seqs without writing sqlite_sequence per insert: it is kept a block ahead', () => {
    const { ledger, outbox } = open()
    const sequence = () => ledger.db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").pluck().get() as number
    tick(outbox, 1, 3)
    expect(sequence()).toBe(SEQ_BLOCK)
    for (let t = 2; t < 10; t++) tick(outbox, t, 3)
    expect(sequence()).toBe(SEQ_BLOCK)
    expect(outbox.stats().newestSeq).toBe(27)
  })

  it('continues after the newest seq of a ledger from before the allocator (sqlite_sequence exact, outbox emptied)', () => {
    const d = tempDir()
    dirs.push(d)
    const ledger = new Ledger({ dataDir: d })
    ledgers.push(ledger)
    // What AUTOINCREMENT left: seqs 1..10 numbered, all acked and deleted, no meta mark yet.
    const insert = ledger.db.prepare("INSERT INTO outbox (kind, ts, body, bytes) VALUES ('telemetry', 1, '{}', 2)")
    for (let i = 0; i < 10; i++) insert.run()
    ledger.db.exec('DELETE FROM outbox')
    const outbox = new Outbox(ledger)
    expect(outbox.stats().newestSeq).toBe(10)
    tick(outbox, 2, 1)
    expect(outbox.readAfter(0, 10).map((r) => r.seq)).toEqual([11])
  })

  it('wakes listeners after each append with the newest seq', () => {
    const { outbox } = open()
    const seen: number[] = []
    const off = outbox.onAppend((n) => seen.push(n))
    tick(outbox, 1, 3)
    tick(outbox, 2, 2)
    off()
    tick(outbox, 3, 1)
    expect(seen).toEqual([3, 5])
  })

  describe('overflow', () => {
    it('drops the oldest telemetry first, counts it, and keeps events', () => {
      const { ledger, outbox } = open(undefined, { maxRows: 10, maxBytes: 1 << 30 })
      outbox.append([{ kind: 'event', ts: 0, body: eventBody(0, 'boot', 'info', 'first') }]) // seq 1
      tick(outbox, 1, 6) // seq 2..7
      tick(outbox, 2, 6) // seq 8..13: 13 rows, 3 over
      const rows = outbox.readAfter(0, 100)
      expect(rows.map((r) => r.seq)).toEqual([1, 5, 6, 7, 8, 9, 10, 11, 12, 13])
      expect(rows[0]!.kind).toBe('event')
      expect(outbox.stats()).toMatchObject({ backlogRows: 10, droppedTelemetry: 3, droppedEvents: 0 })
      expect(countInFile(ledger).rows).toBe(10)
    })

    it('drops events (oldest first) only when no telemetry is left', () => {
      const { outbox } = open(undefined, { maxRows: 3, maxBytes: 1 << 30 })
      const ev = (i: number) => ({ kind: 'event' as const, ts: i, body: eventBody(i, 'e', 'info', `n${i}`) })
      outbox.append([ev(1), ev(2)])
      tick(outbox, 3, 1)
      outbox.append([ev(4), ev(5)])
      expect(outbox.readAfter(0, 10).map((r) => r.seq)).toEqual([2, 4, 5])
      expect(outbox.stats()).toMatchObject({ droppedTelemetry: 1, droppedEvents: 1 })
    })

    it('bounds bytes as well as rows', () => {
      const { ledger, outbox } = open(undefined, { maxRows: 1_000_000, maxBytes: 2_000 })
      for (let t = 0; t < 20; t++) tick(outbox, t, 10)
      const s = outbox.stats()
      expect(s.backlogBytes).toBeLessThanOrEqual(2_000)
      expect(s.backlogBytes).toBeGreaterThan(1_900)
      expect(s.droppedTelemetry + s.backlogRows).toBe(200)
      expect(countInFile(ledger)).toEqual({ rows: s.backlogRows, bytes: s.backlogBytes })
      expect(outbox.backlogRows).toBe(s.backlogRows)
      // The survivors are the newest rows.
      expect(outbox.stats().newestSeq).toBe(200)
      expect(outbox.stats().oldestSeq).toBe(200 - s.backlogRows + 1)
    })

    it('persists the dropped counters and the backlog counts across reopen', () => {
      const a = open(undefined, { maxRows: 5, maxBytes: 1 << 30 })
      tick(a.outbox, 1, 8)
      a.outbox.append([{ kind: 'event', ts: 2, body: eventBody(2, 'e', 'warn', 'x', { a: 1 }) }])
      const before = a.outbox.stats()
      a.ledger.close()
      const b = open(a.dir, { maxRows: 5, maxBytes: 1 << 30 })
      expect(b.outbox.stats()).toEqual(before)
      expect(before).toMatchObject({ backlogRows: 5, droppedTelemetry: 4, droppedEvents: 0 })
    })
  })

  it('keeps the mirror right under many ticks and acks (checked against COUNT)', () => {
    const { ledger, outbox } = open(undefined, { maxRows: 500, maxBytes: 1 << 30 })
    for (let t = 0; t < 100; t++) {
      tick(outbox, t, 13)
      if (t % 7 === 0) outbox.ackUpTo(outbox.stats().newestSeq - 20)
      if (t % 11 === 0) outbox.append([{ kind: 'event', ts: t, body: eventBody(t, 'e', 'info', 'é ü') }])
    }
    const s = outbox.stats()
    outbox.flush()
    expect(countInFile(ledger)).toEqual({ rows: s.backlogRows, bytes: s.backlogBytes })
    expect(s.backlogRows).toBeLessThanOrEqual(500)
    expect(ledger.db.prepare('SELECT MIN(seq) FROM outbox').pluck().get()).toBe(s.oldestSeq)
  })
})
