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
 *
 * An attempt that never reached a listener (connection refused, no route,
 * timed out before TCP connected) waits at most `unreachableMaxMs`: while the
 * hub is down, its kernel answers a connect for nothing, so there is no storm
 * to damp, and a device that had backed off to 30 s windows during a restart
 * would otherwise come back up to 30 s after the hub did (issue #14: a 5 s
 * outage left the last of 2,000 devices offline for 29 s). Once an attempt
 * reaches the hub and is refused or dropped, the full window applies again
 * and grows with each refusal, so a hub admitting a storm at its connect rate
 * spreads the fleet wider each time. Unreachable attempts grow the count only
 * up to the cap's window: a 5-minute outage does not put the first refusal
 * after it into a 30 s window.
 */
export interface ReconnectPolicy extends BackoffPolicy {
  /** A connection that lasted this long counts as stable and resets the backoff. */
  readonly stableAfterMs: number
  /** The longest wait after an attempt that reached no listener. */
  readonly unreachableMaxMs: number
}

export const DEFAULT_RECONNECT_POLICY: ReconnectPolicy = { baseMs: 500, maxMs: 30_000, stableAfterMs: 10_000, unreachableMaxMs: 5000 }

/** How the attempt that just ended went. */
export interface EndedAttempt {
  /** How long it stayed connected (from the CONNACK); undefined: it never got one. */
  readonly connectedForMs?: number | undefined
  /** It never reached a listener: no TCP connection was made. */
  readonly unreachable?: boolean
}

export interface ReconnectPlan {
  /** How long to wait before the next attempt. */
  readonly delayMs: number
  /** The attempt counter to carry into the next decision. */
  readonly attempt: number
}

/** @param attempt the counter carried from the previous plan (0 at start) */
export function planReconnect(policy: ReconnectPolicy, attempt: number, ended: EndedAttempt, random: Random): ReconnectPlan {
  const base = ended.connectedForMs !== undefined && ended.connectedForMs >= policy.stableAfterMs ? 0 : attempt
  if (ended.unreachable !== true) return { delayMs: fullJitterDelayMs(policy, base, random), attempt: base + 1 }
  const maxMs = Math.min(policy.maxMs, policy.unreachableMaxMs)
  // The count stops where the window reaches the cap: refused connects say nothing of the hub's load, so the
  // first refusal after a restart draws from the next window up, not from one grown through the whole outage.
  const capAttempt = Math.ceil(Math.log2(Math.max(1, maxMs / policy.baseMs)))
  return { delayMs: fullJitterDelayMs({ baseMs: policy.baseMs, maxMs }, base, random), attempt: Math.min(base + 1, Math.max(capAttempt, attempt)) }
}
