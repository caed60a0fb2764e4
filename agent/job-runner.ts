import type { ClockTimer } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { ExecRef } from '../protocol/messages.js'
import { isPromiseLike, JobError, thrownError, type HandlerHost, type HandlerRegistry, type JobContext } from './job-handlers.js'
import type { JobCompletion, RunOutcome } from './job-outcome.js'
import type { ClaimedJob, JobQueue } from './job-queue.js'
import type { OutcomeCode } from '../protocol/outcome-codes.js'
import { IdleWaiters } from './stop-wait.js'

/**
 * Runs queued jobs with a concurrency limit, online or offline.
 *
 * A run, from claim to completion:
 *   claimed  -> settled   the handler returned or threw; or its timeout fired
 *                         (timed_out, the AbortSignal fires); or the hub
 *                         canceled it (canceled, the AbortSignal fires)
 *   settled  -> recorded  completions settled in the same tick are committed
 *                         together (one queue.complete() on setImmediate),
 *                         then freed slots are filled by one claim
 *
 * A timed-out or canceled run is settled at once: the runner does not wait
 * for a handler that ignores its signal; whatever that handler returns later
 * is logged and dropped, and its slot is already free. A handler that throws,
 * or returns a value that is not JSON, fails its job and nothing else.
 *
 * stop(): no new claims; running jobs get up to `graceMs` to finish (their
 * completions are recorded); the ones still running after that are aborted
 * but left `running` in the ledger, so the next start reports them as failed
 * with INTERRUPTED (job-queue.ts) and the hub retries them if attempts remain.
 * Nothing is recorded as done that did not finish.
 */

export interface JobRunnerOptions extends HandlerHost {
  /** Jobs run at once (jobConcurrency). */
  readonly concurrency: number
  /** Called after completions or cancellations freed room in the queue. */
  readonly onRoom?: () => void
}

export interface JobRunnerStats {
  readonly active: number
  readonly started: number
  /** Results that arrived after their run had timed out or been canceled. */
  readonly lateResults: number
}

interface ActiveRun {
  readonly job: ClaimedJob
  readonly key: string
  readonly controller: AbortController
  timer: ClockTimer | undefined
  settled: boolean
}

const keyOf = (execId: string, attempt: number) => `${execId}\u0000${attempt}`

/** How a thrown value ends a job (see job-handlers.ts). */
export function completionFromError(job: Pick<ClaimedJob, 'execId' | 'attempt'>, err: unknown): JobCompletion {
  if (err instanceof JobError) {
    return { execId: job.execId, attempt: job.attempt, outcome: err.outcome, error: { code: err.code, message: err.message }, result: err.result }
  }
  return { execId: job.execId, attempt: job.attempt, outcome: 'failed', error: thrownError(err) }
}

export class JobRunner {
  private readonly queue: JobQueue
  private readonly handlers: HandlerRegistry
  private readonly options: JobRunnerOptions
  private readonly log: Logger
  private readonly active = new Map<string, ActiveRun>()
  private pending: JobCompletion[] = []
  private flushHandle: NodeJS.Immediate | undefined
  private running = false
  private stopped = false
  private readonly idleWaiters = new IdleWaiters()
  private started = 0
  private lateResults = 0
  private concurrency: number

  constructor(queue: JobQueue, handlers: HandlerRegistry, options: JobRunnerOptions) {
    this.queue = queue
    this.handlers = handlers
    this.options = options
    this.concurrency = options.concurrency
    this.log = options.logger.child({ component: 'job-runner' })
  }

  start(): void {
    if (this.running || this.stopped) return
    this.running = true
    this.kick()
  }

  /** A new limit (config reload): more slots are filled at once; with fewer, running jobs finish and no new ones start until below it. */
  setConcurrency(concurrency: number): void {
    this.concurrency = concurrency
    this.kick()
  }

  /** Fills free slots from the queue (call after enqueueing). */
  kick(): void {
    if (!this.running) return
    const free = this.concurrency - this.active.size
    if (free <= 0) return
    let jobs: ClaimedJob[]
    // Before the hub's time is known (an agent restarted offline), expiry is judged on the device's
    // own clock, which on a Pi may be hours off: the jobs it expires then are logged as such.
    const unsynced = this.options.clockSynced !== undefined && !this.options.clockSynced()
    const expiredBefore = unsynced ? this.queue.stats().outcomes.expired : 0
    try {
      jobs = this.queue.claim(free, this.options.clock.now())
    } catch (err) {
      this.log.error({ err }, 'could not claim jobs from the ledger')
      return
    }
    if (unsynced) {
      const expired = this.queue.stats().outcomes.expired - expiredBefore
      if (expired > 0) this.log.warn({ expired, now: this.options.clock.now() }, 'jobs expired by the device clock: the hub\'s time is not known (yet), and the device clock may be wrong')
    }
    for (const job of jobs) this.run(job)
  }

