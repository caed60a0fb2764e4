import type { Clock, ClockTimer } from '../../common/clock.js'
import type { AfterCommit, Writer } from '../storage/group-commit.js'
import { IDLE, presenceThreshold, sameState, step, type ConditionState, type PresenceCondition } from './machine.js'
import type { Engine, Live, Pass } from './rules.js'

/**
 * Rules on presence (docs/rules.md, "A presence change"): a device went
 * offline, came back, or has been offline (or online) for longer than
 * `forMs`. A presence condition runs on the telemetry condition's machine
 * (machine.ts), as the value 1 while the device's status is the one watched
 * and 0 otherwise, so it fires once per transition.
 *
 * Three ways a state moves:
 *
 *   a change     presence/store.ts records it and calls onChange inside
 *                that write: the firing commits with the change
 *   the tick     every tickMs, the pending states whose forMs has passed
 *                fire, in one write (a device that came back in time was
 *                set idle by its change and is not among them)
 *   reconcile    at start, and when a rule is added or enabled: the states
 *                are put in line with presence as it is now, firing nothing
 *                for changes no rule saw
 *
 * The hub's own stop and start are not a device going away (`hubCaused`,
 * decided by presence/machine.ts): they move the state but never fire, and
 * neither does the change that ends them. A device offline because the hub
 * stopped counts towards forMs from the hub's start: the time the hub was
 * down is not the device's, and a fleet reconnecting after a long outage
 * must not fire all at once.
 */

/** A device's presence as the presence store has it now; `hubCaused`: the hub's own stop or start put it there. */
export interface PresenceNow { readonly status: 'offline' | 'online'; readonly reason: string; readonly since: number; readonly hubCaused: boolean }

/** A change as presence/store.ts just wrote it, with the status it left. */
export interface PresenceChangeSeen {
  readonly status: 'offline' | 'online'
  readonly reason: string
  readonly at: number
  readonly hubCaused: boolean
  readonly previous: PresenceNow
}

export interface PresenceRulesDeps {
  readonly clock: Clock
  readonly writer: Writer
  readonly engine: Engine
  /** Every device's presence now. */
  readonly presence: () => Iterable<readonly [string, PresenceNow]>
  /** The enabled rules with a presence condition. */
  readonly rules: () => readonly Live[]
  readonly tickMs: number
}

const conditionOf = (live: Live): PresenceCondition | undefined => ('presence' in live.rule.when ? live.rule.when.presence : undefined)

