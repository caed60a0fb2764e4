import { describe, expect, it } from 'vitest'
import { manualClock } from '../common/clock.js'
import { createTokenBucket } from '../broker/rate-limiter.js'

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
