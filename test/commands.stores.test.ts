import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import { createPostgresCommandStore } from '../hub/commands/postgres.js'
import { createSqliteCommandStore } from '../hub/commands/sqlite.js'
import { ABANDONED_AFTER_MS, type CommandStore, type NewCommand } from '../hub/commands/store.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { tempDir } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * The command record on the hub's SQLite file and on a PostgreSQL shared by
 * several hubs (issue #18): one suite for both stores, then what only a
 * shared database has: several hubs, each settling only what it left in
 * flight, and each getting every reply.
 */

const { freshDatabase, closers } = privatePostgres('pg-commands')

/** `open` gives a store on the backend's database (again: a restarted hub); on PostgreSQL, as the hub named `hubId`. */
interface Backend { open(hubId?: string): CommandStore }

function sqlite(): Promise<Backend> {
  const tmp = tempDir('commands')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 100_000 }, silentLogger())
  closers.push(async () => { writer.close(); db.close(); tmp.remove() })
  return Promise.resolve({ open: () => createSqliteCommandStore(db, writer) })
}

async function postgresDb(): Promise<{ url: string; open(hubId?: string): ReturnType<typeof createPostgresCommandStore> }> {
  const url = await freshDatabase()
  const setup = openPostgres(url, silentLogger(), { maxConnections: 1 })
  await migratePostgres(setup, silentLogger())
  await setup.end()
  return {
    url,
    open(hubId = 'hub-a') {
      const pool = openPostgres(url, silentLogger(), { maxConnections: 3, applicationName: hubId })
      const store = createPostgresCommandStore(pool, { hubId }, silentLogger())
      closers.push(async () => {
        await store.flush()
        await pool.end()
      })
      return store
    },
  }
}

async function postgres(): Promise<Backend> {
  const db = await postgresDb()
  return { open: (hubId) => db.open(hubId) }
}

/** A late reply offered, and its write committed now (on SQLite it would wait for the writer's next group). */
async function lateNow(store: CommandStore, id: string, deviceId: string, at: number, response: string): Promise<boolean> {
  const kept = store.late(id, deviceId, at, response)
  await store.flush()
  return kept
}

const T0 = 1_700_000_000_000
const cmd = (id: string, over: Partial<NewCommand> = {}): NewCommand => ({
  id, deviceId: 'dev-1', name: 'sys.info', args: '{"a":1}', groupId: null, status: 'sent', createdAt: T0, expiresAt: T0 + 10_000, ...over,
})

