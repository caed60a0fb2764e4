import type { Clock } from '../../common/clock.js'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import type { Jobs } from '../jobs/jobs.js'
import type { JobView } from '../jobs/store.js'
import type { PresenceStore, PresenceView } from '../presence/store.js'
import type { DeviceRecord, Registry } from '../fleet/registry.js'
import type { SampleRow, TelemetryStore } from '../telemetry/store.js'

/**
 * The live feed behind the dashboard (issue #6): what changed in the fleet,
 * the jobs and one device's samples, pushed to subscribers instead of polled.
 *
 * One timer for all subscribers, running only while there are any. Each tick
 * reads the fleet once (registry and in-memory presence), diffs it against
 * what was last broadcast and sends only the rows that changed, so 2,000
 * devices sampling every second cost a few rows a tick, not 2,000: a row is
 * re-sent for a change of presence, group, backlog or agent version, and for
 * `lastSeen` only once it moved by `lastSeenStepMs` (the dashboard shows it
 * as "n s ago"). A new subscriber starts from a full snapshot, so it never
 * depends on what others were sent.
 *
 * Samples are pushed after the commit that stored them, duplicates never;
 * the feed holds no history: the dashboard re-reads a device's range when
 * its stream reconnects. The device list is re-read only when a device is
 * added or removed, the job list only when a job or execution changed.
 */

export interface FleetRow {
  readonly id: string
  readonly group: string | null
  readonly status: 'online' | 'offline'
  readonly reason: string
  readonly since: number | null
  readonly lastSeen: number | null
  /** Outbox rows the agent reported still waiting for the hub, as of its last batch. */
  readonly backlog: number | null
  readonly agentVersion: string | null
}

export function fleetRow(d: DeviceRecord, p: PresenceView | undefined): FleetRow {
  return {
    id: d.id, group: d.group, status: p?.status ?? 'offline', reason: p?.reason ?? 'never-connected', since: p?.since ?? null,
    lastSeen: p?.lastSeen ?? null, backlog: p?.backlog ?? null, agentVersion: p?.info.agentVersion ?? null,
  }
}

export interface FleetDiff {
  readonly changed: FleetRow[]
  readonly removed: string[]
  /** What subscribers hold after this diff: the next tick's `prev`. */
  readonly next: Map<string, FleetRow>
}

/** Pure: the rows subscribers must be sent to go from `prev` to `rows`. */
export function diffFleet(prev: ReadonlyMap<string, FleetRow>, rows: readonly FleetRow[], lastSeenStepMs: number): FleetDiff {
  const changed: FleetRow[] = []
  const next = new Map<string, FleetRow>()
  for (const r of rows) {
    const p = prev.get(r.id)
    if (p === undefined || differs(p, r, lastSeenStepMs)) {
      changed.push(r)
      next.set(r.id, r)
    } else {
      next.set(r.id, p)
    }
  }
  const removed: string[] = []
  for (const id of prev.keys()) if (!next.has(id)) removed.push(id)
  return { changed, removed, next }
}

function differs(a: FleetRow, b: FleetRow, lastSeenStepMs: number): boolean {
  if (a.status !== b.status || a.reason !== b.reason || a.since !== b.since || a.group !== b.group
    || a.backlog !== b.backlog || a.agentVersion !== b.agentVersion) return true
  if (a.lastSeen === b.lastSeen) return false
  if (a.lastSeen === null || b.lastSeen === null) return true
  return Math.abs(b.lastSeen - a.lastSeen) >= lastSeenStepMs
}

/** What a subscriber asked for. */
export interface LiveTopics {
  readonly fleet: boolean
  readonly jobs: boolean
  /** Devices whose row changes and stored samples it wants (a device page). */
  readonly devices: readonly string[]
}

export const MAX_WATCHED_DEVICES = 8

