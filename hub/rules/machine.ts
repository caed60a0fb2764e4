/**
 * A telemetry condition's state on one device, one sample at a time: pure,
 * so every transition is table-tested (test/hub.rule-machine.test.ts).
 *
 *   idle ──(trigger holds)──────────────► pending ──(held forMs / N samples)──► active: FIRES
 *     ▲                                      │                                      │
 *     └────────(trigger stops holding)───────┘                                      │
 *     └──────────────(clear holds; without a clear: the trigger stops holding)──────┘: CLEARS
 *
 * Without `forMs` or `samples` the first sample that holds fires (pending is
 * passed through). A rule fires once per transition into active, never once
 * per sample: while active, samples that still hold change nothing. The clear
 * condition gives hysteresis: with "fire above 0.08, clear at or below 0.06"
 * a value hovering around 0.08 fires once and clears only when it really
 * falls. `forMs` is measured on the samples' own times (a backlog drained
 * late is judged as it happened); a time that goes backwards (a clock step on
 * the device) counts as no time passing, never as negative.
 */

export const COMPARISONS = ['>', '<', '>=', '<=', '=='] as const
export type Comparison = (typeof COMPARISONS)[number]

export interface Threshold {
  readonly op: Comparison
  readonly value: number
}

export interface TelemetryCondition extends Threshold {
  readonly sensor: string
  /** Fires once the trigger has held for this long (sample time). */
  readonly forMs?: number
  /** Fires once this many samples in a row hold. */
  readonly samples?: number
  /** Clears when this holds (hysteresis); without it, when the trigger stops holding. */
  readonly clear?: Threshold
}

/**
 * A presence condition: the device's status is `status` (for `forMs`, on the
 * hub's clock). It runs on the same machine as a sensor threshold, as the
 * value 1 while the status is the one watched and 0 otherwise
 * (presenceThreshold): it fires once per transition, and a device that comes
 * back before forMs never fires.
 */
export interface PresenceCondition {
  readonly status: 'offline' | 'online'
  readonly forMs?: number
}

export function presenceThreshold(c: PresenceCondition): TelemetryCondition {
  return { sensor: '', op: '==', value: 1, ...(c.forMs !== undefined ? { forMs: c.forMs } : {}) }
}

/** An execution of a job that ended in failure with no retry left; `name` narrows it to one task. */
export interface JobCondition {
  readonly outcome?: JobFailure
  readonly name?: string
}

export const JOB_FAILURES = ['failed', 'timed_out'] as const
export type JobFailure = (typeof JOB_FAILURES)[number]

export type ConditionState =
  | { readonly phase: 'idle' }
  | { readonly phase: 'pending'; readonly since: number; readonly count: number }
  | { readonly phase: 'active'; readonly since: number }

export const IDLE: ConditionState = { phase: 'idle' }

/** Most samples: idle, and still not holding (one object, not one per sample). */
const STAY_IDLE: Step = { state: IDLE, fired: false, cleared: false }

export interface Step {
  readonly state: ConditionState
  /** The condition became active with this sample: the rule fires. */
  readonly fired: boolean
  /** The condition left active with this sample. */
  readonly cleared: boolean
}

export function compare(value: number, t: Threshold): boolean {
  switch (t.op) {
    case '>': return value > t.value
    case '<': return value < t.value
    case '>=': return value >= t.value
    case '<=': return value <= t.value
    case '==': return value === t.value
    default: {
      const never: never = t.op
      return never
    }
  }
}

/** Whether a trigger that has held since `since` over `count` samples has held long enough at `ts`. */
function satisfied(c: TelemetryCondition, since: number, count: number, ts: number): boolean {
  if (c.samples !== undefined && count < c.samples) return false
  if (c.forMs !== undefined && Math.max(0, ts - since) < c.forMs) return false
  return true
}

/** The state after one sample of the condition's sensor, and whether it fired or cleared. */
export function step(c: TelemetryCondition, state: ConditionState, ts: number, value: number): Step {
  const holds = compare(value, c)
  switch (state.phase) {
    case 'idle':
    case 'pending': {
      if (!holds) return STAY_IDLE
      const since = state.phase === 'pending' ? state.since : ts
      // Counted only where it decides (samples): a forMs rule's pending state then changes, and is written, once per crossing.
      const count = state.phase !== 'pending' ? 1 : c.samples !== undefined ? state.count + 1 : state.count
      if (satisfied(c, since, count, ts)) return { state: { phase: 'active', since: ts }, fired: true, cleared: false }
      return { state: { phase: 'pending', since, count }, fired: false, cleared: false }
    }
    case 'active': {
      const clears = c.clear !== undefined ? compare(value, c.clear) : !holds
      if (clears) return { state: IDLE, fired: false, cleared: true }
      return { state, fired: false, cleared: false }
    }
    default: {
      const never: never = state
      return never
    }
  }
}

/** Whether two states are the same (a step that changes nothing writes nothing). */
export function sameState(a: ConditionState, b: ConditionState): boolean {
  if (a.phase !== b.phase) return false
  if (a.phase === 'idle') return true
  if (a.phase === 'pending' && b.phase === 'pending') return a.since === b.since && a.count === b.count
  return a.since === (b as { since: number }).since
}
