import { describe, expect, it } from 'vitest'
import { seededRandom } from '../common/clock.js'
import {
  EXEC_STATES, MOVES, canMove, decideUpdate, lapsedTo, leaseUntil, planBatch, retryPlan, rolloutBurst, rolloutRelease, shouldAbort,
  type ExecVersionState, type UpdateClaim,
} from '../hub/jobs/decisions.js'
import { checkJobSpec } from '../hub/jobs/spec.js'
import { formatTarget, parseTarget, targetIncludes } from '../hub/fleet/targets.js'

const base: ExecVersionState = { state: 'queued', attempt: 1, version: 1, baseVersion: 1, deviceVersion: null }

describe('decideUpdate', () => {
  const cases: Array<[string, ExecVersionState, UpdateClaim, string]> = [
    ['queued, first word: in_progress', base, { attempt: 1, version: 1, status: 'in_progress' }, 'apply:in_progress'],
    ['queued, straight to succeeded', base, { attempt: 1, version: 1, status: 'succeeded' }, 'apply:succeeded'],
    ['queued, device says expired', base, { attempt: 1, version: 1, status: 'expired' }, 'apply:expired'],
    ['in progress by the device, then succeeded', { ...base, state: 'in_progress', version: 2, deviceVersion: 2 }, { attempt: 1, version: 1, status: 'succeeded' }, 'apply:succeeded'],
    ['in progress replayed', { ...base, state: 'in_progress', version: 2, deviceVersion: 2 }, { attempt: 1, version: 1, status: 'in_progress' }, 'duplicate'],
    ['final replayed', { ...base, state: 'succeeded', version: 3, deviceVersion: 3 }, { attempt: 1, version: 1, status: 'succeeded' }, 'duplicate'],
    ['in progress replayed after final', { ...base, state: 'succeeded', version: 3, deviceVersion: 3 }, { attempt: 1, version: 1, status: 'in_progress' }, 'duplicate'],
    ['a second, different final', { ...base, state: 'succeeded', version: 3, deviceVersion: 3 }, { attempt: 1, version: 1, status: 'failed' }, 'stale'],
    ['canceled by the hub while queued', { ...base, state: 'canceled', version: 2 }, { attempt: 1, version: 1, status: 'in_progress' }, 'stale'],
    ['canceled by the hub while running', { ...base, state: 'canceled', version: 3, deviceVersion: 2 }, { attempt: 1, version: 1, status: 'succeeded' }, 'stale'],
    ['timed out by the sweeper', { ...base, state: 'timed_out', version: 3, deviceVersion: 2 }, { attempt: 1, version: 1, status: 'succeeded' }, 'stale'],
    ['older attempt after a retry', { ...base, attempt: 2, version: 4, baseVersion: 4 }, { attempt: 1, version: 1, status: 'succeeded' }, 'stale'],
    ['new attempt, first word', { ...base, attempt: 2, version: 4, baseVersion: 4 }, { attempt: 2, version: 4, status: 'in_progress' }, 'apply:in_progress'],
    ['right attempt, wrong base version', { ...base, attempt: 2, version: 4, baseVersion: 4 }, { attempt: 2, version: 3, status: 'in_progress' }, 'stale'],
  ]
  it.each(cases)('%s', (_name, exec, update, expected) => {
    const v = decideUpdate(exec, update)
    expect(v.verdict === 'apply' ? `apply:${v.to}` : v.verdict).toBe(expected)
  })
})

