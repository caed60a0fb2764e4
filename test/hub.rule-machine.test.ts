import { describe, expect, it } from 'vitest'
import { IDLE, compare, sameState, step, type ConditionState, type TelemetryCondition } from '../hub/rules/machine.js'

/** Runs the samples [ts, value] through the condition from idle; returns the phase after each and what fired or cleared. */
function run(c: TelemetryCondition, samples: ReadonlyArray<readonly [number, number]>): string[] {
  let state: ConditionState = IDLE
  return samples.map(([ts, value]) => {
    const s = step(c, state, ts, value)
    state = s.state
    return s.fired ? 'FIRE' : s.cleared ? 'CLEAR' : state.phase
  })
}

const above = (value: number, extra: Partial<TelemetryCondition> = {}): TelemetryCondition => ({ sensor: 'vibration', op: '>', value, ...extra })

describe('a telemetry condition, sample by sample', () => {
  it.each([
    ['fires on the first sample that holds, once, and clears when it stops holding',
      above(0.08), [[0, 0.01], [1, 0.09], [2, 0.1], [3, 0.2], [4, 0.05], [5, 0.09]], ['idle', 'FIRE', 'active', 'active', 'CLEAR', 'FIRE']],
    ['with forMs, fires once the trigger has held that long, on sample time',
      above(0.08, { forMs: 10_000 }), [[0, 0.09], [5_000, 0.09], [9_999, 0.09], [10_000, 0.09], [11_000, 0.09]], ['pending', 'pending', 'pending', 'FIRE', 'active']],
    ['with forMs, a dip resets the wait',
      above(0.08, { forMs: 10_000 }), [[0, 0.09], [6_000, 0.01], [7_000, 0.09], [16_000, 0.09], [17_000, 0.09]], ['pending', 'idle', 'pending', 'pending', 'FIRE']],
    ['with samples, fires on the Nth sample in a row that holds',
      above(0.08, { samples: 3 }), [[0, 0.09], [1, 0.09], [2, 0.01], [3, 0.09], [4, 0.09], [5, 0.09]], ['pending', 'pending', 'idle', 'pending', 'pending', 'FIRE']],
    ['with a clear threshold, a value hovering at the trigger fires once (hysteresis)',
      above(0.08, { clear: { op: '<=', value: 0.06 } }), [[0, 0.081], [1, 0.079], [2, 0.081], [3, 0.07], [4, 0.06], [5, 0.081]], ['FIRE', 'active', 'active', 'active', 'CLEAR', 'FIRE']],
    ['a time that goes backwards counts as no time passing',
      above(0.08, { forMs: 1_000 }), [[5_000, 0.09], [2_000, 0.09], [5_999, 0.09], [6_000, 0.09]], ['pending', 'pending', 'pending', 'FIRE']],
    ['forMs 0 and samples 1 fire at once',
      above(0.08, { forMs: 0, samples: 1 }), [[0, 0.09]], ['FIRE']],
  ] as const)('%s', (_what, c, samples, phases) => {
    expect(run(c, samples)).toEqual(phases)
  })

  it.each([
    ['>', 3, 2, true], ['>', 2, 2, false], ['<', 1, 2, true], ['<', 2, 2, false],
    ['>=', 2, 2, true], ['>=', 1, 2, false], ['<=', 2, 2, true], ['<=', 3, 2, false],
    ['==', 2, 2, true], ['==', 2.5, 2, false],
  ] as const)('%s: %d against %d is %s', (op, value, threshold, holds) => {
    expect(compare(value, { op, value: threshold })).toBe(holds)
  })

  it('tells a changed state from the same one', () => {
    expect(sameState(IDLE, { phase: 'idle' })).toBe(true)
    expect(sameState({ phase: 'pending', since: 1, count: 1 }, { phase: 'pending', since: 1, count: 2 })).toBe(false)
    expect(sameState({ phase: 'active', since: 1 }, { phase: 'active', since: 1 })).toBe(true)
    expect(sameState({ phase: 'active', since: 1 }, { phase: 'pending', since: 1, count: 1 })).toBe(false)
  })
})
