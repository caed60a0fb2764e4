import pg from 'pg'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import { OBSERVER_USER_PREFIX, isDeviceId } from '../../protocol/ids.js'
import type { AuthResult } from '../../broker/types.js'
import { connectionConfig, inTransaction } from '../storage/postgres/pool.js'
import { checkNewDevice, checkNewObserver, type DeviceRecord, type ObserverRecord, type Registry } from './registry.js'
import { generateToken, hashToken, tokenMatches } from './tokens.js'

/**
 * The registry on a PostgreSQL shared by several hubs (issue #18;
 * registry.ts says what it owns). Reads answer from memory, as the SQLite
 * registry's do from its file, because the broker's credential check and the
 * rules ask on their hot paths: each hub keeps every device and observer
 * (ids, groups, token hashes: about 100 bytes each) and follows the others'
 * changes.
 *
 * A write commits with a NOTIFY on `rollcall_registry` naming what changed;
 * every hub LISTENs on a connection of its own and reads that row again, so a
 * device added, given a new token or removed through one hub is known to all
 * within a round trip. The writing hub applies its own change at once. When
 * the listening connection drops, notifications sent meanwhile are lost: the
 * hub connects again (backing off to 5 s), LISTENs first, then reads
 * everything again, so nothing missed stays missed.
 */

const CHANNEL = 'rollcall_registry'

interface DeviceRow { id: string; grp: string | null; token_hash: Buffer; created_at: number }
interface ObserverRow { name: string; token_hash: Buffer; created_at: number }
interface Change { readonly k: 'd' | 'o'; readonly id: string }

export interface PostgresRegistryOptions {
  /** The listening connection's own settings (the pool's URL). */
  readonly url: string
  /** Its password, when the URL does not carry one (openPostgres's). */
  readonly password?: string | undefined
  /** Reconnect delays of the listening connection, ms. */
  readonly reconnectBaseMs?: number
  readonly reconnectMaxMs?: number
}