/** Parses `fleet,jobs,device:ID`; throws BAD_REQUEST with a message that says what to fix. */
export function parseTopics(text: string, isDeviceId: (id: string) => boolean): LiveTopics {
  const bad = (why: string) => new RollcallError('BAD_REQUEST', `topics=${JSON.stringify(text)}: ${why}`)
  let fleet = false
  let jobs = false
  const devices: string[] = []
  for (const t of text.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    if (t === 'fleet') fleet = true
    else if (t === 'jobs') jobs = true
    else if (t.startsWith('device:') && isDeviceId(t.slice(7))) devices.push(t.slice(7))
    else throw bad(`unknown topic ${JSON.stringify(t)}: topics are fleet, jobs and device:ID, comma-separated`)
  }
  if (!fleet && !jobs && devices.length === 0) throw bad('no topic: ask for fleet, jobs or device:ID (comma-separated)')
  if (devices.length > MAX_WATCHED_DEVICES) throw bad(`at most ${MAX_WATCHED_DEVICES} device topics per stream`)
  return { fleet, jobs, devices: [...new Set(devices)] }
}

/** Sends one event; returns false when the subscriber cannot keep up (it is then dropped). */
export type LiveSend = (event: string, data: unknown) => boolean

export interface LiveFeedOptions {
  readonly tickMs: number
  readonly lastSeenStepMs: number
  /** Jobs shown live: the newest this many. */
  readonly jobsShown: number
}

export interface LiveFeedDeps {
  readonly registry: Registry
  readonly presence: PresenceStore
  readonly telemetry: TelemetryStore
  readonly jobs: Jobs
  readonly clock: Clock
  readonly logger: Logger
}

interface Subscriber {
  readonly topics: LiveTopics
  readonly send: LiveSend
  readonly end: () => void
  readonly unwatch: Array<() => void>
  /** For a device-only stream: the rows it was last sent. */
  watched: Map<string, FleetRow>
}

