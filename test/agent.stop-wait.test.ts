import { describe, expect, it } from 'vitest'
import { isPromiseLike, JobError, thrownError } from '../agent/job-handlers.js'
import { IdleWaiters, waitAtMost } from '../agent/stop-wait.js'

/** What the job and the command runner share: stop's bounded wait, and how a handler's return or throw is read. */

describe('waitAtMost and IdleWaiters', () => {
  it('a wait ends when the promise does, or when the grace has passed on real time', async () => {
    // Ended by the promise, not by its minute of grace: half the grace tells them apart on any machine.
    let started = performance.now()
    await waitAtMost(Promise.resolve(), 60_000)
    expect(performance.now() - started).toBeLessThan(30_000)
    started = performance.now()
    await waitAtMost(new Promise<void>(() => {}), 30)
    expect(performance.now() - started).toBeGreaterThanOrEqual(25)
  })

  it('every wait resolves at wake(), and a wait begun after a wake waits for the next', async () => {
    const idle = new IdleWaiters()
    const order: string[] = []
    const a = idle.wait(10_000).then(() => { order.push('a') })
    const b = idle.wait(10_000).then(() => { order.push('b') })
    idle.wake()
    await Promise.all([a, b])
    expect(order.sort()).toEqual(['a', 'b'])
    const started = performance.now()
    await idle.wait(30)
    expect(performance.now() - started).toBeGreaterThanOrEqual(25)
  })
})

describe('thrownError', () => {
  it.each<[string, unknown, { code: string; message: string }]>([
    ['an Error without a code', new Error('boom'), { code: 'HANDLER_FAILED', message: 'boom' }],
    ['an Error with a valid code', Object.assign(new Error('full'), { code: 'DISK_FULL' }), { code: 'DISK_FULL', message: 'full' }],
    ['an Error with a code that is not one', Object.assign(new Error('x'), { code: 'lower' }), { code: 'HANDLER_FAILED', message: 'x' }],
    ['a JobError', new JobError('BAD_PAYLOAD', 'no'), { code: 'BAD_PAYLOAD', message: 'no' }],
    ['a string', 'plain', { code: 'HANDLER_FAILED', message: 'plain' }],
    ['null', null, { code: 'HANDLER_FAILED', message: 'null' }],
  ])('%s', (_name, thrown, expected) => {
    expect(thrownError(thrown)).toEqual(expected)
  })
})

describe('isPromiseLike', () => {
  it.each<[string, unknown, boolean]>([
    ['a promise', Promise.resolve(1), true],
    ['a thenable', { then: () => {} }, true],
    ['a plain object', { then: 1 }, false],
    ['null', null, false],
    ['a function', () => {}, false],
  ])('%s', (_name, value, expected) => {
    expect(isPromiseLike(value)).toBe(expected)
  })
})