export function createPresenceRules(deps: PresenceRulesDeps) {
  const { clock, writer, engine } = deps
  let timer: ClockTimer | undefined
  let tickQueued = false
  /** When this hub started watching: a device the hub's stop took offline counts from here. */
  let startedAt = -Infinity
  // A whole group that failed took the tick's write with it: the next tick tries again.
  writer.onCommitFailed(() => { tickQueued = false })

  /** A change: each presence rule watching the device steps its machine. */
  function onChange(deviceId: string, change: PresenceChangeSeen): AfterCommit | void {
    const rules = deps.rules()
    if (rules.length === 0) return
    const now = clock.now()
    return engine.evaluateMany([[deviceId, (pass) => {
      engine.forEachWatching(deviceId, rules, (live) => {
        const c = conditionOf(live)
        if (!c) return
        engine.counted()
        const entry = engine.entryOf(pass, live)
        const next = step(presenceThreshold(c), entry.state, change.at, change.status === c.status ? 1 : 0)
        let lastFiredAt = entry.lastFiredAt
        if (next.fired && !change.hubCaused && !change.previous.hubCaused) {
          if (engine.fire(pass, live, entry, { kind: 'presence', ts: change.at, status: change.status, reason: change.reason, since: change.at }, now)) lastFiredAt = now
        }
        if (sameState(next.state, entry.state) && lastFiredAt === entry.lastFiredAt) return
        engine.noteChange(pass, live, { state: next.state, lastFiredAt })
      })
    }]])
  }

  /** One due rule on the pass's device: fires if its state is still pending and has held long enough. */
  function held(pass: Pass, live: Live, now: number): void {
    const c = conditionOf(live)
    const entry = engine.entryOf(pass, live)
    if (!c || entry.state.phase !== 'pending') return
    engine.counted()
    const next = step(presenceThreshold(c), entry.state, now, 1)
    if (!next.fired) return
    const acted = engine.fire(pass, live, entry, { kind: 'presence', ts: now, status: c.status, reason: `${c.status} for ${now - entry.state.since} ms`, since: entry.state.since }, now)
    engine.noteChange(pass, live, { state: next.state, lastFiredAt: acted ? now : entry.lastFiredAt })
  }

  function tick(): void {
    if (tickQueued) return
    const now = clock.now()
    const due = new Map<string, Live[]>()
    for (const live of deps.rules()) {
      const forMs = conditionOf(live)?.forMs
      if (forMs === undefined) continue
      engine.eachState(live.id, (deviceId, e) => {
        if (e.state.phase !== 'pending' || now - e.state.since < forMs) return
        // Only a device the rule still watches: one moved out of its group is not written for at every tick.
        engine.forEachWatching(deviceId, [live], () => {
          const list = due.get(deviceId)
          if (list) list.push(live)
          else due.set(deviceId, [live])
        })
      })
    }
    if (due.size === 0) return
    tickQueued = true
    writer.enqueue(() => {
      tickQueued = false
      const at = clock.now()
      // Each device in a pass of its own, for the rules that still watch it (not removed, not moved out of a group, still enabled).
      return engine.evaluateMany([...due].map(([deviceId, lives]) => [deviceId, (pass: Pass) => {
        engine.forEachWatching(deviceId, lives.filter(engine.isCurrent), (live) => { held(pass, live, at) })
      }]))
    }, due.size, () => { tickQueued = false })
  }

  /**
   * The state `p` calls for, or undefined to keep `entry`'s. A status that
   * holds counts from when it began, but never before the rule began
   * watching, nor, when the hub's stop took the device offline, before this
   * hub started; a pending state moves its start up to that (the device may
   * have come and gone while nobody watched). An active one stays.
   */
  function reconciled(c: PresenceCondition, live: Live, entry: ConditionState, p: PresenceNow, now: number): ConditionState | undefined {
    if (p.status !== c.status) return IDLE
    const from = Math.min(now, Math.max(p.since, live.watchingSince, p.hubCaused ? startedAt : -Infinity))
    if (entry.phase === 'pending') return entry.since < from ? { phase: 'pending', since: from, count: 1 } : undefined
    if (entry.phase === 'active') return undefined
    return c.forMs !== undefined ? { phase: 'pending', since: from, count: 1 } : { phase: 'active', since: from }
  }

  /**
   * Presence is read when the write is queued, not when it runs: a change
   * made in between is queued behind it, and its own evaluation follows.
   */
  function reconcile(): void {
    const rules = deps.rules()
    if (rules.length === 0) return
    const seen = [...deps.presence()]
    writer.enqueue(() => {
      const now = clock.now()
      return engine.evaluateMany(seen.map(([deviceId, p]) => [deviceId, (pass: Pass) => {
        engine.forEachWatching(deviceId, rules.filter(engine.isCurrent), (live) => {
          const c = conditionOf(live)
          if (!c) return
          const entry = engine.entryOf(pass, live)
          const state = reconciled(c, live, entry.state, p, now)
          if (state !== undefined && !sameState(state, entry.state)) engine.noteChange(pass, live, { state, lastFiredAt: entry.lastFiredAt })
        })
      }]))
    }, Math.max(1, Math.ceil(seen.length / 100)))
  }

  return {
    onChange,
    reconcile,
    start(): void {
      startedAt = clock.now()
      reconcile()
      timer = clock.setInterval(tick, deps.tickMs).unref()
    },
    stop(): void {
      clock.clearTimer(timer)
      timer = undefined
    },
  }
}
