import { describe, expect, it } from 'vitest'
import { manualClock } from '../common/clock.js'
import { createKeyedTokenBuckets, createTokenBucket } from '../broker/rate-limiter.js'

type Step = [advanceMs: number, takes: number, granted: number]

describe('token bucket', () => {
  it.each<[string, number, number, Step[]]>([
    ['burst is available at once, then refused', 10, 5, [[0, 7, 5]]],
    ['refills at the rate', 10, 5, [[0, 5, 5], [100, 2, 1], [300, 5, 3]]],
    ['never holds more than the burst', 10, 5, [[0, 5, 5], [60_000, 10, 5]]],
    ['fractional refill accumulates', 2, 1, [[0, 1, 1], [250, 1, 0], [250, 1, 1]]],
    ['a clock stepping back mints nothing', 10, 2, [[0, 2, 2], [-5_000, 1, 0], [100, 1, 1]]],
  ])('%s', (_name, ratePerSec, burst, steps) => {
    const clock = manualClock(1_000_000)
    const bucket = createTokenBucket({ ratePerSec, burst, clock })
    for (const [advanceMs, takes, granted] of steps) {
      clock.advance(advanceMs)
      let got = 0
      for (let i = 0; i < takes; i++) if (bucket.take()) got++
      expect(got).toBe(granted)
    }
  })

  it.each([[0, 5], [10, 0], [Number.NaN, 5]])('refuses rate %d / burst %d', (ratePerSec, burst) => {
    expect(() => createTokenBucket({ ratePerSec, burst, clock: manualClock() })).toThrow(RangeError)
  })
})

describe('token buckets per key (M14d)', () => {
  // [advanceMs, key, takes, granted]
  type KeyStep = [advanceMs: number, key: string, takes: number, granted: number]
  it.each<[string, KeyStep[]]>([
    ['each key has its own burst', [[0, 'a', 5, 3], [0, 'b', 2, 2]]],
    ['one key spent dry leaves the others alone', [[0, 'a', 100, 3], [0, 'b', 3, 3], [0, 'c', 1, 1]]],
    ['a key refills at its rate', [[0, 'a', 3, 3], [500, 'a', 2, 1], [1000, 'a', 3, 2]]],
  ])('%s', (_name, steps) => {
    const clock = manualClock(0)
    const buckets = createKeyedTokenBuckets({ ratePerSec: 2, burst: 3, maxKeys: 100, clock })
    for (const [advanceMs, key, takes, granted] of steps) {
      clock.advance(advanceMs)
      let got = 0
      for (let i = 0; i < takes; i++) if (buckets.take(key)) got++
      expect(got).toBe(granted)
    }
  })

  it('a refund gives back the token of a CONNECT refused further on', () => {
    const buckets = createKeyedTokenBuckets({ ratePerSec: 1, burst: 1, maxKeys: 10, clock: manualClock(0) })
    expect(buckets.take('a')).toBe(true)
    expect(buckets.take('a')).toBe(false)
    buckets.refund('a')
    expect(buckets.take('a')).toBe(true)
  })

  it('forgets keys that refilled, and keeps at most maxKeys', () => {
    const clock = manualClock(0)
    const buckets = createKeyedTokenBuckets({ ratePerSec: 1, burst: 2, maxKeys: 3, clock })
    for (const key of ['a', 'b', 'c', 'd']) buckets.take(key)
    expect(buckets.size).toBe(3)
    clock.advance(10_000)
    // Each take forgets the least recently used key if it has refilled.
    buckets.take('e')
    buckets.take('e')
    expect(buckets.size).toBeLessThanOrEqual(2)
  })
})
