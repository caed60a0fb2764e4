import { describe, expect, it } from 'vitest'
import { manualClock, systemClock } from '../common/clock.js'

/** The clock's timers (common/clock.ts; issue #16): a manual clock fires them as the test moves it. */
describe('manualClock timers', () => {
  it('fires timeouts that fall due, in time order, each at its own time', () => {
    const clock = manualClock(1000)
    const fired: Array<[string, number]> = []
    clock.setTimeout(() => fired.push(['b', clock.now()]), 200)
    clock.setTimeout(() => fired.push(['a', clock.now()]), 100)
    clock.setTimeout(() => fired.push(['late', clock.now()]), 500)
    clock.advance(300)
    expect(fired).toEqual([['a', 1100], ['b', 1200]])
    expect(clock.now()).toBe(1300)
    expect(clock.pending).toBe(1)
    clock.advance(200)
    expect(fired.at(-1)).toEqual(['late', 1500])
    expect(clock.pending).toBe(0)
  })

  it('repeats an interval every period until cleared, and a cleared timeout never fires', () => {
    const clock = manualClock(0)
    const ticks: number[] = []
    const interval = clock.setInterval(() => ticks.push(clock.now()), 100)
    let fired = false
    const timeout = clock.setTimeout(() => { fired = true }, 150)
    clock.clearTimer(timeout)
    clock.advance(350)
    expect(ticks).toEqual([100, 200, 300])
    clock.clearTimer(interval)
    clock.advance(1000)
    expect(ticks).toEqual([100, 200, 300])
    expect(fired).toBe(false)
  })

  it('runs timers a timer sets within the same advance when they fall due in it', () => {
    const clock = manualClock(0)
    const at: number[] = []
    clock.setTimeout(() => { at.push(clock.now()); clock.setTimeout(() => at.push(clock.now()), 50) }, 100)
    clock.advance(200)
    expect(at).toEqual([100, 150])
  })

  it('set() steps the time without firing or moving timers (a wall clock stepped by NTP)', () => {
    const clock = manualClock(0)
    const at: number[] = []
    clock.setTimeout(() => at.push(clock.now()), 10)
    clock.set(10_000)
    expect(at).toEqual([])
    expect(clock.now()).toBe(10_000)
    clock.advance(9)
    expect(at).toEqual([])
    clock.advance(1)
    expect(at).toEqual([10_010])
    // Stepped back: a timer still waits its own time.
    clock.setTimeout(() => at.push(clock.now()), 50)
    clock.set(0)
    clock.advance(50)
    expect(at).toEqual([10_010, 50])
  })

  it('takes a delay that is not a number as none, as Node does', () => {
    const clock = manualClock(0)
    let fired = false
    clock.setTimeout(() => { fired = true }, Number.NaN)
    clock.advance(0)
    expect(fired).toBe(true)
  })

  it('the system clock\'s timers are real ones', async () => {
    const t0 = Date.now()
    await new Promise<void>((resolve) => { systemClock.setTimeout(resolve, 20) })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(15)
  })
})
