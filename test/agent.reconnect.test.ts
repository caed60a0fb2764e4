import { describe, expect, it } from 'vitest'
import { seededRandom } from '../common/clock.js'
import { DEFAULT_RECONNECT_POLICY, planReconnect } from '../agent/reconnect.js'

const policy = DEFAULT_RECONNECT_POLICY // base 500 ms, max 30 s, stable after 10 s, 5 s while unreachable

describe('planReconnect', () => {
  it.each([
    // attempt, connectedForMs, random, delay, next attempt
    [0, undefined, 0.5, 250, 1], // first retry: uniform in [0, 500)
    [1, undefined, 0.5, 500, 2], // window doubles: [0, 1000)
    [3, undefined, 0.999, 3996, 4], // [0, 4000)
    [10, undefined, 0.5, 15_000, 11], // capped at max: [0, 30000)
    [60, undefined, 0.999, 29_970, 61], // huge attempt counts do not overflow
    [5, 9_999, 0.5, 8_000, 6], // up, but not for long enough: still backing off
    [5, 10_000, 0.5, 250, 1], // stable connection: back to the first window
    [0, undefined, 0, 0, 1], // full jitter reaches down to zero
  ])('attempt %i, connected %s ms, random %f -> %i ms', (attempt, connectedFor, r, delay, next) => {
    expect(planReconnect(policy, attempt, { connectedForMs: connectedFor }, () => r)).toEqual({ delayMs: delay, attempt: next })
  })

  it.each([
    // attempt, random, delay: the window is capped at unreachableMaxMs (5 s), not maxMs (30 s)
    [0, 0.5, 250], // [0, 500) as for any first retry
    [3, 0.999, 3996], // [0, 4000): under the cap, unchanged
    [4, 0.5, 2500], // [0, 8000) capped to [0, 5000)
    [20, 0.999, 4995],
  ])('an attempt that reached no listener: attempt %i, random %f -> %i ms', (attempt, r, delay) => {
    expect(planReconnect(policy, attempt, { unreachable: true }, () => r)).toEqual({ delayMs: delay, attempt: Math.max(attempt, Math.min(attempt + 1, 4)) })
  })

  it('stops the count where the window meets the cap while unreachable; refusals after the restart grow it again', () => {
    let attempt = 0
    for (let i = 0; i < 20; i++) attempt = planReconnect(policy, attempt, { unreachable: true }, () => 0.999_999).attempt
    // Twenty refused TCP connects: the count stays at 4, the first window at or above 5 s (500 ms * 2^4 = 8 s).
    expect(attempt).toBe(4)
    // The hub is back and refuses the CONNECT (rate limit): [0, 8 s), then [0, 16 s), then [0, 30 s).
    const windows: number[] = []
    for (let i = 0; i < 3; i++) {
      const plan = planReconnect(policy, attempt, {}, () => 0.999_999)
      windows.push(Math.ceil(plan.delayMs / 100) * 100)
      attempt = plan.attempt
    }
    expect(windows).toEqual([8000, 16000, 30000])
    // A count already past the cap (refusals before the outage) is kept, not lowered.
    expect(planReconnect(policy, 7, { unreachable: true }, () => 0.5).attempt).toBe(7)
    // Never more than reconnectMaxMs when that is below the cap.
    expect(planReconnect({ ...policy, maxMs: 2000 }, 10, { unreachable: true }, () => 0.999_999).delayMs).toBeLessThan(2000)
  })

  it('keeps growing for a link that flaps (connects, drops after a second, again and again)', () => {
    let attempt = 0
    const windows: number[] = []
    for (let i = 0; i < 8; i++) {
      // random() just below 1 shows the window's upper edge
      const plan = planReconnect(policy, attempt, { connectedForMs: 1_000 }, () => 0.999_999)
      windows.push(Math.ceil(plan.delayMs / 100) * 100)
      attempt = plan.attempt
    }
    expect(windows).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000])
  })

  it('spreads a fleet over the whole window (full jitter, not equal jitter)', () => {
    const random = seededRandom(42)
    const delays = Array.from({ length: 2000 }, () => planReconnect(policy, 4, {}, random).delayMs)
    const window = 8000
    expect(Math.min(...delays)).toBeLessThan(window * 0.02)
    expect(Math.max(...delays)).toBeGreaterThan(window * 0.98)
    expect(Math.max(...delays)).toBeLessThan(window)
    // Roughly uniform: each quarter of the window gets about a quarter of the fleet.
    for (let q = 0; q < 4; q++) {
      const n = delays.filter((d) => d >= (q * window) / 4 && d < ((q + 1) * window) / 4).length
      expect(n).toBeGreaterThan(400)
      expect(n).toBeLessThan(600)
    }
  })
})
