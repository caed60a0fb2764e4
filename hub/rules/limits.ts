/**
 * Whether a firing may act, in order, cheapest and most certain first:
 *
 *   1. stale     its trigger is older than the rule's maxSampleAgeMs: a
 *                device draining an hour of backlog must not push an hour of
 *                commands now. The state still moved (the rule will not fire
 *                again until the condition clears); only the actions are
 *                suppressed, and counted.
 *   2. paused    the circuit breaker holds the rule: its actions kept
 *                failing (BREAKER_FAILURES in a minute), so it rests for
 *                BREAKER_PAUSE_MS instead of hammering what is failing.
 *   3. cooldown  the rule fired for this device less than cooldownMs ago.
 *   4. rate      the rule fired maxFiringsPerMinute times in the last minute,
 *                for any device: a fleet-wide storm is bounded too.
 *
 * Pure, table-tested (test/hub.rule-limits.test.ts).
 */

export type Admission = 'fire' | 'stale' | 'paused' | 'cooldown' | 'rate'

/** Action failures in a minute that pause a rule, and for how long. */
export const BREAKER_FAILURES = 10
export const BREAKER_PAUSE_MS = 5 * 60_000

export interface AdmissionInput {
  readonly now: number
  /** When the trigger happened (a sample's or an event's ts, on the hub's clock as the device knows it). */
  readonly triggerTs: number
  readonly maxSampleAgeMs: number
  readonly cooldownMs: number
  /** When the rule last acted for this device; null: never. */
  readonly lastFiredAt: number | null
  /** How many times the rule acted in the minute before `now`. */
  readonly firedLastMinute: number
  readonly maxFiringsPerMinute: number
  /** Until when the circuit breaker holds the rule; null: it does not. */
  readonly pausedUntil: number | null
}

export function admit(i: AdmissionInput): Admission {
  if (i.now - i.triggerTs > i.maxSampleAgeMs) return 'stale'
  if (i.pausedUntil !== null && i.now < i.pausedUntil) return 'paused'
  if (i.lastFiredAt !== null && i.cooldownMs > 0 && i.now - i.lastFiredAt < i.cooldownMs) return 'cooldown'
  if (i.firedLastMinute >= i.maxFiringsPerMinute) return 'rate'
  return 'fire'
}

/**
 * The circuit breaker: counts a failed action (at `now`) and says whether the
 * rule is to rest: BREAKER_FAILURES failures within a minute pause it for
 * BREAKER_PAUSE_MS (its firings are then suppressed as paused). After the
 * pause it acts again; if its actions still fail, the next run of failures
 * pauses it again.
 */
export function tripBreaker(failures: MinuteWindow, pausedUntil: number | null, now: number): { until: number; reason: string } | undefined {
  failures.add(now)
  if ((pausedUntil !== null && now < pausedUntil) || failures.count(now) < BREAKER_FAILURES) return undefined
  const until = now + BREAKER_PAUSE_MS
  return { until, reason: `${BREAKER_FAILURES} actions failed within a minute; paused until ${new Date(until).toISOString()}` }
}

/** The times a rule acted (or its actions failed), kept for one minute. */
export class MinuteWindow {
  private times: number[] = []

  count(now: number): number {
    const cutoff = now - 60_000
    let drop = 0
    while (drop < this.times.length && this.times[drop]! <= cutoff) drop++
    if (drop > 0) this.times = this.times.slice(drop)
    return this.times.length
  }

  add(now: number): void {
    this.times.push(now)
  }

  clear(): void {
    this.times = []
  }
}
