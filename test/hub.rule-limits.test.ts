import { describe, expect, it } from 'vitest'
import { admit, BREAKER_FAILURES, BREAKER_PAUSE_MS, MinuteWindow, tripBreaker, type AdmissionInput } from '../hub/rules/limits.js'

const base: AdmissionInput = { now: 1_000_000, triggerTs: 1_000_000, maxSampleAgeMs: 300_000, cooldownMs: 0, lastFiredAt: null, firedLastMinute: 0, maxFiringsPerMinute: 60, pausedUntil: null }

describe('whether a firing may act', () => {
  it.each([
    ['a fresh trigger acts', {}, 'fire'],
    ['a trigger just inside the age acts', { triggerTs: 1_000_000 - 300_000 }, 'fire'],
    ['a trigger older than maxSampleAgeMs is stale', { triggerTs: 1_000_000 - 300_001 }, 'stale'],
    ['a trigger from the future (a device clock ahead) is not stale', { triggerTs: 2_000_000 }, 'fire'],
    ['within the cooldown of the last firing', { cooldownMs: 10_000, lastFiredAt: 995_000 }, 'cooldown'],
    ['once the cooldown has passed', { cooldownMs: 10_000, lastFiredAt: 990_000 }, 'fire'],
    ['no cooldown set: a repeat acts', { lastFiredAt: 999_999 }, 'fire'],
    ['the rule fired its maximum in the last minute', { firedLastMinute: 60 }, 'rate'],
    ['while the breaker holds the rule', { pausedUntil: 1_000_001 }, 'paused'],
    ['once the breaker\'s pause is over', { pausedUntil: 1_000_000 }, 'fire'],
    ['paused wins over cooldown', { pausedUntil: 2_000_000, cooldownMs: 10_000, lastFiredAt: 999_000 }, 'paused'],
    ['stale wins over cooldown and rate', { triggerTs: 0, cooldownMs: 10_000, lastFiredAt: 999_000, firedLastMinute: 100 }, 'stale'],
    ['cooldown wins over rate', { cooldownMs: 10_000, lastFiredAt: 999_000, firedLastMinute: 100 }, 'cooldown'],
  ] as const)('%s', (_what, over, verdict) => {
    expect(admit({ ...base, ...over })).toBe(verdict)
  })

  it('trips the breaker at the Nth failure within a minute, not while paused, and again after the pause', () => {
    const failures = new MinuteWindow()
    for (let i = 1; i < BREAKER_FAILURES; i++) expect(tripBreaker(failures, null, i * 1000)).toBeUndefined()
    const pause = tripBreaker(failures, null, BREAKER_FAILURES * 1000)
    expect(pause?.until).toBe(BREAKER_FAILURES * 1000 + BREAKER_PAUSE_MS)
    expect(tripBreaker(failures, pause!.until, BREAKER_FAILURES * 1000 + 1)).toBeUndefined()
    // Failures spread over more than a minute do not trip it.
    const slow = new MinuteWindow()
    for (let i = 0; i < 3 * BREAKER_FAILURES; i++) expect(tripBreaker(slow, null, i * 10_000)).toBeUndefined()
  })

  it('counts the firings of the last minute', () => {
    const w = new MinuteWindow()
    w.add(0)
    w.add(30_000)
    w.add(59_999)
    expect(w.count(59_999)).toBe(3)
    expect(w.count(60_000)).toBe(2)
    expect(w.count(120_000)).toBe(0)
  })
})
