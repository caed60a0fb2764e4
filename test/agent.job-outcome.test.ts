import { describe, expect, it } from 'vitest'
import {
  INTERRUPTED_MESSAGE, LOCAL_INTERRUPTED_MESSAGE, interruptedEnd, settleOutcome, updateBody,
  type JobCompletion, type JobEnd, type RunOutcome,
} from '../agent/job-outcome.js'
import { LIMITS } from '../protocol/limits.js'

const end = (outcome: RunOutcome, result?: unknown, error?: { code: string; message: string }): JobCompletion =>
  ({ execId: 'e1', attempt: 1, outcome, ...(result === undefined ? {} : { result }), ...(error === undefined ? {} : { error }) })

let deep: unknown = 1
for (let i = 0; i <= LIMITS.maxJsonDepth; i++) deep = [deep]
const big = 'x'.repeat(LIMITS.maxJobResultBytes)

describe('settleOutcome', () => {
  const cases: Array<[string, JobCompletion, string, string | undefined, string | undefined]> = [
    // name, completion, outcome, result JSON, error code
    ['success with a result', end('succeeded', { a: 1 }), 'succeeded', '{"a":1}', undefined],
    ['success without a result', end('succeeded'), 'succeeded', undefined, undefined],
    ['success with a result that is not JSON', end('succeeded', () => 1), 'failed', undefined, 'BAD_RESULT'],
    ['success with a result nested too deep', end('succeeded', deep), 'failed', undefined, 'BAD_RESULT'],
    ['success with a result too big', end('succeeded', big), 'succeeded', `{"truncated":true,"bytes":${big.length + 2}}`, undefined],
    ['failure with its own error and a bad result', end('failed', () => 1, { code: 'HANDLER_FAILED', message: 'boom' }), 'failed', undefined, 'HANDLER_FAILED'],
    ['failure without an error', end('failed'), 'failed', undefined, 'HANDLER_FAILED'],
    ['time-out without an error', end('timed_out'), 'timed_out', undefined, 'TIMEOUT'],
    ['rejection without an error', end('rejected'), 'rejected', undefined, 'HANDLER_FAILED'],
    ['an error code of a shape the wire refuses', end('failed', undefined, { code: 'not a code', message: 'x' }), 'failed', undefined, 'HANDLER_FAILED'],
    ['cancellation: its result is not kept, no error is made up', end('canceled', { a: 1 }), 'canceled', undefined, undefined],
  ]
  it.each(cases)('%s', (_name, completion, outcome, json, code) => {
    const s = settleOutcome(completion)
    expect(s.outcome).toBe(outcome)
    expect(s.json).toBe(json)
    expect(s.error?.code).toBe(code)
  })

  it('keeps the value the result text stands for, and cuts a long error message', () => {
    expect(settleOutcome(end('succeeded', { a: [1, 2] })).value).toEqual({ a: [1, 2] })
    const s = settleOutcome(end('failed', undefined, { code: 'HANDLER_FAILED', message: 'm'.repeat(LIMITS.maxJobErrorChars + 10) }))
    expect(s.error?.message).toHaveLength(LIMITS.maxJobErrorChars)
  })
})

describe('interruptedEnd', () => {
  it.each([
    ['hub', INTERRUPTED_MESSAGE],
    ['local', LOCAL_INTERRUPTED_MESSAGE],
  ] as const)('a %s job fails with INTERRUPTED', (source, message) => {
    expect(interruptedEnd(source)).toEqual({ outcome: 'failed', error: { code: 'INTERRUPTED', message } } satisfies JobEnd)
  })
})

describe('updateBody', () => {
  it.each([
    ['in progress', updateBody('e"1', 2, 3, 'in_progress', 1000, undefined, undefined, undefined), { execId: 'e"1', attempt: 2, version: 3, status: 'in_progress', startedAt: 1000 }],
    ['expired, never started', updateBody('e1', 1, 1, 'expired', undefined, 2000, undefined, undefined), { execId: 'e1', attempt: 1, version: 1, status: 'expired', finishedAt: 2000 }],
    ['succeeded with a result', updateBody('e1', 1, 1, 'succeeded', 1000, 2000, '{"a":1}', undefined), { execId: 'e1', attempt: 1, version: 1, status: 'succeeded', startedAt: 1000, finishedAt: 2000, result: { a: 1 } }],
    ['failed with an error', updateBody('e1', 1, 1, 'failed', 1000, 2000, undefined, { code: 'TIMEOUT', message: 'x' }), { execId: 'e1', attempt: 1, version: 1, status: 'failed', startedAt: 1000, finishedAt: 2000, error: { code: 'TIMEOUT', message: 'x' } }],
  ])('%s is the wire JobUpdate without its id', (_name, body, expected) => {
    expect(JSON.parse(body)).toStrictEqual(expected)
  })
})
