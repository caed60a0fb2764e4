import type { Random } from './clock.js'

export interface BackoffPolicy {
  /** First retry waits at most this long. */
  readonly baseMs: number
  /** No wait is ever longer than this. */
  readonly maxMs: number
}

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential
 * Backoff and Jitter"): the wait is uniform in [0, min(max, base * 2^attempt)).
 * Full jitter spreads a fleet that lost its hub at the same instant across the
 * whole window, which is what damps a reconnect storm; a fixed period (MQTT.js's
 * `reconnectPeriod`) brings everyone back in lockstep.
 *
 * `attempt` counts from 0 for the first retry.
 */
export function fullJitterDelayMs(policy: BackoffPolicy, attempt: number, random: Random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * exp)
}
