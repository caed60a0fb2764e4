import type pg from 'pg'
import type { Logger } from '../../common/logger.js'
import { inTransaction, isRetryable } from '../storage/postgres/pool.js'
import { isHubCaused, type PresenceChange } from './machine.js'
import type { HistoryEntry, PresenceRecorder, PresenceRow } from './store.js'

/**
 * Presence on a PostgreSQL shared by several hubs (issue #18; store.ts says
 * what presence is). On an external broker every hub subscribes to the
 * retained births and deaths, so every hub sees every change and keeps the
 * whole fleet's presence in memory, as a hub alone does. What must not
 * happen is each of them writing the change into the history. A device goes
 * online once per epoch of its ledger (each connection's birth has a new
 * one) and offline once after it, so (device, store, epoch, status) names a
 * change, whatever reason a hub gives it (the hub that gave the device a new
 * token says `token-rotated`, the others `death`): the history's unique
 * index on it lets the first hub to commit a change record it, and the
 * others find it there and skip it, whatever order they commit in.
 *
 * What one hub caused by itself (its own restart, its broker closing) is
 * not the device's presence and is kept out of the shared record: the other
 * hubs still see the device. The state row moves only forward: a hub that
 * lags, or commits last with an older state, does not take it back (a newer
 * epoch or another ledger wins; within an epoch, offline wins over online).
 *
 * Writes are queued and written in groups every `flushDelayMs`, one
 * transaction each. A group the database refuses is kept (up to
 * `maxQueued` records; past that the oldest go, and are counted) and tried
 * again a second later: the in-memory state stays the truth meanwhile.
 * Last-seen times are written outside the group's transaction, each the
 * later of the stored and the new one, and are best effort: one that fails
 * is written with the next.
 */

export interface PostgresPresenceOptions {
  readonly flushDelayMs: number
  readonly maxQueued: number
}

interface Queued { readonly row: PresenceRow; readonly change: PresenceChange | undefined }

const historyCols = 'ts, status, reason, epoch'

