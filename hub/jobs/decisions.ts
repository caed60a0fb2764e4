import type { Random } from '../../common/clock.js'
import type { JobUpdateStatus } from '../../protocol/messages.js'

/**
 * The job decisions, apart from the SQL and MQTT around them (STYLE habit 5):
 * which execution updates apply, when a failed attempt is retried, how fast a
 * rollout may release new executions, when a job aborts, and when the sweeper
 * takes over a silent execution. Each is a pure function with a table test
 * (test/hub.job-rules.test.ts).
 *
 * An execution's states:
 *
 *   queued       waiting for its device; it may already be delivered (the
 *                device holds it in its local queue) but not reported started
 *   in_progress  the device reported it started this attempt
 *   succeeded | failed | timed_out | rejected | canceled | expired   final
 *
 *   queued      -> in_progress | any final   an update from the device
 *   in_progress -> final                     an update from the device
 *   queued | in_progress -> canceled         the job is canceled (or aborted: queued only)
 *   in_progress -> timed_out                 the sweeper: the lease lapsed
 *   queued      -> expired                   the sweeper: not started by expiresAt
 *   failed | timed_out -> queued (attempt+1) retry, while attempts remain
 *   any final   -> queued (attempt+1)        a continuous job's device is added again
 *
 * MOVES below is this table as data; the store refuses any other move.
 *
 * Every change bumps the execution's version. An attempt is delivered with
 * the version it was queued at (its base); the device echoes that base in
 * every update. An update applies when nothing but the device itself changed
 * the execution since: the version is still the base, or the last change was
 * the device's own update. Anything else (the hub canceled or timed it out, or
 * a newer attempt exists) makes the update stale, and it is refused.
 */

export const EXEC_STATES = ['queued', 'in_progress', 'succeeded', 'failed', 'timed_out', 'rejected', 'canceled', 'expired'] as const
export type ExecState = (typeof EXEC_STATES)[number]

export const FINAL_STATES: ReadonlySet<ExecState> = new Set(['succeeded', 'failed', 'timed_out', 'rejected', 'canceled', 'expired'])
/** What counts against a rollout's failure rate. */
export const FAILURE_STATES: ReadonlySet<ExecState> = new Set(['failed', 'timed_out', 'rejected'])
/** Final states that a retry may turn back into queued. */
const RETRYABLE: ReadonlySet<ExecState> = new Set(['failed', 'timed_out'])

const FINAL_LIST = ['succeeded', 'failed', 'timed_out', 'rejected', 'canceled', 'expired'] as const satisfies readonly ExecState[]
/** The moves an execution may make (the table in the header): a final state is left only for a new attempt. */
export const MOVES: Readonly<Record<ExecState, readonly ExecState[]>> = {
  queued: ['in_progress', ...FINAL_LIST],
  in_progress: FINAL_LIST,
  succeeded: ['queued'],
  failed: ['queued'],
  timed_out: ['queued'],
  rejected: ['queued'],
  canceled: ['queued'],
  expired: ['queued'],
}

export function canMove(from: ExecState, to: ExecState): boolean {
  return MOVES[from].includes(to)
}

export function isFinal(state: ExecState): boolean {
  return FINAL_STATES.has(state)
}

export interface ExecVersionState {
  readonly state: ExecState
  readonly attempt: number
  readonly version: number
  readonly baseVersion: number
  /** The version the device's last applied update produced, this attempt; null when none. */
  readonly deviceVersion: number | null
}

export interface UpdateClaim {
  readonly attempt: number
  readonly version: number
  readonly status: JobUpdateStatus
}

export type UpdateVerdict =
  | { readonly verdict: 'apply'; readonly to: ExecState }
  | { readonly verdict: 'duplicate' }
  | { readonly verdict: 'stale'; readonly why: string }

export function decideUpdate(exec: ExecVersionState, update: UpdateClaim): UpdateVerdict {
  if (update.attempt !== exec.attempt) {
    return { verdict: 'stale', why: `attempt ${update.attempt} was superseded by attempt ${exec.attempt}` }
  }
  if (update.version !== exec.baseVersion) {
    return { verdict: 'stale', why: `version ${update.version} is not this attempt's (${exec.baseVersion})` }
  }
  if (exec.version === exec.baseVersion) {
    // Untouched since queued: the device's first word on this attempt.
    if (exec.state !== 'queued') return { verdict: 'stale', why: `execution is ${exec.state}` }
    return { verdict: 'apply', to: update.status }
  }
  if (exec.deviceVersion !== null && exec.version === exec.deviceVersion) {
    // The last change was this device's own update: accept the next step, drop replays.
    if (exec.state === 'in_progress') {
      return update.status === 'in_progress' ? { verdict: 'duplicate' } : { verdict: 'apply', to: update.status }
    }
    if (update.status === 'in_progress' || update.status === exec.state) return { verdict: 'duplicate' }
    return { verdict: 'stale', why: `execution already ended ${exec.state}` }
  }
  return { verdict: 'stale', why: `execution is ${exec.state} (changed by the hub at version ${exec.version})` }
}

export interface RetryPolicy {
  readonly maxAttempts: number
  readonly backoffBaseMs: number
  readonly backoffMaxMs: number
}

/**
 * Whether a final state of attempt `attempt` is retried, and when. The wait
 * grows as base * 2^(attempt-1), capped, with half of it jittered so a fleet
 * that failed together does not retry together.
 */
