import { fullJitterDelayMs, type BackoffPolicy } from '../common/backoff.js'
import type { Random } from '../common/clock.js'

/**
 * When to try the hub again: a pure decision, tested as a table; link.ts does
 * the waiting.
 *
 * The wait is full jitter over an exponential window (common/backoff.ts). The
 * attempt counter grows with every attempt that ends, and resets only when the
 * connection that just ended had stayed up for `stableAfterMs`: a link that
 * flaps (connects, drops a second later, again and again) keeps backing off
 * instead of hammering the hub at the base delay, which is how a fleet turns
 * a hub restart into a reconnect storm (DESIGN.md, "Reconnect storms").
 */
export interface ReconnectPolicy extends BackoffPolicy {
  /** A connection that lasted this long counts as stable and resets the backoff. */
  readonly stableAfterMs: number
}

export const DEFAULT_RECONNECT_POLICY: ReconnectPolicy = { baseMs: 500, maxMs: 30_000, stableAfterMs: 10_000 }

export interface ReconnectPlan {
  /** How long to wait before the next attempt. */
  readonly delayMs: number
  /** The attempt counter to carry into the next decision. */
  readonly attempt: number
}

/**
 * @param attempt the counter carried from the previous plan (0 at start)
 * @param connectedForMs how long the ended attempt stayed connected, or
 *   undefined when it never got a CONNACK
 */
export function planReconnect(policy: ReconnectPolicy, attempt: number, connectedForMs: number | undefined, random: Random): ReconnectPlan {
  const base = connectedForMs !== undefined && connectedForMs >= policy.stableAfterMs ? 0 : attempt
  return { delayMs: fullJitterDelayMs(policy, base, random), attempt: base + 1 }
}