describe('retryPlan', () => {
  const policy = { maxAttempts: 3, backoffBaseMs: 1000, backoffMaxMs: 5000 }
  it.each([
    ['failed, attempts left', 'failed', 1, true],
    ['timed out, attempts left', 'timed_out', 2, true],
    ['failed on the last attempt', 'failed', 3, false],
    ['rejected is never retried', 'rejected', 1, false],
    ['expired is never retried', 'expired', 1, false],
    ['succeeded', 'succeeded', 1, false],
  ] as const)('%s', (_name, state, attempt, retried) => {
    expect(retryPlan(state, attempt, policy, 0, () => 0.5) !== undefined).toBe(retried)
  })

  it('waits base * 2^(attempt-1), capped, half of it jittered', () => {
    const random = seededRandom(7)
    for (const [attempt, ceiling] of [[1, 1000], [2, 2000], [3, 4000], [4, 5000], [9, 5000]] as const) {
      for (let i = 0; i < 50; i++) {
        const p = retryPlan('failed', attempt, { ...policy, maxAttempts: 10 }, 100, random)!
        expect(p.runAfter - 100).toBeGreaterThanOrEqual(ceiling / 2)
        expect(p.runAfter - 100).toBeLessThan(ceiling)
      }
    }
  })
})

describe('rolloutRelease', () => {
  it('allows a burst of one second\'s worth, then one per interval', () => {
    // 600/min: interval 100 ms, burst 10.
    expect(rolloutBurst(600)).toBe(10)
    const first = rolloutRelease(600, null, 0, 50)
    expect(first.granted).toBe(10)
    expect(rolloutRelease(600, first.tat, 0, 1).granted).toBe(0)
    expect(rolloutRelease(600, first.tat, 99, 1).granted).toBe(0)
    expect(rolloutRelease(600, first.tat, 100, 5).granted).toBe(1)
    expect(first.nextAt).toBe(100)
  })

  it('a slow rate releases one at a time', () => {
    expect(rolloutBurst(1)).toBe(1)
    const a = rolloutRelease(1, null, 0, 5)
    expect(a.granted).toBe(1)
    expect(rolloutRelease(1, a.tat, 59_999, 5).granted).toBe(0)
    expect(rolloutRelease(1, a.tat, 60_000, 5).granted).toBe(1)
  })

  it('never releases more than burst + rate * window in any window', () => {
    const rate = 120 // 2/s, burst 2
    const random = seededRandom(3)
    let tat: number | null = null
    const releases: number[] = []
    for (let now = 0; now < 60_000; now += Math.floor(random() * 300)) {
      const r = rolloutRelease(rate, tat, now, 1 + Math.floor(random() * 5))
      tat = r.tat
      for (let i = 0; i < r.granted; i++) releases.push(now)
    }
    for (const windowMs of [1000, 5000, 30_000]) {
      for (const start of releases) {
        const inWindow = releases.filter((t) => t >= start && t < start + windowMs).length
        expect(inWindow).toBeLessThanOrEqual(rolloutBurst(rate) + (windowMs * rate) / 60_000)
      }
    }
    expect(releases.length).toBeGreaterThan(100)
  })

  it('keeps its state in whole milliseconds when the interval is not one (3/s: 333.3 ms)', () => {
    let tat: number | null = null
    let released = 0
    for (let now = 0; now <= 10_000; now += 50) {
      const r = rolloutRelease(180, tat, now, 1)
      expect(Number.isInteger(r.tat)).toBe(true)
      tat = r.tat
      released += r.granted
    }
    // 10 s at 3/s plus a burst of 3, never more; rounding up may cost one.
    expect(released).toBeLessThanOrEqual(3 + 30)
    expect(released).toBeGreaterThanOrEqual(3 + 29)
  })

  it('an idle gap does not bank more than one burst', () => {
    const a = rolloutRelease(600, null, 0, 10)
    expect(rolloutRelease(600, a.tat, 3_600_000, 1000).granted).toBe(10)
  })
})

