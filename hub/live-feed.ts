import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { Jobs } from './jobs.js'
import type { JobView } from './job-store.js'
import type { PresenceStore, PresenceView } from './presence-store.js'
import type { DeviceRecord, Registry } from './registry.js'
import type { SampleRow, TelemetryStore } from './telemetry-store.js'

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
 * the feed holds no history, a view that reconnects reads the range again.
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

/** Parses `fleet,jobs,device:ID`; throws a message that says what to fix. */
export function parseTopics(text: string, isDeviceId: (id: string) => boolean): LiveTopics {
  let fleet = false
  let jobs = false
  const devices: string[] = []
  for (const t of text.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    if (t === 'fleet') fleet = true
    else if (t === 'jobs') jobs = true
    else if (t.startsWith('device:') && isDeviceId(t.slice(7))) devices.push(t.slice(7))
    else throw new Error(`unknown topic ${JSON.stringify(t)}: topics are fleet, jobs and device:ID, comma-separated`)
  }
  if (!fleet && !jobs && devices.length === 0) throw new Error('no topic: ask for fleet, jobs or device:ID (comma-separated)')
  if (devices.length > MAX_WATCHED_DEVICES) throw new Error(`at most ${MAX_WATCHED_DEVICES} device topics per stream`)
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
}

export function createLiveFeed(options: LiveFeedOptions, deps: LiveFeedDeps) {
  const subscribers = new Set<Subscriber>()
  let timer: NodeJS.Timeout | undefined
  let fleet = new Map<string, FleetRow>()
  let jobsJson = ''

  function readFleet(): FleetRow[] {
    return deps.registry.listDevices().map((d) => fleetRow(d, deps.presence.get(d.id)))
  }

  function readJobs(): JobView[] {
    return deps.jobs.list({ limit: options.jobsShown })
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
    const now = deps.clock.now()
    const wantsFleet = [...subscribers].some((s) => s.topics.fleet || s.topics.devices.length > 0)
    if (wantsFleet) {
      const d = diffFleet(fleet, readFleet(), options.lastSeenStepMs)
      fleet = d.next
      if (d.changed.length > 0 || d.removed.length > 0) {
        for (const s of [...subscribers]) {
          if (s.topics.fleet) {
            deliver(s, 'devices', { now, changed: d.changed, removed: d.removed })
          } else if (s.topics.devices.length > 0) {
            const mine = d.changed.filter((r) => s.topics.devices.includes(r.id))
            const gone = d.removed.filter((id) => s.topics.devices.includes(id))
            if (mine.length > 0 || gone.length > 0) deliver(s, 'devices', { now, changed: mine, removed: gone })
          }
        }
      }
    }
    if ([...subscribers].some((s) => s.topics.jobs)) {
      const jobs = readJobs()
      const json = JSON.stringify(jobs)
      if (json !== jobsJson) {
        jobsJson = json
        for (const s of [...subscribers]) if (s.topics.jobs) deliver(s, 'jobs', { now, jobs })
      }
    }
    // A heartbeat keeps idle streams from being closed by proxies, and tells the client the hub's clock.
    for (const s of [...subscribers]) deliver(s, 'tick', { now })
  }

  return {
    /**
     * Starts a subscription: the snapshot of each topic at once, then
     * changes every tick. `end` is called when the feed drops the
     * subscriber (too slow, or the hub stopping). Returns the unsubscribe.
     */
    subscribe(topics: LiveTopics, send: LiveSend, end: () => void): () => void {
      const s: Subscriber = { topics, send, end, unwatch: [] }
      subscribers.add(s)
      const now = deps.clock.now()
      if (topics.fleet || topics.devices.length > 0) {
        // The snapshot is read now; the shared `fleet` map stays as last broadcast,
        // so the next diff may repeat a change this snapshot already holds (harmless).
        const rows = readFleet()
        const shown = topics.fleet ? rows : rows.filter((r) => topics.devices.includes(r.id))
        deliver(s, 'fleet', { now, devices: shown })
        if (fleet.size === 0) fleet = new Map(rows.map((r) => [r.id, r]))
      }
      if (topics.jobs) {
        const jobs = readJobs()
        deliver(s, 'jobs', { now, jobs })
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
    /** Subscribers now (for /api/stats and tests). */
    get subscribers(): number { return subscribers.size },
    /** Ends every stream; the hub calls it on stop. */
    close(): void {
      for (const s of [...subscribers]) drop(s)
    },
  }
}

export type LiveFeed = ReturnType<typeof createLiveFeed>
