import { RollcallError } from '../../common/errors.js'
import { admit, MinuteWindow, type Admission } from './limits.js'
import { IDLE, presenceThreshold, step, type ConditionState } from './machine.js'
import type { CheckedRule, Condition } from './spec.js'

/**
 * A dry run of a rule on what one device already stored (`rollcall rule
 * test`, docs/rules.md "Trying a rule before adding it"): the items go
 * through the same pure parts the engine uses (machine.ts's `step` from
 * idle, limits.ts's `admit`), and nothing acts or is written. Pure, so each
 * case is table-tested (test/hub.rule-replay.test.ts).
 *
 * What it can and cannot know, against the engine on the same items:
 *
 *   - Each item is judged as if the hub received it when it was taken (its
 *     ts is the replay's "now"): the hub does not keep when each sample
 *     arrived. A backlog that really arrived late would have been suppressed
 *     as stale; the dry run sees only what the item says: a sample on the
 *     device's unchecked clock (`unsynced`) is stale, as in the engine.
 *   - Cooldown and rate count the firings of this replay, on this device:
 *     the rate limit is per rule across all its devices in the engine.
 *   - No action is carried out, so none fails: the circuit breaker never
 *     pauses the rule here.
 *
 *   - A presence condition replays the device's presence history from
 *     idle; one with forMs fires when the status has held that long before
 *     the next change or the end of the window (`endTs`), as the engine's
 *     tick would.
 *
 *   - A job condition replays the device's executions that ended failed or
 *     timed out for good, at the time each ended.
 *
 * One condition kind at a time: `replaySource` says what to read for a
 * condition, and a kind it does not know is refused with the kinds it
 * replays. A new kind adds its source, its item and its case below.
 */

/** What the replay reads, in time order: a device's samples, or its events. */
export type ReplayItem =
  | { readonly type: 'sample'; readonly ts: number; readonly seq: number; readonly sensor: string; readonly value: number; readonly unsynced?: true }
  | { readonly type: 'event'; readonly ts: number; readonly seq: number; readonly kind: string; readonly level: string; readonly message: string }
  /** A presence change from the history; a forMs firing's trigger is the status at the time it had held long enough. */
  | { readonly type: 'presence'; readonly ts: number; readonly status: string; readonly reason: string; readonly hubCaused?: boolean }
  /** An execution that failed for good, at the time it ended; `causeRule`: the rule whose firing made its job. */
  | { readonly type: 'job'; readonly ts: number; readonly jobId: string; readonly name: string; readonly outcome: string; readonly attempt: number; readonly error: string | null; readonly causeRule: string | null }

/** What to read for a condition (a new kind adds its own, and the switches on `from` say where it is missing). */
export type ReplaySource =
  | { readonly from: 'samples'; readonly sensor: string }
  | { readonly from: 'events'; readonly kind: string; readonly level?: string }
  | { readonly from: 'presence' }
  | { readonly from: 'jobs'; readonly name?: string; readonly outcome?: string }

/** The condition kinds a dry run replays, as `when` names them. */
export const REPLAYABLE_KINDS = ['telemetry', 'event', 'presence', 'job'] as const

/** What the limits say of a firing: it acts, or why its actions would be suppressed. */
export type Verdict = 'acts' | Exclude<Admission, 'fire'>

export type Transition =
  | { readonly kind: 'fire'; readonly ts: number; readonly trigger: ReplayItem; readonly verdict: Verdict }
  | { readonly kind: 'clear'; readonly ts: number; readonly trigger: ReplayItem }

export interface ReplayResult {
  /** Items the condition was evaluated on (those of its sensor, or its event kind and level). */
  readonly evaluated: number
  readonly transitions: readonly Transition[]
  /** The condition's state after the last item (an event condition stays idle: each event is a transition of its own). */
  readonly finalState: ConditionState
  readonly acted: number
  readonly suppressed: Readonly<Record<Exclude<Admission, 'fire'>, number>>
}

/** What to read for the rule's condition; a condition kind the replay does not know is a BAD_REQUEST naming those it does. */
export function replaySource(when: Condition): ReplaySource {
  if ('telemetry' in when) return { from: 'samples', sensor: when.telemetry.sensor }
  if ('event' in when) return when.event.level === undefined ? { from: 'events', kind: when.event.kind } : { from: 'events', kind: when.event.kind, level: when.event.level }
  if ('presence' in when) return { from: 'presence' }
  if ('job' in when) return { from: 'jobs', ...(when.job.name !== undefined ? { name: when.job.name } : {}), ...(when.job.outcome !== undefined ? { outcome: when.job.outcome } : {}) }
  const kind = Object.keys(when)[0] ?? '(none)'
  const kinds = REPLAYABLE_KINDS.map((k) => `"${k}"`)
  throw new RollcallError('BAD_REQUEST', `a dry run cannot replay a "${kind}" condition yet; it replays ${kinds.slice(0, -1).join(', ')} and ${kinds.at(-1)!} conditions`)
}

