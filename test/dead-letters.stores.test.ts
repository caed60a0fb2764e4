import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import { createDeadLetters, type DeadLetters, type NewDeadLetter } from '../hub/mqtt/dead-letters.js'
import { createPostgresDeadLetters } from '../hub/mqtt/dead-letters-postgres.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { tempDir } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * The dead letters on the hub's SQLite file and on a PostgreSQL shared by
 * several hubs (issue #18): one suite, both stores, through their interface.
 */

interface Opened { readonly store: DeadLetters; readonly settle: () => Promise<void> }

const { freshDatabase, closers } = privatePostgres('pg-dead-letters')

function sqlite(maxRows: number): Opened {
  const tmp = tempDir('dead-letters')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 100_000 }, silentLogger())
  closers.push(async () => { writer.close(); db.close(); tmp.remove() })
  return { store: createDeadLetters(db, writer, { maxRows }), settle: async () => { writer.flush() } }
}

async function postgres(maxRows: number): Promise<Opened> {
  const url = await freshDatabase()
  const pool = openPostgres(url, silentLogger(), { maxConnections: 2 })
  await migratePostgres(pool, silentLogger())
  const store = createPostgresDeadLetters(pool, { maxRows, flushDelayMs: 3_600_000, maxQueued: 10_000 }, silentLogger())
  closers.push(async () => { await store.close(); await pool.end() })
  return { store, settle: () => store.flush() }
}

const letter = (n: number, over: Partial<NewDeadLetter> = {}): NewDeadLetter => ({
  ts: 1_700_000_000_000 + n, deviceId: `dev-${n % 2}`, clientId: undefined, topic: `devices/dev-${n % 2}/telemetry`,
  reason: n % 3 === 0 ? 'SCHEMA' : 'DECODE', detail: `bad ${n}`, payload: Buffer.from(`{"n":${n}`), ...over,
})

describe.each([['SQLite', sqlite], ['PostgreSQL', postgres]] as const)('the dead letters on %s', (name, open) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('keeps each refused message with its reason, newest first, by device and by page, and counts reasons at once', async () => {
    const { store, settle } = await open(1000)
    for (let n = 1; n <= 6; n++) store.add(letter(n))
    expect(store.countsByReason()).toEqual({ SCHEMA: 2, DECODE: 4 })
    expect(await store.list({ limit: 10 })).toEqual([])
    await settle()
    const all = await store.list({ limit: 10 })
    expect(all.map((d) => d.detail)).toEqual(['bad 6', 'bad 5', 'bad 4', 'bad 3', 'bad 2', 'bad 1'])
    expect(all[0]).toMatchObject({ deviceId: 'dev-0', clientId: null, topic: 'devices/dev-0/telemetry', reason: 'SCHEMA', payloadBytes: 6, payloadExcerpt: '{"n":6' })
    expect((await store.list({ deviceId: 'dev-1', limit: 10 })).map((d) => d.detail)).toEqual(['bad 5', 'bad 3', 'bad 1'])
    const page = await store.list({ beforeId: all[2]!.id, limit: 2 })
    expect(page.map((d) => d.detail)).toEqual(['bad 3', 'bad 2'])
  })

  it.skipIf(skip)('keeps a binary payload as base64 and a hostile one (NULs in topic, detail and payload) without failing', async () => {
    const { store, settle } = await open(1000)
    store.add(letter(1, { payload: Buffer.from([0xff, 0xfe, 0x00, 0x01]) }))
    store.add(letter(2, { topic: 'devices/x\u0000y/telemetry', detail: 'nul\u0000here', payload: Buffer.from('a\u0000b') }))
    await settle()
    const [hostile, binary] = await store.list({ limit: 10 })
    expect(binary!.payloadExcerpt).toBe(`base64:${Buffer.from([0xff, 0xfe, 0x00, 0x01]).toString('base64')}`)
    // SQLite keeps the NUL; PostgreSQL cannot, and shows it as ␀.
    const nul = name === 'SQLite' ? '\u0000' : '\u2400'
    expect(hostile).toMatchObject({ topic: `devices/x${nul}y/telemetry`, detail: `nul${nul}here`, payloadExcerpt: `a${nul}b` })
  })

  it.skipIf(skip)('stays near its cap, the oldest going first, while the counts keep everything', async () => {
    const { store, settle } = await open(100)
    for (let n = 1; n <= 1500; n++) store.add(letter(n, { reason: 'FLOOD' }))
    await settle()
    const kept = await store.list({ limit: 10_000 })
    // Pruned to the cap every 1,000 rows written: never more than cap + 1,000.
    expect(kept.length).toBeLessThanOrEqual(100 + 1000)
    expect(kept.length).toBeLessThan(1500)
    expect(kept[0]!.detail).toBe('bad 1500')
    expect(kept.some((d) => d.detail === 'bad 1')).toBe(false)
    expect(store.countsByReason()).toEqual({ FLOOD: 1500 })
  })
})

describe.skipIf(SKIP_WITHOUT_POSTGRES)('the dead letters on PostgreSQL while the database refuses', () => {
  it('keeps what it could not write, up to its bound, and writes it once it can', async () => {
    const url = await freshDatabase()
    const pool = openPostgres(url, silentLogger(), { maxConnections: 2 })
    await migratePostgres(pool, silentLogger())
    const store = createPostgresDeadLetters(pool, { maxRows: 1000, flushDelayMs: 3_600_000, maxQueued: 5 }, silentLogger())
    closers.push(async () => { await store.close(); await pool.end() })
    // The table gone from under the hub (an operator's mistake, a half-done restore): the database's fault, not the rows'.
    await pool.query('ALTER TABLE dead_letters RENAME TO dead_letters_away')
    for (let n = 1; n <= 4; n++) store.add(letter(n))
    await store.flush()
    expect(store.stats()).toMatchObject({ queued: 4, failedWrites: 1, dropped: 0 })
    for (let n = 5; n <= 7; n++) store.add(letter(n))
    expect(store.stats()).toMatchObject({ queued: 5, dropped: 2 })
    await pool.query('ALTER TABLE dead_letters_away RENAME TO dead_letters')
    await store.flush()
    expect((await store.list({ limit: 10 })).map((d) => d.detail)).toEqual(['bad 5', 'bad 4', 'bad 3', 'bad 2', 'bad 1'])
    expect(store.stats()).toMatchObject({ queued: 0, dropped: 2 })
    expect(store.countsByReason()).toEqual({ SCHEMA: 2, DECODE: 5 })
  })
})
