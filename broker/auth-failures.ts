import type { Clock } from '../common/clock.js'

/**
 * Sources that keep failing authentication are shut out for a while.
 *
 * The connect-rate bucket is charged only for CONNECTs that authenticated, so
 * a flood of bad credentials cannot starve a fleet's reconnects of tokens;
 * this is what bounds the flood itself: more than `maxFailures` refused
 * CONNECTs from one address within `windowMs` and that address's new sockets
 * are closed at accept for `banMs`. A fleet behind one NAT address is not
 * hurt by a misconfigured member: an agent retries with growing backoff and
 * never fails that often.
 *
 * States per address: counting (failures in the current window) → banned
 * (until a time) → forgotten (entry removed when the ban ends or the window
 * passes). At most `maxAddresses` are tracked; the oldest go first.
 */
export interface AuthFailureOptions {
  readonly maxFailures: number
  readonly windowMs: number
  readonly banMs: number
  readonly maxAddresses: number
  readonly clock: Clock
}

export const AUTH_FAILURE_DEFAULTS = { maxFailures: 30, windowMs: 10_000, banMs: 30_000, maxAddresses: 10_000 } as const

interface Entry { windowStart: number; failures: number; bannedUntil: number }

export function createAuthFailures(options: AuthFailureOptions) {
  const entries = new Map<string, Entry>()

  return {
    /** Records a refused CONNECT; returns true when this one started a ban. */
    failed(address: string | undefined): boolean {
      if (address === undefined) return false
      const now = options.clock.now()
      let e = entries.get(address)
      if (e === undefined || (now - e.windowStart >= options.windowMs && e.bannedUntil <= now)) {
        e = { windowStart: now, failures: 0, bannedUntil: 0 }
        entries.delete(address)
        entries.set(address, e)
        if (entries.size > options.maxAddresses) entries.delete(entries.keys().next().value!)
      }
      e.failures++
      if (e.failures > options.maxFailures && e.bannedUntil <= now) {
        e.bannedUntil = now + options.banMs
        return true
      }
      return false
    },
    banned(address: string | undefined): boolean {
      if (address === undefined) return false
      const e = entries.get(address)
      if (e === undefined) return false
      if (e.bannedUntil > options.clock.now()) return true
      if (e.bannedUntil > 0) entries.delete(address)
      return false
    },
  }
}