/** Runs `items` (in time order) through the rule's condition from idle, and its limits; `endTs`: the window's end (a presence forMs may fire before it). */
export function replay(rule: CheckedRule, items: readonly ReplayItem[], endTs = -Infinity): ReplayResult {
  const source = replaySource(rule.when)
  const transitions: Transition[] = []
  const suppressed = { stale: 0, paused: 0, cooldown: 0, rate: 0 }
  const window = new MinuteWindow()
  let acted = 0
  let evaluated = 0
  let state: ConditionState = IDLE
  let lastFiredAt: number | null = null
  // The hub's clock does not go backwards, even when a device's does.
  let now = -Infinity

  function fire(item: ReplayItem): void {
    const unsynced = item.type === 'sample' && item.unsynced === true
    const admission = unsynced ? 'stale' : admit({
      now, triggerTs: item.ts, maxSampleAgeMs: rule.maxSampleAgeMs, cooldownMs: rule.cooldownMs, lastFiredAt,
      firedLastMinute: window.count(now), maxFiringsPerMinute: rule.maxFiringsPerMinute, pausedUntil: null,
    })
    if (admission === 'fire') {
      acted++
      lastFiredAt = now
      window.add(now)
    } else {
      suppressed[admission]++
    }
    transitions.push({ kind: 'fire', ts: item.ts, trigger: item, verdict: admission === 'fire' ? 'acts' : admission })
  }

  let previousHubCaused = false
  /** A presence forMs that had held long enough by `ts`: it fires at the moment it had. */
  function presenceHeld(ts: number): void {
    if (!('presence' in rule.when) || rule.when.presence.forMs === undefined || state.phase !== 'pending') return
    const at = state.since + rule.when.presence.forMs
    if (at > ts) return
    now = Math.max(now, at)
    const next = step(presenceThreshold(rule.when.presence), state, at, 1)
    state = next.state
    if (next.fired) fire({ type: 'presence', ts: at, status: rule.when.presence.status, reason: `${rule.when.presence.status} for ${rule.when.presence.forMs} ms` })
  }

  for (const item of items) {
    if (source.from === 'presence') presenceHeld(item.ts)
    now = Math.max(now, item.ts)
    switch (source.from) {
      case 'samples': {
        if (item.type !== 'sample' || item.sensor !== source.sensor || !('telemetry' in rule.when)) continue
        evaluated++
        const next = step(rule.when.telemetry, state, item.ts, item.value)
        state = next.state
        if (next.fired) fire(item)
        if (next.cleared) transitions.push({ kind: 'clear', ts: item.ts, trigger: item })
        continue
      }
      case 'events': {
        // An event is a transition of its own, as in the engine: each one that matches fires.
        if (item.type !== 'event' || item.kind !== source.kind || (source.level !== undefined && item.level !== source.level)) continue
        evaluated++
        fire(item)
        continue
      }
      case 'presence': {
        if (item.type !== 'presence' || !('presence' in rule.when)) continue
        evaluated++
        const next = step(presenceThreshold(rule.when.presence), state, item.ts, item.status === rule.when.presence.status ? 1 : 0)
        state = next.state
        // The hub's own stop or start, and the return from it, fire nothing (as in the engine, rules/presence.ts).
        if (next.fired && item.hubCaused !== true && !previousHubCaused) fire(item)
        if (next.cleared) transitions.push({ kind: 'clear', ts: item.ts, trigger: item })
        previousHubCaused = item.hubCaused === true
        continue
      }
      case 'jobs': {
        // Each failure that matches fires, as an event does; never one of a job this rule's own firing made.
        if (item.type !== 'job' || (source.name !== undefined && item.name !== source.name) || (source.outcome !== undefined && item.outcome !== source.outcome)) continue
        if (item.causeRule === rule.name) continue
        evaluated++
        fire(item)
        continue
      }
      default: {
        const never: never = source
        return never
      }
    }
  }
  if (source.from === 'presence') presenceHeld(endTs)
  return { evaluated, transitions, finalState: state, acted, suppressed }
}