export function createLiveFeed(options: LiveFeedOptions, deps: LiveFeedDeps) {
  const subscribers = new Set<Subscriber>()
  let timer: NodeJS.Timeout | undefined
  let closed = false
  /** What fleet subscribers were last sent, shared by all of them. */
  let fleet = new Map<string, FleetRow>()
  let jobsVersion = -1
  let jobsJson = ''
  // The device list changes only when a device is added or removed: kept until then.
  let devices: { version: number; list: DeviceRecord[] } | undefined

  function deviceList(): DeviceRecord[] {
    const version = deps.registry.devicesVersion()
    if (devices?.version !== version) devices = { version, list: deps.registry.listDevices() }
    return devices.list
  }

  function readFleet(): FleetRow[] {
    return deviceList().map((d) => fleetRow(d, deps.presence.get(d.id)))
  }

  function readRows(ids: readonly string[]): FleetRow[] {
    const out: FleetRow[] = []
    for (const id of ids) {
      const d = deps.registry.getDevice(id)
      if (d) out.push(fleetRow(d, deps.presence.get(id)))
    }
    return out
  }

  /** The newest jobs, read from the database (a promise: on PostgreSQL a query). */
  function readJobs(): Promise<JobView[]> {
    return deps.jobs.list({ limit: options.jobsShown })
  }

  /** Whether a read of the jobs for the ticks is under way: a slow database gets one at a time. */
  let readingJobs = false
  /** How many times the ticks sent the jobs: a new stream's snapshot read before the latest of them is older, and not sent. */
  let jobsSent = 0

  /** Reads the jobs and sends them to the jobs streams if they changed since they were last sent. */
  async function refreshJobs(now: number): Promise<void> {
    readingJobs = true
    try {
      const jobs = await readJobs()
      const json = JSON.stringify(jobs)
      if (json !== jobsJson) {
        jobsJson = json
        jobsSent++
        for (const s of [...subscribers]) if (s.topics.jobs) deliver(s, 'jobs', { now, jobs })
      }
    } catch (err) {
      // Read again at the next change.
      jobsVersion = -1
      deps.logger.error({ err }, 'live feed could not read the jobs; it tries again at the next tick')
    } finally {
      readingJobs = false
    }
  }

  function drop(s: Subscriber): void {
    if (!subscribers.delete(s)) return
    for (const u of s.unwatch) u()
    s.end()
    if (subscribers.size === 0 && timer) {
      clearInterval(timer)
      timer = undefined
    }
  }

  function deliver(s: Subscriber, event: string, data: unknown): void {
    if (!s.send(event, data)) {
      deps.logger.info({ event }, 'live subscriber cannot keep up; its stream is closed (it reconnects and starts from a snapshot)')
      drop(s)
    }
  }

  function tick(): void {
    // A failure here (the database busy or closing) must not take the hub down: log it, try again next tick.
    try {
      tickInner()
    } catch (err) {
      deps.logger.error({ err }, 'live feed tick failed; it runs again at the next tick')
    }
  }

  function tickInner(): void {
    const now = deps.clock.now()
    const all = [...subscribers]
    if (all.some((s) => s.topics.fleet)) {
      const d = diffFleet(fleet, readFleet(), options.lastSeenStepMs)
      fleet = d.next
      if (d.changed.length > 0 || d.removed.length > 0) {
        for (const s of all) if (s.topics.fleet) deliver(s, 'devices', { now, changed: d.changed, removed: d.removed })
      }
    }
    for (const s of all) {
      if (s.topics.fleet || s.topics.devices.length === 0) continue
      const d = diffFleet(s.watched, readRows(s.topics.devices), options.lastSeenStepMs)
      s.watched = d.next
      if (d.changed.length > 0 || d.removed.length > 0) deliver(s, 'devices', { now, changed: d.changed, removed: d.removed })
    }
    if (all.some((s) => s.topics.jobs) && deps.jobs.version() !== jobsVersion && !readingJobs) {
      jobsVersion = deps.jobs.version()
      void refreshJobs(now)
    }
    // A heartbeat keeps idle streams from being closed by proxies, and tells the client the hub's clock.
    const beat = { now }
    for (const s of all) if (subscribers.has(s)) deliver(s, 'tick', beat)
  }

  return {
    /**
     * Starts a subscription: the snapshot of each topic at once, then
     * changes every tick. `end` is called when the feed drops the
     * subscriber (too slow, or the hub stopping). Returns the unsubscribe.
     */
    subscribe(topics: LiveTopics, send: LiveSend, end: () => void): () => void {
      if (closed) {
        end()
        return () => {}
      }
      const s: Subscriber = { topics, send, end, unwatch: [], watched: new Map() }
      subscribers.add(s)
      const now = deps.clock.now()
      if (topics.fleet) {
        // The snapshot is read now; the shared `fleet` map stays as last broadcast,
        // so the next diff may repeat a change this snapshot already holds (harmless).
        const rows = readFleet()
        deliver(s, 'fleet', { now, devices: rows })
        // The only fleet stream: diffs start from this snapshot, not from what a stream that ended was sent.
        if (![...subscribers].some((o) => o !== s && o.topics.fleet)) fleet = new Map(rows.map((r) => [r.id, r]))
      } else if (topics.devices.length > 0) {
        const rows = readRows(topics.devices)
        s.watched = new Map(rows.map((r) => [r.id, r]))
        deliver(s, 'fleet', { now, devices: rows })
      }
      if (topics.jobs && subscribers.has(s)) {
        // Sent when read: after the fleet's snapshot, before this stream's first tick's changes.
        const sentBefore = jobsSent
        readJobs().then(
          // A tick's newer list may have reached this stream first: the snapshot would take it back.
          (jobs) => { if (subscribers.has(s) && jobsSent === sentBefore) deliver(s, 'jobs', { now, jobs }) },
          (err: unknown) => {
            // Without its snapshot the stream would show no jobs until one changes: it is closed, and the client reconnects.
            deps.logger.error({ err }, 'live feed could not read the jobs for a new stream; the stream is closed')
            drop(s)
          },
        )
      }
      // The snapshot may already have been too much for a stuck client.
      if (!subscribers.has(s)) return () => {}
      for (const id of topics.devices) {
        s.unwatch.push(deps.telemetry.watchSamples(id, (samples: readonly SampleRow[]) => {
          if (subscribers.has(s)) deliver(s, 'samples', { deviceId: id, samples })
        }))
      }
      timer ??= setInterval(tick, options.tickMs)
      timer.unref()
      return () => drop(s)
    },
    /** Runs one tick now (the benchmark; the timer does it every tickMs). */
    tickNow: tick,
    /** Subscribers now (for /api/stats, /metrics and tests). */
    get subscribers(): number { return subscribers.size },
    /** Whether the tick timer runs (tests: it must stop with the last subscriber). */
    get running(): boolean { return timer !== undefined },
    /** Ends every stream and refuses new ones; the hub calls it on stop. */
    close(): void {
      closed = true
      for (const s of [...subscribers]) drop(s)
      if (timer) clearInterval(timer)
      timer = undefined
    },
  }
}

export type LiveFeed = ReturnType<typeof createLiveFeed>