describe.each([['SQLite', sqlite], ['PostgreSQL', postgres]] as const)('the command record on %s', (name, make) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('records a command sent, then its outcome once: a second outcome changes nothing', async () => {
    const store = (await make()).open()
    await store.add(cmd('c1', { cause: { rule: 'r1', firing: 'f1' } }))
    expect(await store.get('c1')).toMatchObject({ status: 'sent', sentAt: T0, finishedAt: null, args: { a: 1 }, cause: { rule: 'r1', firing: 'f1' } })
    await store.finish(cmd('c1'), 'succeeded', T0 + 50, '{"ok":1}', null)
    await store.finish(cmd('c1'), 'timed_out', T0 + 60, null, { code: 'TIMEOUT', message: 'late' })
    const r = await store.get('c1')
    expect(r).toMatchObject({ status: 'succeeded', result: { ok: 1 }, error: null, finishedAt: T0 + 50, late: null })
    expect(r!.timeline).toEqual([{ at: T0, event: 'created' }, { at: T0, event: 'sent' }, { at: T0 + 50, event: 'replied' }])
    expect(await store.get('nope')).toBeUndefined()
  })

  it.skipIf(skip)('keeps the first reply after a command ended unanswered, and no copy of the reply that ended one', async () => {
    const store = (await make()).open()
    await store.add(cmd('c-late'))
    await store.finish(cmd('c-late'), 'timed_out', T0 + 10_000, null, { code: 'TIMEOUT', message: 'no reply' })
    expect(await lateNow(store, 'c-late', 'dev-2', T0 + 10_500, '{"ok":true}')).toBe(false)
    expect(await lateNow(store, 'c-late', 'dev-1', T0 + 11_000, '{"ok":true,"result":"first"}')).toBe(true)
    expect(await lateNow(store, 'c-late', 'dev-1', T0 + 12_000, '{"ok":true,"result":"second"}')).toBe(false)
    const late = await store.get('c-late')
    expect(late).toMatchObject({ status: 'timed_out', result: null, late: { at: T0 + 11_000, response: { ok: true, result: 'first' } } })
    expect(late!.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'timed_out', 'late reply (ignored)'])

    await store.add(cmd('c-done'))
    await store.finish(cmd('c-done'), 'succeeded', T0 + 20, '"yes"', null)
    expect(await lateNow(store, 'c-done', 'dev-1', T0 + 30, '{"ok":true,"result":"yes"}')).toBe(false)
    expect(await store.get('c-done')).toMatchObject({ status: 'succeeded', late: null })
  })

  it.skipIf(skip)('records commands never sent as settled when made: refused offline, queued as a job, past a group\'s deadline', async () => {
    const store = (await make()).open()
    await Promise.all([
      store.add(cmd('c-off', { status: 'offline', error: { code: 'DEVICE_OFFLINE', message: 'away' } })),
      store.add(cmd('c-q', { status: 'queued', jobId: 'j1' })),
      store.add(cmd('c-to', { status: 'timed_out', groupId: 'g1', error: { code: 'TIMEOUT', message: 'deadline' } })),
    ])
    expect(await store.get('c-off')).toMatchObject({ status: 'offline', sentAt: null, finishedAt: T0, error: { code: 'DEVICE_OFFLINE' } })
    expect((await store.get('c-q'))!.timeline.map((e) => e.event)).toEqual(['created', 'queued as job j1'])
    expect((await store.get('c-to'))!.timeline.map((e) => e.event)).toEqual(['created', "not sent: the group's deadline passed first"])
  })

  it.skipIf(skip)('settles what the last run left in flight at the next start, and a command sent again under its id starts over', async () => {
    const b = await make()
    const first = b.open()
    await first.add(cmd('c-orphan'))
    await first.add(cmd('c-answered'))
    await first.finish(cmd('c-answered'), 'succeeded', T0 + 5, null, null)
    await first.flush()

    const second = b.open()
    expect(await second.settleOrphans(T0 + 100)).toBe(1)
    expect(await second.get('c-orphan')).toMatchObject({ status: 'disconnected', finishedAt: T0 + 100, error: { code: 'HUB_RESTART' } })
    // The rule's action carried out again: the row is sent again, its first send kept in the timeline.
    await second.add(cmd('c-orphan', { createdAt: T0 + 200, expiresAt: T0 + 10_000 }))
    await second.add(cmd('c-answered', { createdAt: T0 + 200 }))
    const again = await second.get('c-orphan')
    expect(again).toMatchObject({ status: 'sent', sentAt: T0 + 200, createdAt: T0, error: null, finishedAt: null })
    expect(again!.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'sent again after a hub restart'])
    // What came to an answer stands.
    expect(await second.get('c-answered')).toMatchObject({ status: 'succeeded', sentAt: T0 })
  })

  it.skipIf(skip)('records an outcome whose command row was never written (its first write was lost)', async () => {
    const store = (await make()).open()
    await store.finish(cmd('c-lost', { groupId: 'g-lost' }), 'disconnected', T0 + 7, null, { code: 'DISCONNECTED', message: 'gone' })
    expect(await store.get('c-lost')).toMatchObject({ status: 'disconnected', deviceId: 'dev-1', groupId: 'g-lost', sentAt: T0, finishedAt: T0 + 7 })
  })

  it.skipIf(skip)('reads what was written before the read, newest first per device, by device per group, and prunes by age', async () => {
    const store = (await make()).open()
    // Not awaited: the reads must see them anyway.
    const writes = [0, 1, 2, 3].map((i) => store.add(cmd(`c-${i}`, { createdAt: T0 + i, deviceId: i === 3 ? 'dev-2' : 'dev-1', groupId: i >= 2 ? 'g' : null })))
    expect((await store.ofDevice('dev-1', 10)).map((c) => c.id)).toEqual(['c-2', 'c-1', 'c-0'])
    expect((await store.ofDevice('dev-1', 2)).map((c) => c.id)).toEqual(['c-2', 'c-1'])
    expect((await store.ofGroup('g')).map((c) => [c.id, c.deviceId])).toEqual([['c-2', 'dev-1'], ['c-3', 'dev-2']])
    await Promise.all(writes)
    expect(await store.prune(T0 + 2)).toBe(2)
    expect((await store.ofDevice('dev-1', 10)).map((c) => c.id)).toEqual(['c-2'])
  })

  it.skipIf(skip)('writes a group command\'s thousand records made in one turn, each durable when its promise resolves', async () => {
    const store = (await make()).open()
    const ids = Array.from({ length: 1000 }, (_, i) => `g-${String(i).padStart(4, '0')}`)
    await Promise.all(ids.map((id, i) => store.add(cmd(id, { deviceId: `dev-${i}`, groupId: 'big', status: i % 2 === 0 ? 'sent' : 'offline' }))))
    const members = await store.ofGroup('big')
    expect(members).toHaveLength(1000)
    expect(members.filter((m) => m.status === 'offline')).toHaveLength(500)
  })
})

