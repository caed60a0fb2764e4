import type { Db } from '../../common/sqlite.js'
import { RollcallError } from '../../common/errors.js'
import { DEVICE_ID_RULE, OBSERVER_USER_PREFIX, isDeviceId } from '../../protocol/ids.js'
import { generateToken, hashToken, tokenMatches } from './tokens.js'
import type { AuthResult } from '../../broker/types.js'

/**
 * The registry owns the devices and observers tables: who may connect, with
 * which token hash, in which group. Tokens are returned once, at creation or
 * rotation, and never stored in clear. This is the hub's own SQLite file;
 * registry-postgres.ts keeps them in a PostgreSQL shared by several hubs.
 * Both answer reads at once (the broker's credential check and the rules ask
 * on their hot paths) and writes as promises.
 */

export interface DeviceRecord {
  readonly id: string
  readonly group: string | null
  readonly createdAt: number
}

export interface ObserverRecord {
  readonly name: string
  readonly createdAt: number
}

const GROUP_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/

export interface Registry {
  /** Registers a device and makes its token (returned once). DEVICE_EXISTS, INVALID_DEVICE_ID, INVALID_NAME. */
  addDevice(id: string, group: string | null, now: number): Promise<{ device: DeviceRecord; token: string }>
  getDevice(id: string): DeviceRecord | undefined
  /** A registered device's group (null: none), or undefined when it is not registered. */
  groupOf(id: string): string | null | undefined
  /** The device, or DEVICE_NOT_FOUND. */
  requireDevice(id: string): DeviceRecord
  listDevices(): DeviceRecord[]
  /** Changes when a device is added or removed: readers of the list can keep it until then. */
  devicesVersion(): number
  countDevices(): number
  /** Replaces the device's token with `token` (a new one by default); returns it. */
  rotateDeviceToken(id: string, token?: string): Promise<string>
  removeDevice(id: string): Promise<void>
  addObserver(name: string, now: number): Promise<{ observer: ObserverRecord; token: string }>
  listObservers(): ObserverRecord[]
  removeObserver(name: string): Promise<void>
  /**
   * The broker's credential check. Unknown user and wrong token get the same
   * answer so a scan cannot tell which device ids exist.
   */
  checkCredentials(username: string, password: Buffer): AuthResult
}

/** Throws the registry's error for an id or group it would refuse. */
export function checkNewDevice(id: string, group: string | null): void {
  if (!isDeviceId(id)) throw new RollcallError('INVALID_DEVICE_ID', `invalid device id ${JSON.stringify(id)}: ${DEVICE_ID_RULE}`)
  if (group !== null && !GROUP_RE.test(group)) {
    throw new RollcallError('INVALID_NAME', `invalid group "${group}": 1 to 64 characters of lowercase letters, digits, "-" and "_"`)
  }
}

export function checkNewObserver(name: string): void {
  if (!isDeviceId(name)) throw new RollcallError('INVALID_NAME', `invalid observer name ${JSON.stringify(name)}: ${DEVICE_ID_RULE}`)
}

interface DeviceRow { id: string; grp: string | null; token_hash: Buffer; created_at: number }
interface ObserverRow { name: string; token_hash: Buffer; created_at: number }

