import { nestsDeeperThan } from '../protocol/json-bounds.js'
import { LIMITS } from '../protocol/limits.js'
import type { JobUpdateStatus } from '../protocol/messages.js'
import { isErrorCode, type OutcomeCode } from '../protocol/outcome-codes.js'

/**
 * What a job's end says, apart from the queue's SQL (STYLE habit 5): the
 * outcome a run settles to once its result and error are checked against the
 * wire's limits, the error an interrupted job ends with, and how the end is
 * reported: a hub job's as the text of the job update the device owes the
 * hub, a local job's as a LocalOutcome for a device event. Pure functions;
 * the queue (job-queue.ts) writes what they return in the transaction that
 * ends the job. Table test: test/agent.job-outcome.test.ts.
 */

export const JOB_OUTCOMES = ['succeeded', 'failed', 'timed_out', 'rejected', 'expired', 'canceled'] as const
export type JobOutcome = (typeof JOB_OUTCOMES)[number]

/** An outcome a run can end with (expired is decided by claim, never by a run). */
export type RunOutcome = Exclude<JobOutcome, 'expired'>

export interface JobErrorInfo {
  readonly code: string
  readonly message: string
}

/** Where a job came from: the hub (its end is a job update), or the agent's own cron schedules (a device event). */
export type JobSource = 'hub' | 'local'

/** A run's end, as the runner hands it to the queue. */
export interface JobCompletion {
  readonly execId: string
  readonly attempt: number
  readonly outcome: RunOutcome
  /** Any JSON value; undefined means none. Not JSON, or over LIMITS.maxJobResultBytes, is replaced by a note. */
  readonly result?: unknown
  readonly error?: JobErrorInfo
}

/** A local job's end, for the device event that reports it. */
export interface LocalOutcome {
  readonly execId: string
  /** The schedule that made it (a local job's jobId). */
  readonly schedule: string
  readonly task: string
  readonly outcome: JobOutcome
  readonly result?: unknown
  readonly error?: JobErrorInfo
  readonly startedAt?: number
  readonly finishedAt: number
}

/** How a job ends: its outcome, and the result (JSON text and the value it stands for) and error it reports. */
export interface JobEnd {
  readonly outcome: JobOutcome
  /** The result as JSON text for the update; undefined means none. */
  readonly json?: string
  /** The value `json` stands for, for a local job's event. */
  readonly value?: unknown
  readonly error?: JobErrorInfo
}

/** A queued job not started by its expires_at. */
export const EXPIRED_END: JobEnd = { outcome: 'expired' }

export const INTERRUPTED_MESSAGE = 'the agent stopped (crash, power cut or shutdown) while this job ran; it was not run again on this device, and the hub retries it if attempts remain'
/** The same for a local schedule's job: nothing retries those, the schedule's next tick is the next run. */
export const LOCAL_INTERRUPTED_MESSAGE = 'the agent stopped (crash, power cut or shutdown) while this local job ran; it was not run again, and local jobs are not retried: its schedule runs the task at its next tick'

/** A job left running when the ledger was opened (see "Interrupted jobs" in job-queue.ts). */
export function interruptedEnd(source: JobSource): JobEnd {
  return { outcome: 'failed', error: { code: 'INTERRUPTED' satisfies OutcomeCode, message: source === 'hub' ? INTERRUPTED_MESSAGE : LOCAL_INTERRUPTED_MESSAGE } }
}

/** Keeps an error within the wire's rules: a valid code and a message of at most LIMITS.maxJobErrorChars. */
export function sanitizeError(error: JobErrorInfo): JobErrorInfo {
  const code = isErrorCode(error.code) ? error.code : 'HANDLER_FAILED' satisfies OutcomeCode
  const message = typeof error.message === 'string' ? error.message : String(error.message)
  return { code, message: message.length > LIMITS.maxJobErrorChars ? message.slice(0, LIMITS.maxJobErrorChars) : message }
}

/**
 * A result as JSON text within LIMITS.maxJobResultBytes, with the value the
 * text stands for. A result that is not JSON fails the run (BAD_RESULT); one
 * too big is replaced by `{truncated: true, bytes: N}`.
 */
export function resultJson(result: unknown): { json: string; value: unknown } | { error: JobErrorInfo } {
  // The hub dead-letters a result nested past the limit (M19b); the update would never be acked.
  if (nestsDeeperThan(result, LIMITS.maxJsonDepth)) return { error: { code: 'BAD_RESULT' satisfies OutcomeCode, message: `the handler's result nests arrays and objects deeper than ${LIMITS.maxJsonDepth} levels` } }
  let json: string | undefined
  try {
    json = JSON.stringify(result)
  } catch (err) {
    return { error: { code: 'BAD_RESULT' satisfies OutcomeCode, message: `the handler's result is not JSON: ${(err as Error).message}` } }
  }
  if (json === undefined) return { error: { code: 'BAD_RESULT' satisfies OutcomeCode, message: 'the handler\'s result is not JSON (a function or symbol)' } }
  const bytes = json.length * 3 <= LIMITS.maxJobResultBytes ? json.length : Buffer.byteLength(json)
  if (bytes > LIMITS.maxJobResultBytes) {
    const value = { truncated: true, bytes }
    return { json: JSON.stringify(value), value }
  }
  return { json, value: result }
}

/**
 * What a run's end reports. The error is sanitized; a result that is not JSON
 * turns a success into a failure (BAD_RESULT) and is not kept; a canceled
 * run's result is not kept; an end other than success or cancellation always
 * carries an error (TIMEOUT or HANDLER_FAILED when the handler gave none).
 */
export function settleOutcome(c: JobCompletion): JobEnd {
  let outcome: JobOutcome = c.outcome
  let json: string | undefined
  let value: unknown
  let error = c.error === undefined ? undefined : sanitizeError(c.error)
  if (c.result !== undefined && outcome !== 'canceled') {
    const r = resultJson(c.result)
    if ('error' in r) {
      if (outcome === 'succeeded') outcome = 'failed'
      error ??= r.error
    } else {
      json = r.json
      value = r.value
    }
  }
  if (outcome !== 'succeeded' && outcome !== 'canceled' && error === undefined) {
    error = { code: outcome === 'timed_out' ? 'TIMEOUT' satisfies OutcomeCode : 'HANDLER_FAILED' satisfies OutcomeCode, message: `the job ended ${outcome}` }
  }
  return { outcome, json, value, error }
}

/** The text of a job update: the wire JobUpdate's JSON without `id` (the row id, known only after the insert). */
export function updateBody(execId: string, attempt: number, version: number, status: JobUpdateStatus, startedAt: number | undefined, finishedAt: number | undefined, result: string | undefined, error: JobErrorInfo | undefined): string {
  // Strings go through JSON.stringify; numbers need no escaping. The key order is the wire type's.
  let body = `{"execId":${JSON.stringify(execId)},"attempt":${attempt},"version":${version},"status":"${status}"`
  if (startedAt !== undefined) body += `,"startedAt":${startedAt}`
  if (finishedAt !== undefined) body += `,"finishedAt":${finishedAt}`
  if (result !== undefined) body += `,"result":${result}`
  if (error !== undefined) body += `,"error":${JSON.stringify(error)}`
  return body + '}'
}
