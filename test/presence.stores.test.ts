import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import type { Birth } from '../protocol/messages.js'
import { createRegistry } from '../hub/fleet/registry.js'
import { createPostgresRegistry } from '../hub/fleet/registry-postgres.js'
import { createPostgresPresenceRecorder } from '../hub/presence/postgres.js'
import { createPresence, sqlitePresenceRecorder, type PresenceStore } from '../hub/presence/store.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { tempDir } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * Presence on the hub's SQLite file and on a PostgreSQL shared by several
 * hubs (issue #18): one suite for both recorders under the same presence
 * logic, then two hubs that both see every birth and death, as on an
 * external broker, and record each change once.
 */

const { freshDatabase, closers } = privatePostgres('pg-presence')

/** A database with devices dev-1 and dev-2 registered; `open` starts presence on it (again: as a restarted hub). */
interface Backend { open(): Promise<{ presence: PresenceStore; settle: () => Promise<void> }> }

async function sqlite(): Promise<Backend> {
  const tmp = tempDir('presence')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  const writer = createWriter(db, { flushDelayMs: 3_600_000, maxBatchWeight: 100_000 }, silentLogger())
  closers.push(async () => { writer.close(); db.close(); tmp.remove() })
  const registry = createRegistry(db)
  await registry.addDevice('dev-1', null, 1)
  await registry.addDevice('dev-2', null, 1)
  return {
    async open() {
      const { recorder, rows } = sqlitePresenceRecorder(db, writer)
      return { presence: createPresence(recorder, rows, silentLogger()), settle: async () => { writer.flush() } }
    },
  }
}

async function postgresDb(): Promise<string> {
  const url = await freshDatabase()
  const pool = openPostgres(url, silentLogger(), { maxConnections: 2 })
  closers.push(() => pool.end())
  await migratePostgres(pool, silentLogger())
  const registry = createPostgresRegistry(pool, { url }, silentLogger())
  await registry.start()
  await registry.addDevice('dev-1', null, 1)
  await registry.addDevice('dev-2', null, 1)
  await registry.stop()
  return url
}

async function postgresOn(url: string, name = 'hub') {
  const pool = openPostgres(url, silentLogger(), { maxConnections: 3, applicationName: name })
  const rec = await createPostgresPresenceRecorder(pool, { flushDelayMs: 3_600_000, maxQueued: 10_000 }, silentLogger())
  closers.push(async () => {
    await rec.close()
    await pool.end()
    // Every group the database was asked to write went in.
    expect(rec.stats().failedGroups).toBe(0)
  })
  return { presence: createPresence(rec.recorder, rec.rows, silentLogger()), settle: () => rec.flush(), rec }
}

async function postgres(): Promise<Backend> {
  const url = await postgresDb()
  return { open: () => postgresOn(url) }
}

const birth = (epoch: number, units: Record<string, string> = {}): Birth => ({
  type: 'birth', v: 1, epoch, bootId: `boot-${epoch}`, agentVersion: '1.2.3', storeId: 'store-1', capabilities: ['shell'], units,
})

describe.each([['SQLite', sqlite], ['PostgreSQL', postgres]] as const)('presence on %s', (name, make) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('records births and deaths, newest first, and a restarted hub starts from them', async () => {
    const backend = await make()
    const { presence, settle } = await backend.open()
    presence.apply('dev-1', { type: 'birth', epoch: 1, storeId: 'store-1', at: 1000, connId: 1 }, birth(1, { temp: '°C' }))
    presence.apply('dev-1', { type: 'death', epoch: 1, storeId: 'store-1', at: 2000, reason: 'death' })
    presence.apply('dev-1', { type: 'birth', epoch: 2, storeId: 'store-1', at: 3000, connId: 2 }, birth(2, { temp: '°C' }))
    expect(presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 2, reachable: true })
    expect((await presence.history('dev-1', 0, 10)).map((h) => [h.ts, h.status, h.epoch])).toEqual([[3000, 'online', 2], [2000, 'offline', 1], [1000, 'online', 1]])
    presence.touch('dev-1', 3500)
    presence.flushLastSeen()
    await settle()

    const again = await backend.open()
    expect(again.presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 2, lastSeen: 3500, info: { agentVersion: '1.2.3', capabilities: ['shell'], units: { temp: '°C' } } })
    expect(again.presence.get('dev-2')).toBeUndefined()
    expect((await again.presence.historyBetween('dev-1', 1500, 3000, 10)).map((h) => h.status)).toEqual(['offline'])
  })

  it.skipIf(skip)('keeps a late Will of an older epoch from marking a live device offline, and records nothing for it', async () => {
    const { presence } = await (await make()).open()
    presence.apply('dev-1', { type: 'birth', epoch: 5, storeId: 'store-1', at: 1000, connId: 1 }, birth(5))
    presence.apply('dev-1', { type: 'death', epoch: 4, storeId: 'store-1', at: 1100, reason: 'death' })
    expect(presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 5 })
    expect((await presence.history('dev-1', 0, 10)).map((h) => h.status)).toEqual(['online'])
  })

  it.skipIf(skip)('keeps no record of a device that is not registered, and keeps the others of the same write', async () => {
    const backend = await make()
    const { presence, settle } = await backend.open()
    presence.apply('stranger', { type: 'birth', epoch: 1, storeId: 's', at: 1000, connId: 1 }, birth(1))
    presence.apply('dev-2', { type: 'birth', epoch: 1, storeId: 'store-1', at: 1000, connId: 2 }, birth(1))
    await settle()
    expect(await presence.history('stranger', 0, 10)).toEqual([])
    expect((await presence.history('dev-2', 0, 10)).map((h) => h.status)).toEqual(['online'])
    const again = (await backend.open()).presence
    expect(again.get('stranger')).toBeUndefined()
    expect(again.get('dev-2')).toMatchObject({ status: 'online' })
  })

  it.skipIf(skip)('records a re-flashed device, whose new ledger counts its epochs from 1 again', async () => {
    const { presence } = await (await make()).open()
    presence.apply('dev-1', { type: 'birth', epoch: 1, storeId: 'store-1', at: 1000, connId: 1 }, birth(1))
    presence.apply('dev-1', { type: 'death', epoch: 1, storeId: 'store-1', at: 2000, reason: 'death' })
    presence.apply('dev-1', { type: 'birth', epoch: 1, storeId: 'store-2', at: 3000, connId: 2 }, { ...birth(1), storeId: 'store-2' })
    expect(presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 1 })
    expect((await presence.history('dev-1', 0, 10)).map((h) => [h.ts, h.status])).toEqual([[3000, 'online'], [2000, 'offline'], [1000, 'online']])
  })
})