describe('shouldAbort', () => {
  const criteria = { minFinished: 10, failurePct: 20 }
  it.each([
    ['too few finished', { succeeded: 5, failed: 4 }, false],
    ['enough, under the threshold', { succeeded: 9, failed: 2 }, false],
    ['enough, at the threshold', { succeeded: 8, failed: 2 }, true],
    ['timed out and rejected count as failures', { succeeded: 8, timed_out: 1, rejected: 1 }, true],
    ['queued and in progress are not finished', { queued: 100, in_progress: 10, failed: 3, succeeded: 6 }, false],
    ['canceled and expired are not failures', { succeeded: 10, canceled: 50, expired: 50 }, false],
  ] as const)('%s', (_name, counts, aborts) => {
    expect(shouldAbort(counts, criteria) !== undefined).toBe(aborts)
  })
})

describe('leases', () => {
  it('in progress: timeout plus grace', () => {
    expect(leaseUntil('in_progress', 1000, 500, null, 100)).toBe(1600)
  })
  it('queued with an expiry: a full run past it; without: none', () => {
    expect(leaseUntil('queued', 1000, 500, 5000, 100)).toBe(5600)
    expect(leaseUntil('queued', 1000, 500, null, 100)).toBeNull()
  })
  it.each([['in_progress', 'timed_out'], ['queued', 'expired'], ['succeeded', undefined]] as const)('%s lapses to %s', (from, to) => {
    expect(lapsedTo(from)).toBe(to)
  })
})

describe('job targets', () => {
  it.each([
    ['all', { kind: 'all' }],
    ['group:lab', { kind: 'group', group: 'lab' }],
    ['device:dev-1', { kind: 'devices', ids: ['dev-1'] }],
    ['device:dev-1,dev-2,dev-1', { kind: 'devices', ids: ['dev-1', 'dev-2'] }],
  ])('%s', (text, target) => {
    expect(parseTarget(text)).toEqual(target)
  })
  it.each([['everyone', 'BAD_REQUEST'], ['group:Lab', 'BAD_REQUEST'], ['device:', 'BAD_REQUEST'], ['device:a/b', 'INVALID_DEVICE_ID']])('refuses %s', (text, code) => {
    expect(() => parseTarget(text)).toThrow(expect.objectContaining({ code }))
  })
  it('formats what it parses, and knows who a continuous job reaches', () => {
    expect(formatTarget(parseTarget('device:a-1,b-2'))).toBe('device:a-1,b-2')
    expect(targetIncludes(parseTarget('group:lab'), 'x-1', 'lab')).toBe(true)
    expect(targetIncludes(parseTarget('group:lab'), 'x-1', null)).toBe(false)
    expect(targetIncludes(parseTarget('all'), 'x-1', null)).toBe(true)
  })
})

describe('execution moves (MOVES)', () => {
  const finals = ['succeeded', 'failed', 'timed_out', 'rejected', 'canceled', 'expired'] as const
  it.each([
    ['queued', 'in_progress', true], ['queued', 'succeeded', true], ['queued', 'canceled', true], ['queued', 'expired', true],
    ['in_progress', 'timed_out', true], ['in_progress', 'failed', true], ['in_progress', 'canceled', true],
    ['failed', 'queued', true], ['timed_out', 'queued', true], ['canceled', 'queued', true], ['succeeded', 'queued', true],
    ['in_progress', 'queued', false], ['in_progress', 'in_progress', false], ['queued', 'queued', false],
    ['succeeded', 'failed', false], ['failed', 'in_progress', false], ['canceled', 'succeeded', false], ['expired', 'timed_out', false],
  ] as const)('%s -> %s: %s', (from, to, allowed) => {
    expect(canMove(from, to)).toBe(allowed)
  })

  it('leaves a final state only for a new attempt, and every state has somewhere to go', () => {
    for (const f of finals) expect(MOVES[f]).toEqual(['queued'])
    for (const s of EXEC_STATES) expect(MOVES[s].length).toBeGreaterThan(0)
  })
})