export function retryPlan(state: ExecState, attempt: number, policy: RetryPolicy, now: number, random: Random): { runAfter: number } | undefined {
  if (!RETRYABLE.has(state) || attempt >= policy.maxAttempts) return undefined
  const ceiling = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** Math.min(attempt - 1, 30))
  return { runAfter: now + Math.floor(ceiling / 2 + random() * (ceiling / 2)) }
}

/**
 * Rollout pacing as a GCRA (generic cell rate algorithm, the leaky bucket as
 * a meter): new executions are released at `ratePerMinute`, with a burst of
 * one second's worth (at least 1). In any window of W ms at most
 * burst + W * ratePerMinute / 60000 are released. `tat` (theoretical arrival
 * time) is the whole state; it is stored with the job so a restart does not
 * reset the pace.
 */
export interface RolloutGrant {
  readonly granted: number
  readonly tat: number
  /** When the next release is allowed. */
  readonly nextAt: number
}

export function rolloutBurst(ratePerMinute: number): number {
  return Math.max(1, Math.floor(ratePerMinute / 60))
}

export function rolloutRelease(ratePerMinute: number, tat: number | null, now: number, wanted: number): RolloutGrant {
  const interval = 60_000 / ratePerMinute
  const tolerance = (rolloutBurst(ratePerMinute) - 1) * interval
  let t = Math.max(tat ?? now, now)
  let granted = 0
  while (granted < wanted && t - now <= tolerance) {
    t += interval
    granted++
  }
  // Stored as whole milliseconds: rounding up keeps the pace at or under the rate.
  const tatMs = Math.ceil(t)
  return { granted, tat: tatMs, nextAt: Math.max(now, Math.ceil(tatMs - tolerance)) }
}

export interface AbortCriteria {
  readonly minFinished: number
  readonly failurePct: number
}

/** Aborts when at least minFinished executions ended and failures reached failurePct of them. */
export function shouldAbort(counts: Partial<Record<ExecState, number>>, criteria: AbortCriteria): { finished: number; failed: number; pct: number } | undefined {
  let finished = 0
  let failed = 0
  for (const s of FINAL_STATES) {
    if (s === 'canceled' || s === 'expired') continue
    const n = counts[s] ?? 0
    finished += n
    if (FAILURE_STATES.has(s)) failed += n
  }
  if (finished === 0 || finished < criteria.minFinished) return undefined
  const pct = (failed * 100) / finished
  return pct >= criteria.failurePct ? { finished, failed, pct } : undefined
}

/**
 * The lease an execution holds, i.e. when the sweeper acts if nothing is
 * heard from the device:
 * - in progress: its timeout plus a grace for the result to travel;
 * - delivered but not reported started, with an expiresAt: the device may
 *   have started it offline just before expiry, so the sweeper waits a full
 *   run past expiresAt before calling it expired;
 * - otherwise none: a queued execution waits for its device as long as the
 *   job lives (jobs are for devices that come and go).
 */
export function leaseUntil(state: 'queued' | 'in_progress', now: number, timeoutMs: number, expiresAt: number | null, graceMs: number): number | null {
  if (state === 'in_progress') return now + timeoutMs + graceMs
  return expiresAt === null ? null : expiresAt + timeoutMs + graceMs
}

/** What the sweeper does with an execution whose lease lapsed. */
export function lapsedTo(state: ExecState): ExecState | undefined {
  if (state === 'in_progress') return 'timed_out'
  if (state === 'queued') return 'expired'
  return undefined
}

/** What planBatch reads of an execution due for its device. */
export interface BatchCandidate {
  /** When it was last sent to the device (null: never). */
  readonly delivered_at: number | null
  /** When any attempt of it was first sent (null: never): pacing counts first deliveries only. */
  readonly first_delivered_at: number | null
  /** Its job's rollout pace (null: not paced). */
  readonly rate_per_min: number | null
  /** Its job's payload as JSON. */
  readonly payload: string
}

export interface BatchLimits<C extends BatchCandidate> {
  /** What the device asked for. */
  readonly max: number
  /** Executions sent at or after this time are not sent again (the device has them on this connection). */
  readonly redeliverBefore: number
  /** Bytes the batch may hold, and those already taken (the stop notices riding along). */
  readonly budgetBytes: number
  readonly usedBytes: number
  /** Asks a paced job for one release; false: its pace allows none now (the execution waits, later ones may go). */
  readonly release: (candidate: C) => boolean
}

/** A batch's room for one execution besides its payload: ids, attempt, version, timeout, the JSON around them. */
export const EXECUTION_OVERHEAD_BYTES = 300

/**
 * Which of the due executions (in dispatch order) go in one jobs/batch, and
 * whether more are waiting. Skipped: those sent on this connection already,
 * and first deliveries of a paced job its pace holds back. The batch stops at
 * `max` or at the byte budget (always one, however large: the payload cap
 * bounds it), and says `more` when it stopped with executions left.
 */
export function planBatch<C extends BatchCandidate>(due: readonly C[], limits: BatchLimits<C>): { readonly take: C[]; readonly more: boolean } {
  const take: C[] = []
  let bytes = limits.usedBytes
  for (const c of due) {
    if (c.delivered_at !== null && c.delivered_at >= limits.redeliverBefore) continue
    if (take.length >= limits.max) return { take, more: true }
    if (c.rate_per_min !== null && c.first_delivered_at === null && !limits.release(c)) continue
    const size = Buffer.byteLength(c.payload) + EXECUTION_OVERHEAD_BYTES
    if (take.length > 0 && bytes + size > limits.budgetBytes) return { take, more: true }
    bytes += size
    take.push(c)
  }
  return { take, more: false }
}
