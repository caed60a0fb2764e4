import { describe, expect, it } from 'vitest'
import {
  connectivityPlan,
  fleetPlans,
  isProfileChoice,
  linkChanges,
  mixedProfileOf,
  normaliseOutages,
  onlineAt,
  onlineMs,
  plansFingerprint,
  summarizePlans,
  type ConnectivityPlan,
  type Outage,
} from '../devices-sim/profiles.js'

const MINUTE = 60_000

function checkShape(plan: ConnectivityPlan, durationMs: number): void {
  let prevEnd = plan.connectAtMs
  for (const o of plan.outages) {
    expect(o.fromMs).toBeGreaterThanOrEqual(prevEnd)
    expect(o.toMs).toBeGreaterThan(o.fromMs)
    expect(o.toMs).toBeLessThanOrEqual(durationMs)
    prevEnd = o.toMs
  }
}

describe('connectivity plans', () => {
  it('steady: connects once within the stagger and never drops', () => {
    const plan = connectivityPlan('steady', 1, 5, 100, MINUTE)
    expect(plan).toEqual({ profile: 'steady', connectAtMs: expect.any(Number) as number, outages: [] })
    expect(plan.connectAtMs).toBeGreaterThanOrEqual(25) // slot 5 of 100 over 500 ms
    expect(plan.connectAtMs).toBeLessThan(30)
  })

  it('the same arguments give the same plan; another seed or device gives another', () => {
    const a = connectivityPlan('flaky', 42, 3, 50, 10 * MINUTE)
    expect(connectivityPlan('flaky', 42, 3, 50, 10 * MINUTE)).toEqual(a)
    expect(connectivityPlan('flaky', 43, 3, 50, 10 * MINUTE)).not.toEqual(a)
    expect(connectivityPlan('flaky', 42, 4, 50, 10 * MINUTE)).not.toEqual(a)
    expect(plansFingerprint(fleetPlans('mixed', 7, 200, MINUTE))).toBe(plansFingerprint(fleetPlans('mixed', 7, 200, MINUTE)))
    expect(plansFingerprint(fleetPlans('mixed', 7, 200, MINUTE))).not.toBe(plansFingerprint(fleetPlans('mixed', 8, 200, MINUTE)))
  })

  it.each(['steady', 'flaky', 'intermittent', 'mixed'] as const)('%s: outages are sorted, disjoint, after the connect, inside the run', (profile) => {
    for (const plan of fleetPlans(profile, 9, 300, 5 * MINUTE)) checkShape(plan, 5 * MINUTE)
  })

  it('flaky: about one drop per 20 s, 0.5–8 s long, mostly short', () => {
    const durationMs = 60 * MINUTE
    const lengths: number[] = []
    for (let d = 0; d < 50; d++) for (const o of connectivityPlan('flaky', 3, d, 50, durationMs).outages) lengths.push(o.toMs - o.fromMs)
    // 50 devices × 3600 s / (20 s + ~2.7 s mean outage) ≈ 7,900 drops.
    expect(lengths.length).toBeGreaterThan(7000)
    expect(lengths.length).toBeLessThan(8800)
    expect(Math.min(...lengths)).toBeGreaterThanOrEqual(500)
    expect(Math.max(...lengths)).toBeLessThanOrEqual(8000)
    const sorted = [...lengths].sort((a, b) => a - b)
    expect(sorted[Math.floor(sorted.length / 2)]!).toBeLessThan(2500) // median ≈ 2 s: skewed short
  })

  it('intermittent: online 10 s in every 30 s, with a per-device phase', () => {
    const durationMs = 10 * MINUTE
    const phases = new Set<number>()
    for (let d = 0; d < 20; d++) {
      const plan = connectivityPlan('intermittent', 5, d, 20, durationMs, { staggerMs: 0 })
      expect(onlineMs(plan, durationMs) / durationMs).toBeCloseTo(1 / 3, 1)
      for (const o of plan.outages.slice(1, -1)) expect(o.toMs - o.fromMs).toBe(20_000)
      const firstOnline = Array.from({ length: 30 }, (_, s) => s * 1000).find((t) => onlineAt(plan, t))
      phases.add(firstOnline ?? -1)
    }
    expect(phases.size).toBeGreaterThan(5)
  })

  it('intermittent windows are options', () => {
    const plan = connectivityPlan('intermittent', 5, 0, 1, MINUTE, { windowOnMs: 1000, windowPeriodMs: 4000, staggerMs: 0 })
    expect(onlineMs(plan, MINUTE) / MINUTE).toBeCloseTo(0.25, 1)
  })

  it('mixed: exact shares of 60 / 25 / 15 %, assigned by seed', () => {
    const count = (seed: number, n: number) => {
      const c = { steady: 0, flaky: 0, intermittent: 0 }
      for (let i = 0; i < n; i++) c[mixedProfileOf(seed, i, n)]++
      return c
    }
    expect(count(1, 100)).toEqual({ steady: 60, flaky: 25, intermittent: 15 })
    expect(count(2, 25)).toEqual({ steady: 15, flaky: 6, intermittent: 4 })
    expect(count(3, 1)).toEqual({ steady: 1, flaky: 0, intermittent: 0 })
    const who = (seed: number) => Array.from({ length: 100 }, (_, i) => mixedProfileOf(seed, i, 100)).join()
    expect(who(1)).toBe(who(1))
    expect(who(1)).not.toBe(who(2))
    expect(count(4, 10)).toEqual({ steady: 6, flaky: 3, intermittent: 1 }) // boundaries round: 6, 8.5 → 9
  })

  it('mixed: custom shares', () => {
    const c = { steady: 0, flaky: 0, intermittent: 0 }
    for (let i = 0; i < 40; i++) c[mixedProfileOf(6, i, 40, { steady: 0, flaky: 1, intermittent: 1 })]++
    expect(c).toEqual({ steady: 0, flaky: 20, intermittent: 20 })
  })

  it.each<[number, number | undefined, number]>([
    // fleet, staggerMs option, the window every connect falls in
    [2000, undefined, 10_000], // 2,000 at 200/s → 10 s
    [50, undefined, 250],
    [50, 5000, 5000],
    [10, 0, 1],
  ])('staggered connects: %i devices, stagger %s → all within %i ms, never more than ~200 a second', (fleet, staggerMs, windowMs) => {
    const plans = fleetPlans('steady', 11, fleet, MINUTE, staggerMs === undefined ? {} : { staggerMs })
    const at = plans.map((p) => p.connectAtMs)
    expect(Math.max(...at)).toBeLessThan(windowMs)
    expect(Math.min(...at)).toBeGreaterThanOrEqual(0)
    if (staggerMs === undefined) {
      const perSecond = new Map<number, number>()
      for (const t of at) perSecond.set(Math.floor(t / 1000), (perSecond.get(Math.floor(t / 1000)) ?? 0) + 1)
      expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(201)
    }
    expect(summarizePlans(plans, MINUTE).allConnectedByMs).toBe(Math.max(...at))
  })

  it.each<[ConnectivityPlan, number, boolean]>([
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 99, false],
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 100, true],
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 1000, false],
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 1999, false],
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 2000, true],
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 5500, false],
    [{ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 1000, toMs: 2000 }, { fromMs: 5000, toMs: 6000 }] }, 7000, true],
    [{ profile: 'steady', connectAtMs: 0, outages: [] }, 0, true],
  ])('onlineAt(%j, %i) = %s', (plan, t, expected) => {
    expect(onlineAt(plan, t)).toBe(expected)
  })

  it.each<[Outage[], Outage[]]>([
    [[{ fromMs: 5, toMs: 8 }, { fromMs: 1, toMs: 3 }], [{ fromMs: 1, toMs: 3 }, { fromMs: 5, toMs: 8 }]],
    [[{ fromMs: 1, toMs: 5 }, { fromMs: 4, toMs: 8 }], [{ fromMs: 1, toMs: 8 }]],
    [[{ fromMs: 1, toMs: 5 }, { fromMs: 5, toMs: 8 }], [{ fromMs: 1, toMs: 8 }]],
    [[{ fromMs: -5, toMs: 2 }, { fromMs: 9, toMs: 20 }], [{ fromMs: 0, toMs: 2 }, { fromMs: 9, toMs: 10 }]],
    [[{ fromMs: 3, toMs: 3 }, { fromMs: 11, toMs: 12 }], []],
  ])('normaliseOutages(%j) to [0, 10] = %j', (input, expected) => {
    expect(normaliseOutages(input, 0, 10)).toEqual(expected)
  })

  it('the summary: online shares per profile and a timeline that matches onlineAt', () => {
    const plans = fleetPlans('mixed', 21, 100, 5 * MINUTE)
    const s = summarizePlans(plans, 5 * MINUTE, 10_000)
    expect(s.devices).toBe(100)
    expect(s.byProfile.steady.devices).toBe(60)
    expect(s.byProfile.steady.onlineShare).toBeGreaterThan(0.99)
    expect(s.byProfile.steady.outages).toBe(0)
    expect(s.byProfile.flaky.onlineShare).toBeGreaterThan(0.75)
    expect(s.byProfile.flaky.onlineShare).toBeLessThan(0.98)
    expect(s.byProfile.intermittent.onlineShare).toBeCloseTo(1 / 3, 1)
    expect(s.onlineShare).toBeGreaterThan(0.7)
    expect(s.timeline).toHaveLength(30)
    for (const point of s.timeline) expect(point.online).toBe(plans.filter((p) => onlineAt(p, point.atMs)).length)
  })

  it.each<[string, () => unknown, RegExp]>([
    ['fleetSize 0', () => connectivityPlan('steady', 1, 0, 0, MINUTE), /fleetSize/],
    ['device out of range', () => connectivityPlan('steady', 1, 5, 5, MINUTE), /deviceIndex/],
    ['duration 0', () => connectivityPlan('steady', 1, 0, 5, 0), /durationMs/],
    ['window longer than its period', () => connectivityPlan('intermittent', 1, 0, 5, MINUTE, { windowOnMs: 5, windowPeriodMs: 5 }), /windowOnMs/],
    ['min outage above max', () => connectivityPlan('flaky', 1, 0, 5, MINUTE, { flakyMinOutageMs: 9, flakyMaxOutageMs: 5 }), /flakyMinOutageMs/],
  ])('refuses %s', (_name, call, message) => {
    expect(call).toThrow(message)
  })

  it('linkChanges: connect, then each outage as down and up, in time order', () => {
    expect(linkChanges({ profile: 'flaky', connectAtMs: 100, outages: [{ fromMs: 100, toMs: 900 }, { fromMs: 5000, toMs: 60_000 }] })).toEqual([
      { atMs: 100, change: 'connect' },
      { atMs: 100, change: 'down' },
      { atMs: 900, change: 'up' },
      { atMs: 5000, change: 'down' },
      { atMs: 60_000, change: 'up' },
    ])
    expect(linkChanges({ profile: 'steady', connectAtMs: 7, outages: [] })).toEqual([{ atMs: 7, change: 'connect' }])
  })

  it('isProfileChoice', () => {
    expect(['steady', 'flaky', 'intermittent', 'mixed', 'wild', ''].map(isProfileChoice)).toEqual([true, true, true, true, false, false])
  })
})
