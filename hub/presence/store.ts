import { EventEmitter } from 'node:events'
import type { Db } from '../../common/sqlite.js'
import type { Logger } from '../../common/logger.js'
import type { Birth } from '../../protocol/messages.js'
import type { AfterCommit, Writer } from '../storage/group-commit.js'
import { initialPresence, isHubCaused, isReachable, nextPresence, type PresenceChange, type PresenceEvent, type PresenceState, type PresenceStatus } from './machine.js'

/**
 * The only writer of presence state. The in-memory map is the truth for
 * "reachable" (commands read it on their hot path); the tables are its
 * durable record, kept by a recorder: on the hub's SQLite file through the
 * group-commit writer, so a reconnect storm of thousands of devices costs a
 * few fsyncs, not thousands (below); on a PostgreSQL shared by several hubs
 * in postgres.ts. The state machine and the views are the same for both.
 */

export interface DeviceInfo {
  readonly agentVersion: string | null
  readonly bootId: string | null
  readonly storeId: string | null
  readonly capabilities: readonly string[]
  /** Sensor name → unit, as the last birth declared them (empty: none declared, e.g. an older agent). */
  readonly units: Readonly<Record<string, string>>
}

export interface PresenceView {
  readonly deviceId: string
  readonly status: PresenceState['status']
  readonly reason: string
  readonly since: number
  readonly epoch: number | null
  readonly reachable: boolean
  readonly lastSeen: number | null
  /**
   * Outbox rows the device reported not yet acknowledged, in its last batch
   * that carried the figure (null: it never has, e.g. an older agent). Live:
   * kept in memory only, and kept as last reported across births and
   * disconnects (an offline device's outbox is still there).
   */
  readonly backlog: number | null
  /**
   * The device's wall clock minus the hub's, in ms, from its last birth that
   * carried its clock (null: none has, e.g. an older agent). Includes the
   * birth's one-way delay, so a few ms are noise. In memory only, like backlog.
   */
  readonly clockSkewMs: number | null
  readonly info: DeviceInfo
}

export interface HistoryEntry { readonly ts: number; readonly status: string; readonly reason: string; readonly epoch: number | null }

interface Entry { state: PresenceState; lastSeen: number | null; backlog: number | null; clockSkewMs: number | null; info: DeviceInfo }

/** A device whose |skew| exceeds this is counted as skewed in /metrics (docs/metrics.md). */
export const SKEWED_MS = 1000

/** A device's presence as the tables keep it. */
export interface PresenceRow {
  device_id: string; status: 'online' | 'offline'; reason: string; since: number; epoch: number | null; last_seen: number | null
  agent_version: string | null; boot_id: string | null; store_id: string | null; capabilities: string | null; units: string | null
}

/** Keeps presence durable: the state of each device, the history of its changes, its last-seen time. */
export interface PresenceRecorder {
  /**
   * Records a device's state as `row`, and `change` in its history when
   * there is one. `react` (the rules) runs inside the same write when given,
   * and what it returns after the commit.
   */
  record(row: PresenceRow, change: PresenceChange | undefined, react: (() => AfterCommit | void) | undefined): void
  /** Last-seen times, newest per device. */
  touch(batch: ReadonlyArray<readonly [string, number]>): void
  /** A device's changes since `sinceMs`, newest first, including those recorded a moment ago. */
  history(deviceId: string, sinceMs: number, limit: number): Promise<HistoryEntry[]>
  /** The changes from `sinceMs` to before `untilMs`, oldest first (a rule's dry run). */
  historyBetween(deviceId: string, sinceMs: number, untilMs: number, limit: number): Promise<HistoryEntry[]>
  /** Whether `react` may be given (the rules keep their state where the recorder writes). */
  readonly reacts: boolean
}


const NO_INFO: DeviceInfo = { agentVersion: null, bootId: null, storeId: null, capabilities: [], units: {} }

export interface PresenceEvents {
  change: [deviceId: string, change: PresenceChange]
}

/** What reacts to a change inside the write that records it (the rules); what it returns runs after the commit. */
export type PresenceReaction = (deviceId: string, change: {
  readonly status: PresenceStatus; readonly reason: string; readonly at: number; readonly hubCaused: boolean
  readonly previous: PresenceNowView
}) => AfterCommit | void

/** A status as a reaction sees it; `hubCaused`: the hub's own stop or start put the device there (machine.ts). */
export interface PresenceNowView { readonly status: PresenceStatus; readonly reason: string; readonly since: number; readonly hubCaused: boolean }

