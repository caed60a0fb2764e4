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

/**
 * One token bucket per key (M14d: a device, an observer, an anonymous
 * source address), so a client reconnecting in a loop spends its own tokens
 * and no one else's. A key whose bucket has refilled to the burst is
 * indistinguishable from a new one and is forgotten; at most `maxKeys` are
 * kept (least recently used go first, which at worst hands a looping client a
 * fresh burst, never refuses anyone else).
 */
export interface KeyedTokenBuckets {
  /** Takes one token from `key`'s bucket if there is one. */
  take(key: string): boolean
  /** Gives back a token taken by `take` (the CONNECT was refused further on). */
  refund(key: string): void
  /** Keys tracked now (for tests and stats). */
  readonly size: number
}

export interface KeyedTokenBucketsOptions extends TokenBucketOptions {
  readonly maxKeys: number
}

interface Bucket { tokens: number; last: number }

export function createKeyedTokenBuckets(options: KeyedTokenBucketsOptions): KeyedTokenBuckets {
  const { ratePerSec, burst, clock, maxKeys } = options
  if (!(ratePerSec > 0) || !(burst >= 1) || !(maxKeys >= 1)) {
    throw new RangeError(`keyed token buckets need ratePerSec > 0, burst >= 1 and maxKeys >= 1 (got ${ratePerSec}, ${burst}, ${maxKeys})`)
  }
  // Map order is least recently used first.
  const buckets = new Map<string, Bucket>()
  const refill = (b: Bucket, now: number): void => {
    b.tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.last) * ratePerSec) / 1000)
    b.last = now
  }
  // The least recently used bucket, if it has refilled by now, carries nothing worth keeping.
  const forgetOneFull = (now: number): void => {
    const first = buckets.entries().next().value
    if (first === undefined) return
    refill(first[1], now)
    if (first[1].tokens >= burst) buckets.delete(first[0])
  }
  return {
    take(key) {
      const now = clock.now()
      forgetOneFull(now)
      let b = buckets.get(key)
      if (b === undefined) {
        b = { tokens: burst, last: now }
        if (buckets.size >= maxKeys) buckets.delete(buckets.keys().next().value!)
      } else {
        buckets.delete(key)
        refill(b, now)
      }
      buckets.set(key, b)
      if (b.tokens < 1) return false
      b.tokens -= 1
      return true
    },
    refund(key) {
      const b = buckets.get(key)
      if (b !== undefined) b.tokens = Math.min(burst, b.tokens + 1)
    },
    get size() {
      return buckets.size
    },
  }
}
