import { describe, expect, it } from 'vitest'
import { tallyDevice } from '../devices-sim/accounting.js'
import { simTimeline } from '../devices-sim/timeline.js'
import type { ChaosAction } from '../devices-sim/chaos.js'

/** The simulator's pure parts (issue #16): one device's account, and a run's timeline. */
describe('tallyDevice', () => {
  it.each([
    ['all stored, by the mark', { produced: 100, newestSeq: 100, dropped: 0, mark: 100 }, { stored: 100, lost: 0, duplicates: 0, hubAgrees: true }],
    ['the hub is behind: the rest is lost', { produced: 100, newestSeq: 100, dropped: 0, mark: 90 }, { stored: 90, lost: 10, duplicates: 0, hubAgrees: true }],
    ['dropped rows are neither stored nor lost', { produced: 100, newestSeq: 100, dropped: 5, mark: 100 }, { stored: 95, lost: 0, duplicates: 0, hubAgrees: true }],
    ['produced but never numbered: lost before the outbox', { produced: 103, newestSeq: 100, dropped: 0, mark: 100 }, { stored: 100, lost: 3, duplicates: 0, hubAgrees: true }],
    ['counted rows: a seq twice is a duplicate', { produced: 3, newestSeq: 3, dropped: 0, mark: 3, rows: { seqs: [1, 2, 2, 3], truncated: false } }, { stored: 3, lost: 0, duplicates: 1, hubAgrees: true }],
    ['counted rows short of the mark: the hub does not agree', { produced: 3, newestSeq: 3, dropped: 0, mark: 3, rows: { seqs: [1, 3], truncated: false } }, { stored: 2, lost: 1, duplicates: 0, hubAgrees: false }],
    ['a cut-short read does not agree', { produced: 2, newestSeq: 2, dropped: 0, mark: 2, rows: { seqs: [1, 2], truncated: true } }, { stored: 2, lost: 0, duplicates: 0, hubAgrees: false }],
  ] as const)('%s', (_what, input, expected) => {
    expect(tallyDevice(input)).toEqual(expected)
  })
})

describe('simTimeline', () => {
  const plan = (connectAtMs: number, outages: Array<[number, number]> = []) => ({ profile: 'steady' as const, connectAtMs, outages: outages.map(([fromMs, toMs]) => ({ fromMs, toMs })) })
  const chaos = (atMs: number, action: ChaosAction['action'], devices?: string[]): ChaosAction => ({ atMs, action, event: action, ...(devices ? { devices } : {}) })

  it('puts connects, outages and chaos in time order; ties keep devices before chaos, in fleet order', () => {
    const steps = simTimeline(
      [{ id: 'a', plan: plan(0, [[500, 900]]) }, { id: 'b', plan: plan(100) }],
      [chaos(500, 'hub-kill'), chaos(50, 'cut', ['b'])],
    )
    expect(steps.map((s) => `${s.atMs} ${s.kind}${'deviceId' in s ? ` ${s.deviceId}` : ` ${s.action.action}`}`)).toEqual([
      '0 connect a', '50 chaos cut', '100 connect b', '500 down a', '500 chaos hub-kill', '900 up a',
    ])
  })
})