/** The recorder on the hub's SQLite file: every write through the group-commit writer. */
export function sqlitePresenceRecorder(db: Db, writer: Writer): { recorder: PresenceRecorder; rows: PresenceRow[] } {

  const stmts = {
    all: db.prepare<[], PresenceRow>('SELECT * FROM presence'),
    upsert: db.prepare<[PresenceRow]>(`
      INSERT INTO presence (device_id, status, reason, since, epoch, last_seen, agent_version, boot_id, store_id, capabilities, units)
      SELECT :device_id, :status, :reason, :since, :epoch, :last_seen, :agent_version, :boot_id, :store_id, :capabilities, :units
      WHERE EXISTS (SELECT 1 FROM devices WHERE id = :device_id)
      ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, since = excluded.since,
        epoch = excluded.epoch, last_seen = excluded.last_seen, agent_version = excluded.agent_version,
        boot_id = excluded.boot_id, store_id = excluded.store_id, capabilities = excluded.capabilities, units = excluded.units`),
    // A device that is not registered (any more) keeps no history, as it keeps no state.
    history: db.prepare<[string, number, string, string, number | null, string]>(
      'INSERT INTO presence_history (device_id, ts, status, reason, epoch) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?)'),
    touch: db.prepare<[number, string]>('UPDATE presence SET last_seen = ? WHERE device_id = ?'),
    readHistory: db.prepare<[string, number, number], { ts: number; status: string; reason: string; epoch: number | null }>(
      'SELECT ts, status, reason, epoch FROM presence_history WHERE device_id = ? AND ts >= ? ORDER BY id DESC LIMIT ?'),
    readBetween: db.prepare<[string, number, number, number], { ts: number; status: string; reason: string; epoch: number | null }>(
      'SELECT ts, status, reason, epoch FROM presence_history WHERE device_id = ? AND ts >= ? AND ts < ? ORDER BY ts, id LIMIT ?'),
  }

  const recorder: PresenceRecorder = {
    reacts: true,
    record(row, change, react) {
      writer.enqueue(() => {
        stmts.upsert.run(row)
        if (change) stmts.history.run(row.device_id, change.at, change.status, change.reason, change.epoch, row.device_id)
        // Last in the write: the rules' firings commit with the change, or not at all (hub/rules/rules.ts).
        return react?.()
      })
    },
    touch(batch) {
      writer.enqueue(() => {
        for (const [id, at] of batch) stmts.touch.run(at, id)
      })
    },
    async history(deviceId, sinceMs, limit) {
      // Read your writes: a change decided in memory a moment ago is in the history too.
      writer.flush()
      return stmts.readHistory.all(deviceId, sinceMs, limit)
    },
    async historyBetween(deviceId, sinceMs, untilMs, limit) {
      writer.flush()
      return stmts.readBetween.all(deviceId, sinceMs, untilMs, limit)
    },
  }
  return { recorder, rows: stmts.all.all() }
}

export function createPresenceStore(db: Db, writer: Writer, logger: Logger) {
  const { recorder, rows } = sqlitePresenceRecorder(db, writer)
  return createPresence(recorder, rows, logger)
}