describe.skipIf(SKIP_WITHOUT_POSTGRES)('presence on PostgreSQL shared by two hubs', () => {
  it('records each change once when both hubs see every birth and death, whichever commits first', async () => {
    const url = await postgresDb()
    const [a, b] = [await postgresOn(url, 'hub-a'), await postgresOn(url, 'hub-b')]
    // As on an external broker: the same births and deaths reach both hubs.
    const events = [
      (p: PresenceStore) => p.apply('dev-1', { type: 'birth', epoch: 1, storeId: 'store-1', at: 1000, connId: 1 }, birth(1)),
      (p: PresenceStore) => p.apply('dev-2', { type: 'birth', epoch: 1, storeId: 'store-1', at: 1000, connId: 1 }, birth(1)),
      (p: PresenceStore) => p.apply('dev-1', { type: 'death', epoch: 1, storeId: 'store-1', at: 2000, reason: 'death' }),
      (p: PresenceStore) => p.apply('dev-1', { type: 'birth', epoch: 2, storeId: 'store-1', at: 3000, connId: 2 }, birth(2)),
    ]
    for (const e of events.slice(0, 2)) { e(a.presence); e(b.presence) }
    await Promise.all([a.settle(), b.settle()])
    for (const e of events.slice(2)) { e(a.presence); e(b.presence) }
    // This time hub b commits first.
    await b.settle()
    await a.settle()
    expect((await a.presence.history('dev-1', 0, 10)).map((h) => [h.status, h.epoch])).toEqual([['online', 2], ['offline', 1], ['online', 1]])
    expect((await b.presence.history('dev-2', 0, 10)).map((h) => [h.status, h.epoch])).toEqual([['online', 1]])
    // Four changes, each sent by both hubs: recorded once, found recorded once.
    expect(a.rec.stats().changesRecorded + b.rec.stats().changesRecorded).toBe(4)
    expect(a.rec.stats().changesNotNew + b.rec.stats().changesNotNew).toBe(4)
    expect(a.presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 2 })
    expect(b.presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 2 })
  })

  it('records a change once whatever reason each hub gives it, keeps one hub\'s restart out, and never takes the state back', async () => {
    const url = await postgresDb()
    const [a, b] = [await postgresOn(url, 'hub-a'), await postgresOn(url, 'hub-b')]
    for (const p of [a, b]) p.presence.apply('dev-1', { type: 'birth', epoch: 1, storeId: 'store-1', at: 1000, connId: 1 }, birth(1))
    await Promise.all([a.settle(), b.settle()])
    // Hub a gave the device a new token and marked it gone itself; hub b saw the retained death.
    a.presence.apply('dev-1', { type: 'death', epoch: 1, storeId: 'store-1', at: 2000, reason: 'token-rotated' })
    b.presence.apply('dev-1', { type: 'death', epoch: 1, storeId: 'store-1', at: 2001, reason: 'death' })
    await a.settle()
    await b.settle()
    expect((await a.presence.history('dev-1', 0, 10)).map((h) => [h.status, h.reason])).toEqual([['offline', 'token-rotated'], ['online', 'birth']])
    // The device is back (epoch 2) through hub a; hub b restarts meanwhile, and lags: it has seen nothing since.
    a.presence.apply('dev-1', { type: 'birth', epoch: 2, storeId: 'store-1', at: 3000, connId: 2 }, birth(2))
    await a.settle()
    const restarted = await postgresOn(url, 'hub-b-again')
    expect(restarted.presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 2 })
    restarted.presence.hubStarted(4000)
    b.presence.apply('dev-1', { type: 'birth', epoch: 1, storeId: 'store-1', at: 4001, connId: 3 }, birth(1))
    await restarted.settle()
    await b.settle()
    // Its restart is not the device's presence, and its older state does not overwrite the newer one.
    expect((await a.presence.history('dev-1', 0, 10)).map((h) => [h.status, h.epoch])).toEqual([['online', 2], ['offline', 1], ['online', 1]])
    const fresh = await postgresOn(url, 'hub-c')
    expect(fresh.presence.get('dev-1')).toMatchObject({ status: 'online', epoch: 2 })
  })
})
