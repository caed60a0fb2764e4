import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import { createRegistry, type Registry } from '../hub/fleet/registry.js'
import { createPostgresRegistry, type PostgresRegistry } from '../hub/fleet/registry-postgres.js'
import { openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { tempDir, waitFor } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * The registry on the hub's SQLite file and on a PostgreSQL shared by several
 * hubs (issue #18): one suite for both, then what only several hubs can get
 * wrong: a change made through one hub, seen by the other.
 */

const { freshDatabase, closers } = privatePostgres('pg-registry')

async function sqlite(): Promise<Registry> {
  const tmp = tempDir('registry')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  closers.push(async () => { db.close(); tmp.remove() })
  return createRegistry(db)
}

/** `hubs` registries on one fresh database, each with its own pool and listening connection, started. */
async function postgres(hubs = 1, reconnectBaseMs = 20): Promise<{ url: string; registries: PostgresRegistry[] }> {
  const url = await freshDatabase()
  const registries: PostgresRegistry[] = []
  for (let i = 0; i < hubs; i++) {
    const pool = openPostgres(url, silentLogger(), { maxConnections: 3, applicationName: `hub-${i}` })
    closers.push(() => pool.end())
    if (i === 0) await migratePostgres(pool, silentLogger())
    const r = createPostgresRegistry(pool, { url, reconnectBaseMs, reconnectMaxMs: Math.max(200, reconnectBaseMs) }, silentLogger())
    await r.start()
    closers.push(() => r.stop())
    registries.push(r)
  }
  return { url, registries }
}

const open: Array<[string, () => Promise<Registry>]> = [
  ['SQLite', sqlite],
  ['PostgreSQL', async () => (await postgres()).registries[0]!],
]

describe.each(open)('the registry on %s', (name, make) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('adds, lists, finds, counts and removes devices, and says what is wrong with a bad one', async () => {
    const r = await make()
    const v0 = r.devicesVersion()
    const { device, token } = await r.addDevice('pump-1', 'pumps', 1000)
    expect(device).toEqual({ id: 'pump-1', group: 'pumps', createdAt: 1000 })
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    await r.addDevice('fan-1', null, 2000)
    expect(r.devicesVersion()).not.toBe(v0)
    expect(r.listDevices().map((d) => d.id)).toEqual(['fan-1', 'pump-1'])
    expect(r.countDevices()).toBe(2)
    expect(r.getDevice('pump-1')).toEqual(device)
    expect(r.groupOf('pump-1')).toBe('pumps')
    expect(r.groupOf('fan-1')).toBeNull()
    expect(r.groupOf('nobody')).toBeUndefined()
    await expect(r.addDevice('pump-1', null, 3000)).rejects.toMatchObject({ code: 'DEVICE_EXISTS' })
    await expect(r.addDevice('bad id!', null, 3000)).rejects.toMatchObject({ code: 'INVALID_DEVICE_ID' })
    await expect(r.addDevice('ok-id', 'Bad Group', 3000)).rejects.toMatchObject({ code: 'INVALID_NAME' })
    await r.removeDevice('pump-1')
    expect(r.getDevice('pump-1')).toBeUndefined()
    expect(() => r.requireDevice('pump-1')).toThrow(/no device "pump-1"/)
    await expect(r.removeDevice('pump-1')).rejects.toMatchObject({ code: 'DEVICE_NOT_FOUND' })
    expect(r.countDevices()).toBe(1)
  })

  it.skipIf(skip)('checks credentials: the token works until it is rotated, a wrong or unknown one gets one answer', async () => {
    const r = await make()
    const { token } = await r.addDevice('dev-1', null, 1)
    expect(r.checkCredentials('dev-1', Buffer.from(token))).toEqual({ ok: true, principal: { kind: 'device', id: 'dev-1' } })
    const fresh = await r.rotateDeviceToken('dev-1')
    expect(fresh).not.toBe(token)
    expect(r.checkCredentials('dev-1', Buffer.from(token))).toMatchObject({ ok: false, reason: 'unknown device or wrong token' })
    expect(r.checkCredentials('dev-1', Buffer.from(fresh))).toMatchObject({ ok: true })
    expect(r.checkCredentials('ghost', Buffer.from(fresh))).toMatchObject({ ok: false, reason: 'unknown device or wrong token' })
    await expect(r.rotateDeviceToken('ghost')).rejects.toMatchObject({ code: 'DEVICE_NOT_FOUND' })
  })

  it.skipIf(skip)('keeps observers apart from devices, with their own names and tokens', async () => {
    const r = await make()
    const { observer, token } = await r.addObserver('grafana', 5)
    expect(observer).toEqual({ name: 'grafana', createdAt: 5 })
    expect(r.listObservers()).toEqual([observer])
    expect(r.checkCredentials('observer:grafana', Buffer.from(token))).toEqual({ ok: true, principal: { kind: 'observer', name: 'grafana' } })
    expect(r.checkCredentials('grafana', Buffer.from(token))).toMatchObject({ ok: false })
    await expect(r.addObserver('grafana', 6)).rejects.toMatchObject({ code: 'OBSERVER_EXISTS' })
    await r.removeObserver('grafana')
    expect(r.checkCredentials('observer:grafana', Buffer.from(token))).toMatchObject({ ok: false })
    await expect(r.removeObserver('grafana')).rejects.toMatchObject({ code: 'OBSERVER_NOT_FOUND' })
  })
})

describe.skipIf(SKIP_WITHOUT_POSTGRES)('the registry on PostgreSQL shared by two hubs', () => {
  it('sees a device added, given a new token and removed through the other hub, and an observer', async () => {
    const { registries: [a, b] } = await postgres(2)
    const { token } = await a!.addDevice('dev-1', 'g', 1)
    await waitFor(() => b!.getDevice('dev-1'), 'hub b knows dev-1')
    expect(b!.checkCredentials('dev-1', Buffer.from(token))).toMatchObject({ ok: true })
    expect(b!.groupOf('dev-1')).toBe('g')
    const fresh = await b!.rotateDeviceToken('dev-1')
    await waitFor(() => a!.checkCredentials('dev-1', Buffer.from(fresh)).ok, 'hub a takes the new token')
    expect(a!.checkCredentials('dev-1', Buffer.from(token))).toMatchObject({ ok: false })
    // Adding an id the other hub made is refused by the database, whatever this hub knew.
    await expect(b!.addDevice('dev-1', null, 2)).rejects.toMatchObject({ code: 'DEVICE_EXISTS' })
    await a!.removeDevice('dev-1')
    await waitFor(() => b!.getDevice('dev-1') === undefined, 'hub b forgets dev-1')
    expect(b!.checkCredentials('dev-1', Buffer.from(fresh))).toMatchObject({ ok: false })
    const { token: seen } = await a!.addObserver('viewer', 3)
    await waitFor(() => b!.checkCredentials('observer:viewer', Buffer.from(seen)).ok, 'hub b knows the observer')
  })

  it('catches up on what changed while its listening connection was down', async () => {
    // Five seconds before a hub listens again: the changes below are all made while it does not.
    const { url, registries: [a, b] } = await postgres(2, 5000)
    await a!.addDevice('before', null, 1)
    await waitFor(() => b!.getDevice('before'), 'hub b knows "before"')
    // End hub b's listening connection from the server's side, and change things before it is back.
    const admin = openPostgres(url, silentLogger(), { maxConnections: 1 })
    closers.push(() => admin.end())
    const killed = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'rollcall-hub-registry' AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`)
    expect(killed.rowCount).toBe(2)
    await waitFor(() => !b!.stats().listening, 'hub b sees its listening connection gone')
    await a!.addDevice('during', null, 2)
    await a!.removeDevice('before')
    // Nothing reached hub b meanwhile.
    expect(b!.getDevice('before')).toBeDefined()
    expect(b!.getDevice('during')).toBeUndefined()
    await waitFor(() => b!.getDevice('during') !== undefined && b!.getDevice('before') === undefined, 'hub b caught up')
    await waitFor(() => b!.stats().listening && b!.stats().reconnects >= 1, 'hub b listening again')
    expect(b!.listDevices().map((d) => d.id)).toEqual(['during'])
  })
})