/** Presence over a recorder, started from the rows it keeps. */
export function createPresence(recorder: PresenceRecorder, rows: readonly PresenceRow[], logger: Logger) {
  const entries = new Map<string, Entry>()
  const emitter = new EventEmitter<PresenceEvents>()
  const touched = new Set<string>()
  let reaction: PresenceReaction | undefined

  for (const r of rows) {
    entries.set(r.device_id, {
      state: { status: r.status, reason: r.reason, since: r.since, connId: null, epoch: r.epoch, storeId: r.store_id, birthConnId: null },
      lastSeen: r.last_seen,
      backlog: null,
      clockSkewMs: null,
      info: {
        agentVersion: r.agent_version, bootId: r.boot_id, storeId: r.store_id,
        capabilities: r.capabilities ? JSON.parse(r.capabilities) as string[] : [],
        units: r.units ? JSON.parse(r.units) as Record<string, string> : {},
      },
    })
  }

  function entryOf(deviceId: string, at: number): Entry {
    let e = entries.get(deviceId)
    if (!e) {
      e = { state: initialPresence(at), lastSeen: null, backlog: null, clockSkewMs: null, info: NO_INFO }
      entries.set(deviceId, e)
    }
    return e
  }

  function persist(deviceId: string, e: Entry, change: PresenceChange | undefined, previous: PresenceState): void {
    const s = e.state
    const info = e.info
    const lastSeen = e.lastSeen
    const react = change ? reaction : undefined
    recorder.record({
      device_id: deviceId, status: s.status, reason: s.reason, since: s.since, epoch: s.epoch, last_seen: lastSeen,
      agent_version: info.agentVersion, boot_id: info.bootId, store_id: info.storeId, capabilities: JSON.stringify(info.capabilities),
      units: Object.keys(info.units).length > 0 ? JSON.stringify(info.units) : null,
    }, change, react && change ? () => react(deviceId, {
      status: change.status, reason: change.reason, at: change.at, hubCaused: isHubCaused(change.reason),
      previous: { status: previous.status, reason: previous.reason, since: previous.since, hubCaused: isHubCaused(previous.reason) },
    }) : undefined)
  }

  function apply(deviceId: string, event: PresenceEvent, birth?: Birth): PresenceState {
    const e = entryOf(deviceId, event.at)
    const previous = e.state
    const t = nextPresence(e.state, event)
    if (t.ignored) {
      logger.debug({ deviceId, event: event.type, why: t.ignored }, 'presence event ignored')
      return e.state
    }
    e.state = t.state
    if (event.type !== 'hubStart' && event.type !== 'disconnected') e.lastSeen = event.at
    if (birth && event.type === 'birth') {
      e.info = { agentVersion: birth.agentVersion, bootId: birth.bootId, storeId: birth.storeId, capabilities: birth.capabilities, units: birth.units ?? {} }
      // A birth carries the device's clock only once the hub said it takes it (the agent then sends the birth again).
      if (birth.clock !== undefined) e.clockSkewMs = birth.clock - event.at
    }
    persist(deviceId, e, t.change, previous)
    if (t.change) {
      logger.info({ deviceId, status: t.change.status, reason: t.change.reason, epoch: t.change.epoch }, 'presence changed')
      emitter.emit('change', deviceId, t.change)
    }
    return e.state
  }

  function view(deviceId: string, e: Entry): PresenceView {
    return {
      deviceId, status: e.state.status, reason: e.state.reason, since: e.state.since, epoch: e.state.epoch,
      reachable: isReachable(e.state), lastSeen: e.lastSeen, backlog: e.backlog, clockSkewMs: e.clockSkewMs, info: e.info,
    }
  }

  return {
    apply,
    reactWith(r: PresenceReaction): void {
      // The rules keep their state in the hub's SQLite file and react inside its write; on PostgreSQL they need a store there first.
      if (!recorder.reacts) throw new Error('rules do not run on a hub on PostgreSQL yet')
      reaction = r
    },
    /** Every device's status now: what the presence rules start from. */
    *statuses(): Iterable<readonly [string, PresenceNowView]> {
      for (const [id, e] of entries) yield [id, { status: e.state.status, reason: e.state.reason, since: e.state.since, hubCaused: isHubCaused(e.state.reason) }]
    },
    /** Marks every device offline: nobody is connected to a hub that just started. */
    hubStarted(at: number): void {
      for (const id of [...entries.keys()]) apply(id, { type: 'hubStart', at })
    },
    /**
     * Telemetry arrived: cheap in-memory update, persisted by `flushLastSeen`.
     * `backlog` is the batch's outbox figure, when it carried one.
     */
    touch(deviceId: string, at: number, backlog?: number): void {
      const e = entries.get(deviceId)
      if (!e) return
      e.lastSeen = at
      if (backlog !== undefined) e.backlog = backlog
      touched.add(deviceId)
    },
    flushLastSeen(): void {
      if (touched.size === 0) return
      const batch: Array<readonly [string, number]> = []
      for (const id of touched) {
        const at = entries.get(id)?.lastSeen
        if (at != null) batch.push([id, at])
      }
      touched.clear()
      recorder.touch(batch)
    },
    get(deviceId: string): PresenceView | undefined {
      const e = entries.get(deviceId)
      return e ? view(deviceId, e) : undefined
    },
    /** Whether the device's last birth advertised this capability (cheap: no view is made). */
    hasCapability: (deviceId: string, capability: string): boolean => entries.get(deviceId)?.info.capabilities.includes(capability) ?? false,
    isReachable: (deviceId: string): boolean => {
      const e = entries.get(deviceId)
      return e !== undefined && isReachable(e.state)
    },
    counts(): { online: number; offline: number } {
      let online = 0
      for (const e of entries.values()) if (e.state.status === 'online') online++
      return { online, offline: entries.size - online }
    },
    /** Backlogs as last reported: devices whose figure is above 0, their sum, the largest. */
    backlogTotals(): { devices: number; rows: number; max: number } {
      let devices = 0
      let rows = 0
      let max = 0
      for (const e of entries.values()) {
        if (e.backlog === null || e.backlog === 0) continue
        devices++
        rows += e.backlog
        if (e.backlog > max) max = e.backlog
      }
      return { devices, rows, max }
    },
    /** Clock skews as last reported: devices whose |skew| exceeds SKEWED_MS, devices that reported one, the largest |skew| in ms. */
    skewTotals(): { skewed: number; reported: number; maxAbsMs: number } {
      let skewed = 0
      let reported = 0
      let maxAbsMs = 0
      for (const e of entries.values()) {
        if (e.clockSkewMs === null) continue
        reported++
        const abs = Math.abs(e.clockSkewMs)
        if (abs > SKEWED_MS) skewed++
        if (abs > maxAbsMs) maxAbsMs = abs
      }
      return { skewed, reported, maxAbsMs }
    },
    history: (deviceId: string, sinceMs: number, limit: number): Promise<HistoryEntry[]> => recorder.history(deviceId, sinceMs, limit),
    /** The changes from `sinceMs` to before `untilMs`, oldest first (a rule's dry run). */
    historyBetween: (deviceId: string, sinceMs: number, untilMs: number, limit: number): Promise<HistoryEntry[]> => recorder.historyBetween(deviceId, sinceMs, untilMs, limit),
    forget(deviceId: string): void {
      entries.delete(deviceId)
      touched.delete(deviceId)
    },
    on: emitter.on.bind(emitter),
    off: emitter.off.bind(emitter),
  }
}

export type PresenceStore = ReturnType<typeof createPresence>