export function createPostgresRegistry(pool: pg.Pool, opts: PostgresRegistryOptions, logger: Logger) {
  let devices = new Map<string, DeviceRow>()
  let observers = new Map<string, ObserverRow>()
  let version = 0
  let listener: pg.Client | undefined
  // A client between connect and LISTEN: stop() ends it too.
  let connecting: pg.Client | undefined
  let stopped = false
  let retryTimer: NodeJS.Timeout | undefined
  let reconnects = 0
  let failures = 0

  const toDevice = (r: DeviceRow): DeviceRecord => ({ id: r.id, group: r.grp, createdAt: r.created_at })

  async function reloadAll(): Promise<void> {
    const [d, o] = await Promise.all([
      pool.query<DeviceRow>('SELECT id, grp, token_hash, created_at FROM devices'),
      pool.query<ObserverRow>('SELECT name, token_hash, created_at FROM observers'),
    ])
    devices = new Map(d.rows.map((r) => [r.id, r]))
    observers = new Map(o.rows.map((r) => [r.name, r]))
    version++
  }

  // Rows are read again one at a time, in the order the changes came, and a full reload
  // takes its turn among them: two reads on two connections could otherwise answer out of
  // order, and an older answer would bring back a removed device or an old token.
  let rereads: Promise<void> = Promise.resolve()
  function inTurn(read: () => Promise<void>): Promise<void> {
    const next = rereads.then(read)
    rereads = next.catch(() => undefined)
    return next
  }
  const rereadInTurn = (change: Change) => inTurn(() => reread(change))

  /** Reads one row again after a change another hub (or this one) made. */
  async function reread(change: Change): Promise<void> {
    if (change.k === 'd') {
      const { rows } = await pool.query<DeviceRow>('SELECT id, grp, token_hash, created_at FROM devices WHERE id = $1', [change.id])
      if (rows[0]) devices.set(change.id, rows[0])
      else devices.delete(change.id)
      version++
    } else {
      const { rows } = await pool.query<ObserverRow>('SELECT name, token_hash, created_at FROM observers WHERE name = $1', [change.id])
      if (rows[0]) observers.set(change.id, rows[0])
      else observers.delete(change.id)
    }
  }

  async function listen(): Promise<void> {
    // Keepalives after 10 s idle: a connection the network cut silently is found in seconds, not the kernel's two hours.
    const client = new pg.Client({ ...connectionConfig(opts.url, opts.password), application_name: 'rollcall-hub-registry', keepAlive: true, keepAliveInitialDelayMillis: 10_000 })
    client.on('error', (err) => {
      logger.warn({ err: err.message }, 'the registry\'s listening connection failed: connecting again')
      reconnectSoon(client)
    })
    client.on('end', () => { reconnectSoon(client) })
    client.on('notification', (n) => {
      if (n.channel !== CHANNEL || n.payload === undefined) return
      let change: Change
      try {
        change = JSON.parse(n.payload) as Change
      } catch {
        return
      }
      rereadInTurn(change).catch((err: unknown) => {
        // A row that cannot be read now: everything is read again, which also retries it.
        logger.warn({ err: (err as Error).message, change }, 'a registry change could not be read: reading everything again')
        reconnectSoon(client)
      })
    })
    connecting = client
    try {
      await client.connect()
      await client.query(`LISTEN ${CHANNEL}`)
      if (stopped) throw new Error('the registry stopped')
      listener = client
      // After LISTEN: a change made while reading is notified, and read again after it.
      await inTurn(reloadAll)
      failures = 0
    } catch (err) {
      if (listener === client) listener = undefined
      await client.end().catch(() => undefined)
      throw err
    } finally {
      if (connecting === client) connecting = undefined
    }
  }

  function reconnectSoon(client: pg.Client): void {
    if (stopped || listener !== client) return
    listener = undefined
    client.end().catch(() => undefined)
    schedule()
  }

  function schedule(): void {
    if (stopped || retryTimer) return
    const base = opts.reconnectBaseMs ?? 100
    const delay = Math.min(opts.reconnectMaxMs ?? 5000, base * 2 ** Math.min(failures, 10))
    retryTimer = setTimeout(() => {
      retryTimer = undefined
      reconnects++
      listen().catch((err: unknown) => {
        failures++
        logger.warn({ err: (err as Error).message }, 'the registry could not listen for changes yet: trying again')
        schedule()
      })
    }, delay)
  }

  /** Commits `sql` with a NOTIFY of the change, and applies it here at once. */
  async function write(change: Change, sql: string, params: unknown[]): Promise<number> {
    const n = await inTransaction(pool, async (c) => {
      const r = await c.query(sql, params)
      if ((r.rowCount ?? 0) > 0) await c.query('SELECT pg_notify($1, $2)', [CHANNEL, JSON.stringify(change)])
      return r.rowCount ?? 0
    })
    // Committed: the write has happened whatever follows. Should reading the row back fail,
    // everything is read again (in turn) rather than the caller told it failed.
    if (n > 0) {
      await rereadInTurn(change).catch((err: unknown) => {
        logger.warn({ err: (err as Error).message, change }, 'a registry change was committed but not read back: reading everything again')
        inTurn(reloadAll).catch(() => undefined)
      })
    }
    return n
  }

  const isUnique = (err: unknown) => (err as { code?: string }).code === '23505'

  const registry: Registry = {
    async addDevice(id, group, now) {
      checkNewDevice(id, group)
      const token = generateToken()
      try {
        await write({ k: 'd', id }, 'INSERT INTO devices (id, grp, token_hash, created_at) VALUES ($1, $2, $3, $4)', [id, group, hashToken(token), now])
      } catch (err) {
        if (isUnique(err)) throw new RollcallError('DEVICE_EXISTS', `device "${id}" already exists; remove it first or rotate its token`)
        throw err
      }
      return { device: { id, group, createdAt: now }, token }
    },
    getDevice: (id) => { const r = devices.get(id); return r ? toDevice(r) : undefined },
    groupOf: (id) => devices.get(id)?.grp,
    requireDevice(id) {
      const r = devices.get(id)
      if (!r) throw new RollcallError('DEVICE_NOT_FOUND', `no device "${id}"`)
      return toDevice(r)
    },
    listDevices: () => [...devices.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map(toDevice),
    devicesVersion: () => version,
    countDevices: () => devices.size,
    async rotateDeviceToken(id, token = generateToken()) {
      if (await write({ k: 'd', id }, 'UPDATE devices SET token_hash = $1 WHERE id = $2', [hashToken(token), id]) === 0) {
        throw new RollcallError('DEVICE_NOT_FOUND', `no device "${id}"`)
      }
      return token
    },
    async removeDevice(id) {
      if (await write({ k: 'd', id }, 'DELETE FROM devices WHERE id = $1', [id]) === 0) throw new RollcallError('DEVICE_NOT_FOUND', `no device "${id}"`)
    },
    async addObserver(name, now) {
      checkNewObserver(name)
      const token = generateToken()
      try {
        await write({ k: 'o', id: name }, 'INSERT INTO observers (name, token_hash, created_at) VALUES ($1, $2, $3)', [name, hashToken(token), now])
      } catch (err) {
        if (isUnique(err)) throw new RollcallError('OBSERVER_EXISTS', `observer "${name}" already exists`)
        throw err
      }
      return { observer: { name, createdAt: now }, token }
    },
    listObservers: (): ObserverRecord[] => [...observers.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((r) => ({ name: r.name, createdAt: r.created_at })),
    async removeObserver(name) {
      if (await write({ k: 'o', id: name }, 'DELETE FROM observers WHERE name = $1', [name]) === 0) throw new RollcallError('OBSERVER_NOT_FOUND', `no observer "${name}"`)
    },
    checkCredentials(username: string, password: Buffer): AuthResult {
      if (username.startsWith(OBSERVER_USER_PREFIX)) {
        const name = username.slice(OBSERVER_USER_PREFIX.length)
        const row = observers.get(name)
        if (row && tokenMatches(password, row.token_hash)) return { ok: true, principal: { kind: 'observer', name } }
        return { ok: false, returnCode: 4, reason: 'unknown observer or wrong token' }
      }
      const row = isDeviceId(username) ? devices.get(username) : undefined
      if (row && tokenMatches(password, row.token_hash)) return { ok: true, principal: { kind: 'device', id: row.id } }
      return { ok: false, returnCode: 4, reason: 'unknown device or wrong token' }
    },
  }

  return {
    ...registry,
    /** Reads everything and starts following the other hubs' changes; the hub's start fails if that fails. */
    start: () => listen(),
    stats: () => ({ listening: listener !== undefined, reconnects }),
    async stop(): Promise<void> {
      stopped = true
      if (retryTimer) clearTimeout(retryTimer)
      const l = listener
      listener = undefined
      const ending = [l, connecting].filter((c): c is pg.Client => c !== undefined).map((c) => c.end().catch(() => undefined))
      await Promise.all(ending)
      await rereads
    },
  }
}

export type PostgresRegistry = ReturnType<typeof createPostgresRegistry>