export function createRegistry(db: Db): Registry {
  const stmts = {
    insertDevice: db.prepare<[string, string | null, Buffer, number]>('INSERT INTO devices (id, grp, token_hash, created_at) VALUES (?, ?, ?, ?)'),
    getDevice: db.prepare<[string], DeviceRow>('SELECT * FROM devices WHERE id = ?'),
    // Without the token hashes: lists are read often (the API, the live feed).
    listDevices: db.prepare<[], Omit<DeviceRow, 'token_hash'>>('SELECT id, grp, created_at FROM devices ORDER BY id'),
    countDevices: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM devices'),
    deleteDevice: db.prepare<[string]>('DELETE FROM devices WHERE id = ?'),
    setDeviceToken: db.prepare<[Buffer, string]>('UPDATE devices SET token_hash = ? WHERE id = ?'),
    insertObserver: db.prepare<[string, Buffer, number]>('INSERT INTO observers (name, token_hash, created_at) VALUES (?, ?, ?)'),
    getObserver: db.prepare<[string], ObserverRow>('SELECT * FROM observers WHERE name = ?'),
    listObservers: db.prepare<[], ObserverRow>('SELECT * FROM observers ORDER BY name'),
    deleteObserver: db.prepare<[string]>('DELETE FROM observers WHERE name = ?'),
  }

  /** Moves when a device is added or removed: readers of the list can keep it until then. */
  let version = 0
  const toDevice = (r: Omit<DeviceRow, 'token_hash'>): DeviceRecord => ({ id: r.id, group: r.grp, createdAt: r.created_at })

  function addDevice(id: string, group: string | null, now: number): { device: DeviceRecord; token: string } {
    checkNewDevice(id, group)
    const token = generateToken()
    try {
      stmts.insertDevice.run(id, group, hashToken(token), now)
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new RollcallError('DEVICE_EXISTS', `device "${id}" already exists; remove it first or rotate its token`)
      }
      throw err
    }
    version++
    return { device: { id, group, createdAt: now }, token }
  }

  function requireDevice(id: string): DeviceRecord {
    const row = stmts.getDevice.get(id)
    if (!row) throw new RollcallError('DEVICE_NOT_FOUND', `no device "${id}"`)
    return toDevice(row)
  }

  /** Replaces the device's token with `token` (a new one by default); returns it. */
  function rotateDeviceToken(id: string, token = generateToken()): string {
    requireDevice(id)
    stmts.setDeviceToken.run(hashToken(token), id)
    return token
  }

  function removeDevice(id: string): void {
    if (stmts.deleteDevice.run(id).changes === 0) throw new RollcallError('DEVICE_NOT_FOUND', `no device "${id}"`)
    groups.delete(id)
    version++
  }

  // A registered device's group, read on the hot path (the rules, per batch): kept in memory once
  // read. A device's group is set when it is added and never changes; removal drops the entry.
  const groups = new Map<string, string | null>()
  function groupOf(id: string): string | null | undefined {
    const known = groups.get(id)
    if (known !== undefined || groups.has(id)) return known
    const r = stmts.getDevice.get(id)
    if (!r) return undefined
    groups.set(id, r.grp)
    return r.grp
  }

  function addObserver(name: string, now: number): { observer: ObserverRecord; token: string } {
    checkNewObserver(name)
    const token = generateToken()
    try {
      stmts.insertObserver.run(name, hashToken(token), now)
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new RollcallError('OBSERVER_EXISTS', `observer "${name}" already exists`)
      }
      throw err
    }
    return { observer: { name, createdAt: now }, token }
  }

  function removeObserver(name: string): void {
    if (stmts.deleteObserver.run(name).changes === 0) throw new RollcallError('OBSERVER_NOT_FOUND', `no observer "${name}"`)
  }

  function checkCredentials(username: string, password: Buffer): AuthResult {
    if (username.startsWith(OBSERVER_USER_PREFIX)) {
      const name = username.slice(OBSERVER_USER_PREFIX.length)
      const row = stmts.getObserver.get(name)
      if (row && tokenMatches(password, row.token_hash)) return { ok: true, principal: { kind: 'observer', name } }
      return { ok: false, returnCode: 4, reason: 'unknown observer or wrong token' }
    }
    const row = isDeviceId(username) ? stmts.getDevice.get(username) : undefined
    if (row && tokenMatches(password, row.token_hash)) return { ok: true, principal: { kind: 'device', id: row.id } }
    return { ok: false, returnCode: 4, reason: 'unknown device or wrong token' }
  }

  // The interface's writes are promises (PostgreSQL's are); these settle before they return.
  return {
    addDevice: async (id, group, now) => addDevice(id, group, now),
    getDevice: (id: string): DeviceRecord | undefined => { const r = stmts.getDevice.get(id); return r ? toDevice(r) : undefined },
    groupOf,
    requireDevice,
    listDevices: (): DeviceRecord[] => stmts.listDevices.all().map(toDevice),
    devicesVersion: (): number => version,
    countDevices: (): number => stmts.countDevices.get()!.n,
    rotateDeviceToken: async (id, token) => rotateDeviceToken(id, token),
    removeDevice: async (id) => { removeDevice(id) },
    addObserver: async (name, now) => addObserver(name, now),
    listObservers: (): ObserverRecord[] => stmts.listObservers.all().map((r) => ({ name: r.name, createdAt: r.created_at })),
    removeObserver: async (name) => { removeObserver(name) },
    checkCredentials,
  }
}