describe.skipIf(SKIP_WITHOUT_POSTGRES)('the command record shared by several hubs', () => {
  it('a hub that starts again settles only the commands it sent, and those of a hub long gone', async () => {
    const db = await postgresDb()
    const a = db.open('hub-a')
    const b = db.open('hub-b')
    // Abandoned is judged on the database's clock, which is the machine's here.
    const now = Date.now()
    await a.add(cmd('c-a', { createdAt: now, expiresAt: now + 30_000 }))
    await b.add(cmd('c-b', { createdAt: now, expiresAt: now + 30_000 }))
    // hub-c sent this one and never came back: its deadline passed more than ABANDONED_AFTER_MS ago.
    await db.open('hub-c').add(cmd('c-gone', { createdAt: now - 600_000, expiresAt: now - ABANDONED_AFTER_MS - 60_000 }))
    await db.open('hub-c').add(cmd('c-gone-recently', { createdAt: now - 600_000, expiresAt: now - ABANDONED_AFTER_MS + 60_000 }))

    // hub-a restarts: its own command and the abandoned one end; hub-b's, still awaited, does not.
    const a2 = db.open('hub-a')
    expect(await a2.settleOrphans(now)).toBe(2)
    expect(await a2.get('c-a')).toMatchObject({ status: 'disconnected', error: { code: 'HUB_RESTART' } })
    expect(await a2.get('c-gone')).toMatchObject({ status: 'disconnected', error: { code: 'HUB_RESTART' } })
    expect(await a2.get('c-b')).toMatchObject({ status: 'sent' })
    expect(await a2.get('c-gone-recently')).toMatchObject({ status: 'sent' })
    // hub-b answers its own.
    await b.finish(cmd('c-b', { createdAt: now, expiresAt: now + 30_000 }), 'succeeded', now + 10, '1', null)
    expect(await a2.get('c-b')).toMatchObject({ status: 'succeeded', result: 1 })
  })

  it('records a reply once, whichever hubs receive it: the sender settles it, the others keep no late copy, in either order', async () => {
    const db = await postgresDb()
    const sender = db.open('hub-a')
    const other = db.open('hub-b')
    // Every hub gets the reply: the other hub offers it as late before the sender's outcome is written...
    await sender.add(cmd('c-first'))
    expect(await lateNow(other, 'c-first', 'dev-1', T0 + 40, '{"ok":true}')).toBe(false)
    await sender.finish(cmd('c-first'), 'succeeded', T0 + 40, 'true', null)
    // ...or after it.
    await sender.add(cmd('c-after'))
    await sender.finish(cmd('c-after'), 'succeeded', T0 + 40, 'true', null)
    expect(await lateNow(other, 'c-after', 'dev-1', T0 + 41, '{"ok":true}')).toBe(false)
    for (const id of ['c-first', 'c-after']) expect(await other.get(id)).toMatchObject({ status: 'succeeded', result: true, late: null })
  })

  it('writes a command made, ended and answered late in one turn in that order', async () => {
    const db = await postgresDb()
    const store = db.open()
    // One statement may touch a row once: the same id three times in a turn goes in three rounds, in order.
    const [added, finished, kept] = await Promise.all([
      store.add(cmd('c-turn')),
      store.finish(cmd('c-turn'), 'disconnected', T0 + 5, null, { code: 'DISCONNECTED', message: 'gone' }),
      store.late('c-turn', 'dev-1', T0 + 6, '{"ok":true}'),
    ])
    expect([added, finished, kept]).toEqual([undefined, undefined, true])
    expect(await store.get('c-turn')).toMatchObject({ status: 'disconnected', late: { at: T0 + 6, response: { ok: true } } })
    expect(store.stats()).toMatchObject({ groups: 1, failedGroups: 0 })
  })

  it('a write the database refuses for its content fails alone; the others of its turn are written', async () => {
    const db = await postgresDb()
    const store = db.open()
    // 2^70 ms is beyond PostgreSQL's bigint: a data exception (SQLSTATE class 22), the write's own fault.
    const results = await Promise.allSettled([store.add(cmd('c-ok-1')), store.add(cmd('c-bad', { expiresAt: 2 ** 70 })), store.add(cmd('c-ok-2'))])
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect(((results[1] as PromiseRejectedResult).reason as { code?: string }).code).toMatch(/^22/)
    expect(await store.get('c-ok-1')).toMatchObject({ status: 'sent' })
    expect(await store.get('c-ok-2')).toMatchObject({ status: 'sent' })
    expect(await store.get('c-bad')).toBeUndefined()
    expect(store.stats()).toMatchObject({ isolatedGroups: 1, writesFailed: 1, failedGroups: 0 })
  })
})