export async function createPostgresPresenceRecorder(pool: pg.Pool, opts: PostgresPresenceOptions, logger: Logger) {
  const rows = (await pool.query<PresenceRow>('SELECT * FROM presence')).rows
  let queue: Queued[] = []
  let touches = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined
  let writing: Promise<void> | undefined
  let backoff = false
  const stats = { groups: 0, failedGroups: 0, changesRecorded: 0, changesNotNew: 0, dropped: 0 }

  function schedule(): void {
    if (timer || writing) return
    timer = setTimeout(() => { timer = undefined; void write() }, backoff ? Math.max(1000, opts.flushDelayMs) : opts.flushDelayMs)
  }

  async function writeGroup(group: readonly Queued[]): Promise<void> {
    const changes: Array<{ row: PresenceRow; change: PresenceChange }> = []
    const last = new Map<string, PresenceRow>()
    for (const { row, change } of group) {
      if (isHubCaused(row.reason)) continue
      last.set(row.device_id, row)
      if (change) changes.push({ row, change })
    }
    // In id order (stable: a device's changes keep theirs), so two hubs writing the same devices
    // take their index entries and rows in the same order and cannot deadlock.
    const byId = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0)
    changes.sort((x, y) => byId(x.row.device_id, y.row.device_id))
    const h = {
      id: changes.map((c) => c.row.device_id), ts: changes.map((c) => c.change.at), status: changes.map((c) => c.change.status),
      reason: changes.map((c) => c.change.reason), epoch: changes.map((c) => c.change.epoch), store: changes.map((c) => c.row.store_id),
    }
    const r = [...last.values()].sort((x, y) => byId(x.device_id, y.device_id))
    if (r.length === 0) return
    await inTransaction(pool, async (c) => {
      // Registered devices only; a change another hub recorded already is found there (the unique index) and skipped.
      const recorded = h.id.length === 0 ? 0 : (await c.query(`INSERT INTO presence_history (device_id, ${historyCols}, store_id)
        SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::text[]) AS u(device_id, ts, status, reason, epoch, store_id)
        WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = u.device_id)
        ON CONFLICT DO NOTHING`, [h.id, h.ts, h.status, h.reason, h.epoch, h.store])).rowCount ?? 0
      await c.query(`INSERT INTO presence (device_id, status, reason, since, epoch, last_seen, agent_version, boot_id, store_id, capabilities, units)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
          AS u(device_id, status, reason, since, epoch, last_seen, agent_version, boot_id, store_id, capabilities, units)
        WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = u.device_id)
        ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, since = excluded.since, epoch = excluded.epoch,
          last_seen = GREATEST(presence.last_seen, excluded.last_seen), agent_version = excluded.agent_version, boot_id = excluded.boot_id,
          store_id = excluded.store_id, capabilities = excluded.capabilities, units = excluded.units
        WHERE presence.epoch IS NULL OR excluded.epoch IS NULL OR excluded.store_id IS DISTINCT FROM presence.store_id
          OR excluded.epoch > presence.epoch
          OR (excluded.epoch = presence.epoch AND NOT (presence.status = 'offline' AND excluded.status = 'online'))`, [
        r.map((x) => x.device_id), r.map((x) => x.status), r.map((x) => x.reason), r.map((x) => x.since), r.map((x) => x.epoch),
        r.map((x) => x.last_seen), r.map((x) => x.agent_version), r.map((x) => x.boot_id), r.map((x) => x.store_id),
        r.map((x) => x.capabilities), r.map((x) => x.units),
      ])
      stats.changesRecorded += recorded
      stats.changesNotNew += h.id.length - recorded
    })
  }

  async function writeTouches(batch: Map<string, number>): Promise<void> {
    const ids = [...batch.keys()].sort()
    await pool.query(`UPDATE presence p SET last_seen = GREATEST(p.last_seen, v.at)
      FROM unnest($1::text[], $2::int8[]) AS v(id, at) WHERE p.device_id = v.id`, [ids, ids.map((id) => batch.get(id)!)])
  }

  async function write(): Promise<void> {
    if (writing || (queue.length === 0 && touches.size === 0)) return
    const group = queue
    const touched = touches
    queue = []
    touches = new Map()
    writing = (async () => {
      if (group.length > 0) {
        try {
          // A deadlock or serialization failure is tried again at once; anything else waits a second.
          for (let attempt = 1; ; attempt++) {
            try {
              await writeGroup(group)
              break
            } catch (err) {
              if (!isRetryable(err) || attempt >= 3) throw err
            }
          }
          stats.groups++
          backoff = false
        } catch (err) {
          stats.failedGroups++
          backoff = true
          const all = [...group, ...queue]
          stats.dropped += Math.max(0, all.length - opts.maxQueued)
          queue = all.slice(Math.max(0, all.length - opts.maxQueued))
          logger.warn({ err: (err as Error).message, records: group.length }, 'presence not written: kept to try again')
        }
      }
      if (touched.size > 0) {
        await writeTouches(touched).catch((err: unknown) => {
          for (const [id, at] of touched) if ((touches.get(id) ?? 0) < at) touches.set(id, at)
          logger.debug({ err: (err as Error).message }, 'last-seen times not written: kept for the next group')
        })
      }
    })()
    await writing
    writing = undefined
    if (queue.length > 0 || touches.size > 0) schedule()
  }

  /** Writes what is queued now; a group already being written (by another caller) is waited for, before and after. */
  async function flush(): Promise<void> {
    if (timer) { clearTimeout(timer); timer = undefined }
    await settled()
    await write()
    await settled()
  }

  async function settled(): Promise<void> {
    for (let w = writing; w !== undefined; w = writing) await w
  }

  const recorder: PresenceRecorder = {
    reacts: false,
    record(row, change, react) {
      if (react) throw new Error('rules do not run on a hub on PostgreSQL yet')
      queue.push({ row, change })
      if (queue.length > opts.maxQueued) {
        queue.shift()
        stats.dropped++
      }
      schedule()
    },
    touch(batch) {
      for (const [id, at] of batch) if ((touches.get(id) ?? 0) < at) touches.set(id, at)
      schedule()
    },
    // By time, not by id: several hubs insert, and one group's rows need not get their ids in order.
    async history(deviceId, sinceMs, limit): Promise<HistoryEntry[]> {
      // Read your writes, as on SQLite.
      await flush()
      return (await pool.query<HistoryEntry>(`SELECT ${historyCols} FROM presence_history WHERE device_id = $1 AND ts >= $2 ORDER BY ts DESC, id DESC LIMIT $3`,
        [deviceId, sinceMs, limit])).rows
    },
    async historyBetween(deviceId, sinceMs, untilMs, limit): Promise<HistoryEntry[]> {
      await flush()
      return (await pool.query<HistoryEntry>(`SELECT ${historyCols} FROM presence_history WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts, id LIMIT $4`,
        [deviceId, sinceMs, untilMs, limit])).rows
    },
  }

  return {
    rows,
    recorder,
    flush,
    stats: () => ({ ...stats, queued: queue.length }),
    async close(): Promise<void> {
      await flush()
      if (timer) { clearTimeout(timer); timer = undefined }
    },
  }
}
