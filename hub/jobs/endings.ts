import type { ExecRow, JobRow, TransitionFields } from './store.js'
import { tx, type Step } from './tx.js'
import { retryPlan, shouldAbort, type ExecState } from './decisions.js'
import { count, type FailedForGood, type StepEnv, type Tally } from './context.js'

/**
 * How executions end, and what an ending does to its job: the retry of a
 * failed attempt, the abort of a job whose failure rate passed its
 * threshold, the completion of a job with nothing left open. Every function
 * here is part of a job transaction, the caller's (tx.ts).
 */
export function createEndings({ logger, random }: Pick<StepEnv, 'logger' | 'random'>) {

  /** Cancels every execution in `from`; returns the devices that may hold one (to be told now if reachable, else when they come back). */
  function* cancelExecutions(job: JobRow, from: readonly ExecState[], now: number, source: string, detail: string): Step<Set<string>> {
    const notify = new Set<string>()
    const rows = yield* tx.execsIn(job.id, from[0]!, from[1] ?? from[0]!)
    for (const r of rows) {
      const held = r.state === 'in_progress' || r.delivered_at !== null
      // Not held now: a stop notice still owed for an earlier attempt (a timed-out run) stays owed.
      yield* tx.transition(r, 'canceled', now, source, detail, { ...(held ? { cancelAttempt: r.attempt } : {}), leaseUntil: null, finishedAt: now })
      if (held || r.cancel_notify > 0) notify.add(r.device_id)
    }
    return notify
  }

  /** After executions of the job ended: abort or complete it. Returns devices to tell about cancellations (an abort). */
  function* afterFinal(jobId: string, now: number, tally: Tally): Step<string[]> {
    const job = yield* tx.lockJob(jobId)
    if (!job || job.status !== 'active') return []
    let notify: string[] = []
    if (job.abort_min_finished !== null && job.abort_failure_pct !== null) {
      const verdict = shouldAbort(yield* tx.countsOf(jobId), { minFinished: job.abort_min_finished, failurePct: job.abort_failure_pct })
      if (verdict) {
        const reason = `failure rate ${verdict.pct.toFixed(1)}%: ${verdict.failed} of ${verdict.finished} finished executions failed, at or over the abort threshold of ${job.abort_failure_pct}%`
        notify = [...(yield* cancelExecutions(job, ['queued'], now, 'hub', `job aborted: ${reason}`))]
        yield* tx.setJobStatus(jobId, 'aborted', reason, now)
        count(tally, 'aborted')
        logger.warn({ jobId, ...verdict }, 'job aborted: failure rate reached its threshold; queued executions canceled')
        return notify
      }
    }
    // An index probe, not a count: this runs for every update that ends an execution.
    if (job.continuous === 0 && !(yield* tx.hasOpen(jobId))) {
      yield* tx.setJobStatus(jobId, 'completed', null, now)
      const c = yield* tx.countsOf(jobId)
      logger.info({ jobId, succeeded: c.succeeded, failed: c.failed + c.timed_out + c.rejected }, 'job completed')
    }
    return notify
  }

  /**
   * A final state for `row`, then a retry if its job allows one. A failure
   * with no retry left goes on `failed`, for the rules the caller hands them
   * to at the end of its write.
   */
  function* finish(tally: Tally, row: ExecRow, job: JobRow, to: ExecState, now: number, source: string, detail: string | null, f: TransitionFields, failed: FailedForGood[]): Step<ExecRow> {
    const done = yield* tx.transition(row, to, now, source, detail, f)
    const plan = job.status === 'active'
      ? retryPlan(to, done.attempt, { maxAttempts: job.max_attempts, backoffBaseMs: job.backoff_base_ms, backoffMaxMs: job.backoff_max_ms }, now, random)
      : undefined
    if (!plan) {
      if (to === 'failed' || to === 'timed_out') {
        const error = f.errorCode ? `${f.errorCode}: ${f.errorMessage ?? ''}` : null
        failed.push({ deviceId: row.device_id, jobId: job.id, name: job.name, outcome: to, attempt: done.attempt, error, causeRule: job.cause_rule })
      }
      return done
    }
    count(tally, 'retries')
    return yield* tx.transition(done, 'queued', now, 'hub', `retry ${done.attempt + 1} of ${job.max_attempts} after ${to}`, {
      attempt: done.attempt + 1, baseVersion: done.version + 1, deviceVersion: null, runAfter: plan.runAfter,
      deliveredAt: null, leaseUntil: null, startedAt: null, finishedAt: null, result: null,
    })
  }

  return { cancelExecutions, afterFinal, finish }
}

export type Endings = ReturnType<typeof createEndings>
