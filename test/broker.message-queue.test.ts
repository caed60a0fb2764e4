import { describe, expect, it } from 'vitest'
import { createMessageQueue, Fifo, oldestQueuedMs, queuedMessages, TimedFifo } from '../broker/message-queue.js'

/**
 * broker/message-queue.ts: aedes's routing queue with an O(1) dequeue
 * (issue #14: Array.prototype.shift() on a backlog of tens of thousands of
 * messages made a saturated hub's throughput collapse). What must hold is
 * what the arrays gave: first in, first out, nothing lost or repeated.
 */

describe('Fifo', () => {
  it('gives items back in the order they came, across refills, and undefined when empty', () => {
    const q = new Fifo<number>()
    expect(q.shift()).toBeUndefined()
    expect(q.push(1)).toBe(1)
    q.push(2)
    expect(q.shift()).toBe(1)
    q.push(3) // pushed while the output side still holds 2
    q.push(4)
    expect(q.length).toBe(3)
    expect([q.shift(), q.shift(), q.shift(), q.shift()]).toEqual([2, 3, 4, undefined])
    expect(q.length).toBe(0)
  })

  it('matches an array used as a queue over 100,000 random pushes and shifts', () => {
    const q = new Fifo<number>()
    const ref: number[] = []
    // A fixed linear congruential sequence: the same run every time.
    let seed = 12345
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
    let next = 0
    for (let i = 0; i < 100_000; i++) {
      if (rand() < 0.55) {
        q.push(next)
        ref.push(next++)
      } else {
        expect(q.shift()).toBe(ref.shift())
      }
      expect(q.length).toBe(ref.length)
    }
    while (ref.length > 0) expect(q.shift()).toBe(ref.shift())
    expect(q.shift()).toBeUndefined()
  })
})

describe('TimedFifo', () => {
  it("knows how long its oldest item has waited, across refills, and 0 when empty", () => {
    let now = 1000
    const q = new TimedFifo<string>(() => now)
    expect(q.oldestAgeMs()).toBe(0)
    q.push('a')
    now = 1010
    q.push('b')
    now = 1050
    expect(q.oldestAgeMs()).toBe(50) // a, in since 1000
    expect(q.peek()).toBe('a')
    expect(q.shift()).toBe('a') // the output side now holds b
    expect(q.oldestAgeMs()).toBe(40)
    now = 1060
    q.push('c') // pushed while b waits on the output side
    expect(q.oldestAgeMs()).toBe(50)
    expect(q.shift()).toBe('b')
    expect(q.oldestAgeMs()).toBe(0) // c, in since 1060
    now = 1100
    expect(q.oldestAgeMs()).toBe(40)
    expect(q.shift()).toBe('c')
    expect(q.oldestAgeMs()).toBe(0)
    expect(q.length).toBe(0)
  })
})

describe('createMessageQueue', () => {
  it('is an mqemitter whose backlog lives in a Fifo and drains in order, each message once', async () => {
    const mq = createMessageQueue(1)
    expect((mq as unknown as { _messageQueue: unknown })._messageQueue).toBeInstanceOf(Fifo)
    const got: number[] = []
    const held: Array<() => void> = []
    mq.on('devices/+/telemetry', (message, done) => {
      got.push((message as unknown as { n: number }).n)
      held.push(done)
    })
    await new Promise((r) => setImmediate(r))
    const emitted: number[] = []
    for (let n = 0; n < 20_000; n++) {
      mq.emit({ topic: `devices/d${n % 7}/telemetry`, n } as never, () => { emitted.push(n) })
    }
    // Concurrency 1 and the handler holding its callback: one delivered, the rest queued.
    expect(got).toEqual([0])
    expect(queuedMessages(mq)).toBe(19_999)
    // The backlog's age: the oldest waiting message came in at least this long ago.
    const t0 = performance.now()
    await new Promise((r) => setTimeout(r, 30))
    const waited = performance.now() - t0
    expect(oldestQueuedMs(mq)).toBeGreaterThanOrEqual(waited)
    while (held.length > 0) held.shift()!()
    expect(oldestQueuedMs(mq)).toBe(0)
    expect(got).toEqual(Array.from({ length: 20_000 }, (_, i) => i))
    expect(emitted).toEqual(got)
    expect(queuedMessages(mq)).toBe(0)
  })
})
