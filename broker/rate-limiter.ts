import type { Clock } from '../common/clock.js'

/**
 * Token bucket for new CONNECTs: `burst` tokens at most, refilled at
 * `ratePerSec`. A reconnect storm after a hub restart is spread out instead
 * of hashing every token and restoring every session at once; the refused
 * clients get CONNACK 3 (server unavailable) and retry with their backoff.
 */
export interface TokenBucket {
  /** Takes one token if there is one. */
  take(): boolean
}

export interface TokenBucketOptions {
  readonly ratePerSec: number
  readonly burst: number
  readonly clock: Clock
}

export function createTokenBucket(options: TokenBucketOptions): TokenBucket {
  const { ratePerSec, burst, clock } = options
  if (!(ratePerSec > 0) || !(burst >= 1)) {
    throw new RangeError(`token bucket needs ratePerSec > 0 and burst >= 1 (got ${ratePerSec}, ${burst})`)
  }
  let tokens = burst
  let last = clock.now()
  return {
    take(): boolean {
      const now = clock.now()
      // A clock that steps back must not mint tokens or make them negative.
      const elapsedMs = Math.max(0, now - last)
      last = now
      tokens = Math.min(burst, tokens + (elapsedMs * ratePerSec) / 1000)
      if (tokens < 1) return false
      tokens -= 1
      return true
    },
  }
}
