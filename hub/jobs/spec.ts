import { formatDurationMs } from '../../common/duration.js'
import { RollcallError } from '../../common/errors.js'
import { isTaskName } from '../../protocol/ids.js'
import { boundJson, describeBounds } from '../../protocol/json-bounds.js'
import { LIMITS } from '../../protocol/limits.js'
import { parseTarget, type JobTarget } from '../fleet/targets.js'

/**
 * What a caller (API, CLI, schedule) asks for when it makes a job, and the
 * check of it: pure, so every refusal and its message is table-tested
 * without a hub (test/hub.job-spec.test.ts).
 */

/** Unset fields take the hub's defaults. */
export interface JobSpec {
  readonly name: string
  readonly payload?: unknown
  readonly target: string
  readonly priority?: number
  readonly timeoutMs?: number
  readonly expiresAt?: number
  readonly maxAttempts?: number
  readonly backoffBaseMs?: number
  readonly backoffMaxMs?: number
  /** New executions released per minute (rollout pace). */
  readonly ratePerMinute?: number
  /** Abort once at least `abortAfter` executions finished and `abortAtPercent`% of them failed. */
  readonly abortAfter?: number
  readonly abortAtPercent?: number
  /** Group and `all` jobs only: devices that join later get an execution too. */
  readonly continuous?: boolean
}

/** A job a rule's action made: its id (from the firing's, so a repeat after a restart is the same job) and its cause. */
export interface JobCause {
  readonly id: string
  readonly rule: string
  readonly firing: string
}

/** A job a schedule made: which schedule, and which of its ticks. */
export interface JobOrigin {
  readonly scheduleId: number
  readonly tick: number
}

/** Checks a spec at `now`; returns its parsed target and its payload as JSON, or throws what to fix. */
export function checkJobSpec(spec: JobSpec, now: number): { target: JobTarget; payload: string } {
  const bad = (msg: string) => new RollcallError('BAD_REQUEST', msg)
  if (!isTaskName(spec.name)) throw bad(`job name ${JSON.stringify(spec.name)} must be a task name: lowercase letters, digits, ".", "-" and "_", e.g. "echo" or "firmware.update"`)
  const target = parseTarget(spec.target)
  // Bounded before anything serialises it: a payload nested 200k deep would overflow the stack (H05).
  const bounded = boundJson(spec.payload ?? null, LIMITS.maxJobPayloadBytes)
  if (!bounded.ok) throw new RollcallError(bounded.limit === 'depth' ? 'TOO_DEEP' : 'PAYLOAD_TOO_LARGE', describeBounds('the job payload', bounded))
  const payload = bounded.json
  const intIn = (what: string, v: number | undefined, min: number, max: number) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) throw bad(`${what} must be an integer from ${min} to ${max}`)
  }
  // Durations are named as the API and CLI take them (timeout, --timeout), with the unit-carrying field after.
  const durationIn = (what: string, field: string, v: number | undefined, min: number, max: number) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
      throw bad(`${what} must be from ${formatDurationMs(min)} to ${formatDurationMs(max)} (${field}: ${min} to ${max})`)
    }
  }
  intIn('priority', spec.priority, -1000, 1000)
  durationIn('timeout', 'timeoutMs', spec.timeoutMs, 1, LIMITS.maxJobTimeoutMs)
  intIn('maxAttempts', spec.maxAttempts, 1, 100)
  durationIn('backoffBase', 'backoffBaseMs', spec.backoffBaseMs, 0, 86_400_000)
  durationIn('backoffMax', 'backoffMaxMs', spec.backoffMaxMs, 0, 7 * 86_400_000)
  intIn('abortAfter', spec.abortAfter, 1, 1_000_000)
  if (spec.expiresAt !== undefined && (!Number.isInteger(spec.expiresAt) || spec.expiresAt <= now)) throw bad('expiresAt must be a time in the future (ms since the epoch)')
  if (spec.ratePerMinute !== undefined && !(spec.ratePerMinute > 0 && spec.ratePerMinute <= 1_000_000)) throw bad('the rollout rate must be more than 0 and at most 1000000 per minute')
  if ((spec.abortAfter === undefined) !== (spec.abortAtPercent === undefined)) throw bad('abort needs both abortAfter (finished executions) and abortAt (failure percentage), e.g. abortAfter 10 and abortAt "20%"')
  if (spec.abortAtPercent !== undefined && !(spec.abortAtPercent > 0 && spec.abortAtPercent <= 100)) throw bad('abortAt must be a percentage more than 0 and at most 100, e.g. "20%"')
  if (spec.continuous && target.kind === 'devices') throw bad('only group:NAME and all targets can be continuous')
  return { target, payload }
}