  /**
   * The hub canceled these: queued ones are dropped from the queue, running
   * ones are aborted and recorded as canceled.
   */
  cancel(refs: readonly ExecRef[]): void {
    if (refs.length === 0 || this.stopped) return
    let runningRefs: ExecRef[]
    try {
      runningRefs = this.queue.cancel(refs, this.options.clock.now())
    } catch (err) {
      this.log.error({ err }, 'could not cancel jobs in the ledger')
      return
    }
    for (const ref of runningRefs) {
      const run = this.active.get(keyOf(ref.execId, ref.attempt))
      if (run) this.settle(run, { execId: ref.execId, attempt: ref.attempt, outcome: 'canceled' }, 'canceled')
    }
    if (runningRefs.length < refs.length) this.options.onRoom?.()
  }

  get activeCount(): number {
    return this.active.size
  }

  stats(): JobRunnerStats {
    return { active: this.active.size, started: this.started, lateResults: this.lateResults }
  }

  /** See the header. Safe to call twice. */
  async stop(graceMs: number): Promise<void> {
    if (this.stopped) return
    this.running = false
    if (this.active.size > 0 && graceMs > 0) await this.idleWaiters.wait(graceMs)
    this.stopped = true
    if (this.flushHandle) clearImmediate(this.flushHandle)
    this.flushHandle = undefined
    this.flush()
    if (this.active.size > 0) {
      this.log.warn({ running: [...this.active.values()].map((r) => r.job.execId) }, 'stopping with jobs still running: they are aborted and will be reported as INTERRUPTED on the next start')
    }
    for (const run of this.active.values()) {
      run.settled = true
      this.options.clock.clearTimer(run.timer)
      run.controller.abort('shutdown')
    }
    this.active.clear()
  }

  private run(job: ClaimedJob): void {
    this.started++
    const controller = new AbortController()
    const run: ActiveRun = { job, key: keyOf(job.execId, job.attempt), controller, timer: undefined, settled: false }
    this.active.set(run.key, run)
    const handler = this.handlers.get(job.name)
    if (!handler) {
      this.settle(run, {
        execId: job.execId, attempt: job.attempt, outcome: 'rejected',
        error: { code: 'UNKNOWN_TASK' satisfies OutcomeCode, message: `this device has no handler for task ${JSON.stringify(job.name)}; it has: ${this.handlers.names.join(', ')}` },
      })
      return
    }
    run.timer = this.options.clock.setTimeout(() => {
      this.settle(run, {
        execId: job.execId, attempt: job.attempt, outcome: 'timed_out',
        error: { code: 'TIMEOUT' satisfies OutcomeCode, message: `no result within the job's timeout of ${job.timeoutMs} ms` },
      }, 'timeout')
    }, job.timeoutMs)
    const ctx = this.contextFor(job, controller.signal)
    let value: unknown
    try {
      value = handler(ctx)
    } catch (err) {
      this.settle(run, completionFromError(job, err))
      return
    }
    if (isPromiseLike(value)) {
      value.then(
        (result) => { this.settle(run, { execId: job.execId, attempt: job.attempt, outcome: 'succeeded', result }) },
        (err: unknown) => { this.settle(run, completionFromError(job, err)) },
      )
    } else {
      this.settle(run, { execId: job.execId, attempt: job.attempt, outcome: 'succeeded', result: value })
    }
  }

  private contextFor(job: ClaimedJob, signal: AbortSignal): JobContext {
    const base = this.options.logger
    const deviceId = this.options.deviceId
    let logger: Logger | undefined
    return {
      execId: job.execId,
      jobId: job.jobId,
      attempt: job.attempt,
      name: job.name,
      payload: job.payload,
      signal,
      deviceId,
      // A child logger per job costs more than a no-op job; made on first use.
      get logger() { return (logger ??= base.child({ execId: job.execId, task: job.name })) },
      sampleSensors: this.options.sampleSensors,
    }
  }

  private settle(run: ActiveRun, completion: JobCompletion, abortReason?: 'timeout' | 'canceled'): void {
    if (run.settled) {
      if (abortReason === undefined) {
        this.lateResults++
        this.log.info({ execId: run.job.execId, attempt: run.job.attempt, outcome: completion.outcome }, 'a job finished after it timed out or was canceled; its result is ignored')
      }
      return
    }
    run.settled = true
    this.options.clock.clearTimer(run.timer)
    this.active.delete(run.key)
    if (abortReason !== undefined) run.controller.abort(abortReason)
    if (completion.outcome !== 'succeeded') this.logEnd(run.job, completion.outcome, completion)
    this.pending.push(completion)
    this.flushHandle ??= setImmediate(() => {
      this.flushHandle = undefined
      this.flush()
      this.kick()
    })
    if (this.active.size === 0) this.idleWaiters.wake()
  }

  private logEnd(job: ClaimedJob, outcome: RunOutcome, completion: JobCompletion): void {
    const detail = { execId: job.execId, attempt: job.attempt, task: job.name, outcome, error: completion.error }
    if (outcome === 'canceled') this.log.info(detail, 'job canceled')
    else this.log.warn(detail, 'job did not succeed')
  }

  private flush(): void {
    if (this.pending.length === 0) return
    const batch = this.pending
    this.pending = []
    try {
      this.queue.complete(batch, this.options.clock.now())
    } catch (err) {
      // The rows stay `running`; the next start reports them as INTERRUPTED.
      this.log.error({ err, jobs: batch.length }, 'could not record job results in the ledger')
      return
    }
    this.options.onRoom?.()
  }
}
