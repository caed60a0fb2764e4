import { describe, expect, it } from 'vitest'
import { floors, leastSquares, summarize } from '../bench/soak-stats.js'
import { soakChaosSpec } from '../bench/soak-hub.js'

/** The soak benchmarks' arithmetic: a slope is only as good as the fit behind it (issue #13). */
describe('soak statistics', () => {
  it('fits a slope per hour, with a standard error of zero on a straight line', () => {
    const line = [0, 0.25, 0.5, 0.75, 1].map((h) => ({ h, v: 10 + 4 * h }))
    expect(leastSquares(line).slope).toBeCloseTo(4, 10)
    expect(leastSquares(line).slopeSe).toBeCloseTo(0, 10)
  })

  it('gives a flat, noisy series a slope within its standard error', () => {
    const saw = Array.from({ length: 60 }, (_, i) => ({ h: i / 60, v: i % 2 === 0 ? 9 : 11 }))
    const fit = leastSquares(saw)
    expect(Math.abs(fit.slope)).toBeLessThan(2 * fit.slopeSe)
  })

  it('prints no slope from fewer than three points', () => {
    expect(leastSquares([{ h: 0, v: 1 }, { h: 1, v: 2 }]).slope).toBeNaN()
  })

  it('takes the floor of each window, so a saw tooth on a rising floor shows the rise', () => {
    // A heap that climbs 5 units between collections, on a floor rising 1 unit per 0.1 h.
    const points = Array.from({ length: 60 }, (_, i) => ({ h: i / 60, v: Math.floor(i / 6) + (i % 6) }))
    const f = floors(points, 0.1)
    expect(f.map((p) => p.v)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8])
    expect(leastSquares(f).slope).toBeCloseTo(10, 5)
  })

  it('fits only the points after the warm-up, and reports min, max and last over all', () => {
    const points = [{ h: 0, v: 100 }, { h: 0.1, v: 1 }, { h: 0.2, v: 1 }, { h: 0.3, v: 1 }]
    const s = summarize('x', 'count', points, 0.1)
    expect(s.fit.slope).toBeCloseTo(0, 10)
    expect([s.min, s.max, s.last, s.points]).toEqual([1, 100, 1, 3])
  })
})

describe('soak-hub chaos', () => {
  it('alternates partitions and reconnect bursts, the last ending 30 s before the run', () => {
    expect(soakChaosSpec(600_000, 180_000, 60_000)).toBe('partition=50%@180s+60s,reconnect-burst=100%@360s')
    expect(soakChaosSpec(60_000, 180_000, 60_000)).toBe('')
  })
})
