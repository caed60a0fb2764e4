import { describe, expect, it } from 'vitest'
import { vibrationModel } from '../devices-sim/models.js'
import { countBursts, reactionRule } from '../devices-sim/reactions.js'

/**
 * The reactions scenario's pure parts: bursts counted as the rule sees them
 * (touching ones are one), and thresholds that put every burst reading
 * above the trigger and every other reading under the clear, so a burst
 * fires the rule exactly once.
 */
describe('the reactions scenario', () => {
  it.each([
    { bursts: [], count: 0 },
    { bursts: [{ startTick: 5, ticks: 3 }], count: 1 },
    // 5..7 then 9..11: tick 8 is under the clear between them.
    { bursts: [{ startTick: 5, ticks: 3 }, { startTick: 9, ticks: 3 }], count: 2 },
    // 5..7 then 8..10: no reading between them, one firing.
    { bursts: [{ startTick: 5, ticks: 3 }, { startTick: 8, ticks: 3 }], count: 1 },
    // Overlapping, and a third inside the first.
    { bursts: [{ startTick: 5, ticks: 8 }, { startTick: 6, ticks: 3 }, { startTick: 10, ticks: 5 }], count: 1 },
  ])('counts $count firings for $bursts.length bursts', ({ bursts, count }) => {
    expect(countBursts(bursts)).toBe(count)
  })

  it('puts the trigger above every burst reading and the clear below every other reading', () => {
    const rule = reactionRule('sim.vibration-burst', 'sim-fleet') as { when: { telemetry: { value: number; clear: { value: number } } } }
    const { value: trigger, clear } = rule.when.telemetry
    let minBurst = Infinity
    let maxCalm = 0
    for (let device = 0; device < 200; device++) {
      const m = vibrationModel(3, device, { anomalyEveryTicks: 10 })
      for (let tick = 0; tick < 500; tick++) {
        const v = m.valueAt(tick)
        if (m.isAnomaly(tick)) minBurst = Math.min(minBurst, v)
        else maxCalm = Math.max(maxCalm, v)
      }
    }
    expect(minBurst).toBeGreaterThan(trigger)
    expect(maxCalm).toBeLessThan(clear.value)
  })
})