describe('planBatch', () => {
  interface Row { id: string; delivered_at: number | null; first_delivered_at: number | null; rate_per_min: number | null; payload: string }
  const row = (id: string, over: Partial<Row> = {}): Row => ({ id, delivered_at: null, first_delivered_at: null, rate_per_min: null, payload: '{}', ...over })
  const limits = { max: 10, redeliverBefore: 1000, budgetBytes: 10_000, usedBytes: 0, release: () => true }
  const ids = (r: { take: Row[]; more: boolean }) => ({ take: r.take.map((x) => x.id), more: r.more })

  it.each([
    ['nothing due', [], {}, { take: [], more: false }],
    ['all of them, under max', [row('a'), row('b')], {}, { take: ['a', 'b'], more: false }],
    ['stops at max and says more', [row('a'), row('b'), row('c')], { max: 2 }, { take: ['a', 'b'], more: true }],
    ['skips what this connection was sent', [row('a', { delivered_at: 1500 }), row('b', { delivered_at: 500 })], {}, { take: ['b'], more: false }],
    ['a skipped row does not count toward max', [row('a', { delivered_at: 1500 }), row('b'), row('c')], { max: 1 }, { take: ['b'], more: true }],
    ['stops at the byte budget and says more', [row('a', { payload: 'x'.repeat(600) }), row('b', { payload: 'x'.repeat(600) })], { budgetBytes: 1500 }, { take: ['a'], more: true }],
    ['always takes one, however large', [row('a', { payload: 'x'.repeat(5000) })], { budgetBytes: 1000 }, { take: ['a'], more: false }],
    ['counts the bytes already used (stop notices)', [row('a', { payload: 'x'.repeat(600) }), row('b')], { budgetBytes: 1500, usedBytes: 600 }, { take: ['a'], more: true }],
  ] as const)('%s', (_what, due, over, expected) => {
    expect(ids(planBatch(due as readonly Row[], { ...limits, ...over }))).toEqual(expected)
  })

  it('asks the pace only for first deliveries of paced jobs, and skips what it holds back', () => {
    const asked: string[] = []
    const due = [row('free'), row('paced1', { rate_per_min: 60 }), row('paced2', { rate_per_min: 60 }), row('again', { rate_per_min: 60, first_delivered_at: 5 })]
    const plan = planBatch(due, { ...limits, release: (r) => { asked.push(r.id); return r.id === 'paced1' } })
    expect(asked).toEqual(['paced1', 'paced2'])
    expect(ids(plan)).toEqual({ take: ['free', 'paced1', 'again'], more: false })
  })
})

describe('checkJobSpec', () => {
  const now = 1_000_000
  const ok = { name: 'echo', target: 'device:dev-1' }
  it('takes a minimal spec and gives its target and payload', () => {
    expect(checkJobSpec(ok, now)).toEqual({ target: { kind: 'devices', ids: ['dev-1'] }, payload: 'null' })
  })
  it.each([
    [{ name: 'Echo!' }, /job name "Echo!" must be a task name/],
    [{ priority: 1.5 }, /priority must be an integer from -1000 to 1000/],
    [{ maxAttempts: 0 }, /maxAttempts must be an integer from 1 to 100/],
    [{ timeoutMs: 0 }, /timeout must be from .* \(timeoutMs: 1 to/],
    [{ expiresAt: now }, /expiresAt must be a time in the future/],
    [{ ratePerMinute: 0 }, /the rollout rate must be more than 0/],
    [{ abortAfter: 5 }, /abort needs both abortAfter .* and abortAt/],
    [{ abortAfter: 5, abortAtPercent: 120 }, /abortAt must be a percentage more than 0 and at most 100/],
    [{ continuous: true }, /only group:NAME and all targets can be continuous/],
  ])('refuses %j: %s', (over, message) => {
    expect(() => checkJobSpec({ ...ok, ...over }, now)).toThrow(message)
  })
  it('refuses a payload nested too deep with TOO_DEEP', () => {
    let deep: unknown = 1
    for (let i = 0; i < 200; i++) deep = [deep]
    expect(() => checkJobSpec({ ...ok, payload: deep }, now)).toThrow(expect.objectContaining({ code: 'TOO_DEEP' }))
  })
})
