import { describe, expect, it } from 'vitest'
import { planAck, type AckWindow } from '../agent/sender.js'

/** The sender's window arithmetic on an ack (agent/sender.ts, planAck; issue #16). */
describe('planAck', () => {
  const w = (ackedUpTo: number, sentUpTo: number, inflight: number[]): AckWindow => ({ ackedUpTo, sentUpTo, inflight })

  it.each([
    ['a repeat changes nothing', w(10, 30, [20, 30]), 10, 100, { apply: false, clamped: false }],
    ['an overtaken ack changes nothing', w(20, 30, [30]), 15, 100, { apply: false, clamped: false }],
    ['covers the oldest batch', w(10, 30, [20, 30]), 20, 100, { apply: true, upTo: 20, clamped: false, released: 1, sentUpTo: 30 }],
    ['covers both batches', w(10, 30, [20, 30]), 30, 100, { apply: true, upTo: 30, clamped: false, released: 2, sentUpTo: 30 }],
    ['inside a batch: releases none', w(10, 30, [20, 30]), 15, 100, { apply: true, upTo: 15, clamped: false, released: 0, sentUpTo: 30 }],
    ['beyond what was sent (resent rows acked at once): sent follows', w(10, 10, []), 25, 100, { apply: true, upTo: 25, clamped: false, released: 0, sentUpTo: 25 }],
    ['beyond the newest seq: clamped to it', w(10, 30, [20, 30]), 500, 30, { apply: true, upTo: 30, clamped: true, released: 2, sentUpTo: 30 }],
    ['clamped to what is acked already: nothing to apply', w(30, 30, []), 500, 30, { apply: false, clamped: true }],
  ] as const)('%s', (_what, window, upTo, newest, plan) => {
    expect(planAck(window, upTo, newest)).toEqual(plan)
  })

  it('never releases more batches than are in flight, and keeps them in order', () => {
    for (let upTo = 11; upTo <= 60; upTo++) {
      const plan = planAck(w(10, 50, [20, 30, 40, 50]), upTo, 50)
      expect(plan.apply).toBe(true)
      if (!plan.apply) continue
      expect(plan.released).toBe([20, 30, 40, 50].filter((top) => top <= Math.min(upTo, 50)).length)
      expect(plan.upTo).toBe(Math.min(upTo, 50))
    }
  })
})
