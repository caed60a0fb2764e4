import type { ExecRef, JobExecution, JobUpdateStatus } from '../protocol/messages.js'
import type { Ledger } from './ledger.js'
import { EXPIRED_END, interruptedEnd, settleOutcome, updateBody, type JobCompletion, type JobEnd, type JobOutcome, type JobSource, type LocalOutcome } from './job-outcome.js'
import { countJobs, prepareJobStatements, type JobStatements, type JobUpdateRow } from './job-store.js'

/**
 * The device's job queue: the `jobs` and `job_updates` tables of the ledger
 * (migration 2). Every job the agent will run is a row here first, and every
 * update it owes the hub is a row in `job_updates` until the hub's jobs.ack
 * names it (persist first, delete on the peer's ack).
 *
 * States of a row, keyed by (exec_id, attempt):
 *   queued  -> running   claim(): in one transaction with its `in_progress` update
 *   queued  -> done      expired (not started by expires_at; an `expired` update),
 *                        canceled by the hub (no update: the hub already knows),
 *                        superseded by a newer attempt of the same execution
 *                        (canceled, no update: the hub moved on)
 *   running -> done      complete(): the outcome, finished_at and the terminal
 *                        update commit in one transaction, and the attempt's
 *                        `in_progress` update is deleted if it was not sent yet
 *                        (the hub accepts queued -> terminal)
 *   done    -> (gone)    prune(): once its updates are all acked and it
 *                        finished more than a day ago (or past doneMaxRows)
 *
 * Done rows are the dedup record: enqueue is INSERT OR IGNORE by
 * (exec_id, attempt), so a re-delivered attempt is never run twice.
 *
 * Interrupted jobs (power cut, crash, or a stop that did not wait for them):
 * rows left `running` when the ledger is opened are not run again, because a
 * handler with effects may have done part of its work. recoverInterrupted()
 * turns each into done/`failed` with error INTERRUPTED and a terminal update,
 * in one transaction, and the hub decides: it retries the execution as a new
 * attempt if attempts remain. A local job is reported the same way but never
 * retried (its schedule's next tick is its next run), and its message says so.
 * Nothing is silently rerun and nothing is dropped.
 *
 * Job updates are never dropped by any overflow policy: the outbox bound does
 * not apply to this table, and the queue's own bound (`capacity`) only limits
 * what the puller asks for.
 *
 * Local jobs (source 'local', from the agent's own cron schedules) use the
 * same table and states but owe the hub no updates: their outcome is handed to
 * `onLocalOutcome` inside the same transaction, and the agent appends it to the
 * outbox as a device event there.
 *
 * Hot path: statements are prepared once; enqueue, claim and complete take
 * whole batches and write each batch in one transaction; the counts are
 * mirrored in memory so room() and stats() never run COUNT(*). The statements
 * are in job-store.ts; what a job's end reports is decided in job-outcome.ts.
 */

/** What enqueue takes: the wire's JobExecution (local jobs fill the same fields). */
export type JobInput = Pick<JobExecution, 'execId' | 'jobId' | 'name' | 'payload' | 'attempt' | 'version' | 'timeoutMs' | 'expiresAt' | 'priority'>

export interface ClaimedJob {
  readonly execId: string
  readonly attempt: number
  readonly jobId: string
  readonly name: string
  readonly payload: unknown
  readonly version: number
  readonly timeoutMs: number
  readonly priority: number
  readonly source: JobSource
  readonly startedAt: number
}

export interface JobQueueOptions {
  /** jobQueueMax: queued + running rows the puller may fill the queue up to. */
  readonly capacity: number
  /** Called inside the transaction that ends local jobs; throwing rolls it back. */
  readonly onLocalOutcome?: (outcomes: readonly LocalOutcome[]) => void
  /** Done rows older than this with every update acked are pruned (default 24 h). */
  readonly doneRetentionMs?: number
  /** At most this many done rows are kept, oldest pruned first (default 10,000). */
  readonly doneMaxRows?: number
}

export interface JobQueueStats {
  readonly capacity: number
  readonly queued: number
  readonly running: number
  readonly done: number
  readonly updatesPending: number
  /** Ends by outcome since this queue was opened. */
  readonly outcomes: Readonly<Record<JobOutcome, number>>
}

export type UpdateListener = () => void

interface RunningInfo {
  readonly rowid: number
  readonly jobId: string
  readonly name: string
  readonly version: number
  readonly source: JobSource
  readonly startedAt: number
  /** The id of its `in_progress` update row, if one was written. */
  readonly progressId: number | undefined
}

/** What ending a row needs of its job. */
type EndingJob = Pick<RunningInfo, 'rowid' | 'jobId' | 'name' | 'version' | 'source'>

const keyOf = (execId: string, attempt: number) => `${execId}\u0000${attempt}`

/** Owns the jobs and job_updates tables. Lives as long as its ledger. */
export class JobQueue {
  private readonly ledger: Ledger
  private readonly options: JobQueueOptions
  private readonly sql: JobStatements
  private readonly enqueueTx: (items: readonly JobInput[], now: number, source: JobSource) => number
  private readonly claimTx: (max: number, now: number) => ClaimedJob[]
  private readonly completeTx: (results: readonly JobCompletion[], now: number) => number
  private readonly cancelTx: (refs: readonly ExecRef[], now: number) => ExecRef[]
  private readonly recoverTx: (now: number) => number
  private readonly ackTx: (ids: readonly number[]) => number
  private readonly pruneTx: (now: number) => number
  private readonly listeners = new Set<UpdateListener>()
  private readonly running = new Map<string, RunningInfo>()
  private readonly outcomes: Record<JobOutcome, number> = { succeeded: 0, failed: 0, timed_out: 0, rejected: 0, expired: 0, canceled: 0 }
  private queued = 0
  private done = 0
  private updates = 0
  /** Updates written by the transaction in progress, to notify listeners after it commits. */
  private wrote = false
  private local: LocalOutcome[] = []

  constructor(ledger: Ledger, options: JobQueueOptions) {
    this.ledger = ledger
    this.options = options
    const db = ledger.db
    const sql = prepareJobStatements(db)
    this.sql = sql
    const counts = countJobs(db)
    this.queued = counts.queued
    this.done = counts.done
    this.updates = counts.updates

    this.enqueueTx = db.transaction((items: readonly JobInput[], now: number, source: JobSource) => {
      let inserted = 0
      for (const e of items) {
        const info = sql.insertJob.run(e.execId, e.attempt, e.jobId, e.name, JSON.stringify(e.payload ?? null), e.version, e.timeoutMs, e.expiresAt ?? null, e.priority, source, now)
        if (info.changes === 0) continue
        inserted++
        this.queued++
        // A first attempt has no older one to supersede (skipping the check halves an enqueue's cost).
        if (e.attempt === 1) continue
        const superseded = sql.supersede.run(now, e.execId, e.execId).changes
        if (superseded > 0) {
          this.queued -= superseded
          this.done += superseded
          this.outcomes.canceled += superseded
        }
      }
      return inserted
    })

    this.claimTx = db.transaction((max: number, now: number) => {
      const claimed: ClaimedJob[] = []
      // A queued attempt whose execution still runs an older one waits. At
      // most one attempt per execution is queued (newer ones supersede), so
      // at most runningExecs.size rows are skipped: asking for that many
      // more keeps the loop finite.
      const runningExecs = new Set<string>()
      for (const key of this.running.keys()) runningExecs.add(key.slice(0, key.indexOf('\u0000')))
      while (claimed.length < max) {
        const want = max - claimed.length
        const limit = want + runningExecs.size
        const rows = sql.selectQueued.all(limit)
        let taken = 0
        for (const r of rows) {
          if (taken === want) break
          if (runningExecs.has(r.exec_id)) continue
          taken++
          const source = r.source
          this.queued--
          if (r.expires_at !== null && r.expires_at < now) {
            this.finish(r.exec_id, r.attempt, { rowid: r.rowid, jobId: r.job_id, name: r.name, version: r.version, source }, undefined, now, EXPIRED_END)
            continue
          }
          sql.startJob.run(now, r.rowid)
          const progressId = source === 'hub'
            ? this.writeUpdate(r.exec_id, r.attempt, 'in_progress', updateBody(r.exec_id, r.attempt, r.version, 'in_progress', now, undefined, undefined, undefined))
            : undefined
          runningExecs.add(r.exec_id)
          this.running.set(keyOf(r.exec_id, r.attempt), { rowid: r.rowid, jobId: r.job_id, name: r.name, version: r.version, source, startedAt: now, progressId })
          claimed.push({
            execId: r.exec_id, attempt: r.attempt, jobId: r.job_id, name: r.name, payload: JSON.parse(r.payload) as unknown,
            version: r.version, timeoutMs: r.timeout_ms, priority: r.priority, source, startedAt: now,
          })
        }
        if (rows.length < limit || taken === 0) break
      }
      this.flushLocal()
      return claimed
    })

    this.completeTx = db.transaction((results: readonly JobCompletion[], now: number) => {
      let n = 0
      for (const c of results) {
        const key = keyOf(c.execId, c.attempt)
        const info = this.running.get(key)
        if (!info) continue
        this.running.delete(key)
        n++
        if (info.progressId !== undefined) this.updates -= sql.deleteUpdate.run(info.progressId).changes
        this.finish(c.execId, c.attempt, info, info.startedAt, now, settleOutcome(c))
      }
      this.flushLocal()
      return n
    })

    this.cancelTx = db.transaction((refs: readonly ExecRef[], now: number) => {
      const runningRefs: ExecRef[] = []
      for (const ref of refs) {
        if (this.running.has(keyOf(ref.execId, ref.attempt))) {
          runningRefs.push({ execId: ref.execId, attempt: ref.attempt })
          continue
        }
        const changes = sql.cancelQueued.run(now, ref.execId, ref.attempt).changes
        this.queued -= changes
        this.done += changes
        this.outcomes.canceled += changes
      }
      return runningRefs
    })

    this.recoverTx = db.transaction((now: number) => {
      let n = 0
      for (const r of sql.selectRunning.all()) {
        if (this.running.has(keyOf(r.exec_id, r.attempt))) continue
        n++
        const job = { rowid: r.rowid, jobId: r.job_id, name: r.name, version: r.version, source: r.source }
        this.finish(r.exec_id, r.attempt, job, r.started_at ?? undefined, now, interruptedEnd(r.source))
      }
      this.flushLocal()
      return n
    })

    this.ackTx = db.transaction((ids: readonly number[]) => {
      let n = 0
      for (const id of ids) n += sql.deleteUpdate.run(id).changes
      this.updates -= n
      return n
    })

    this.pruneTx = db.transaction((now: number) => {
      let n = sql.pruneOld.run(now - (this.options.doneRetentionMs ?? 86_400_000)).changes
      this.done -= n
      const excess = this.done - (this.options.doneMaxRows ?? 10_000)
      if (excess > 0) {
        const m = sql.pruneExcess.run(excess).changes
        this.done -= m
        n += m
      }
      return n
    })
  }

  /**
   * Stores executions in one transaction; an (execId, attempt) already held
   * (queued, running or done) is ignored. Returns how many were new.
   */
  enqueue(executions: readonly JobInput[], now: number, source: JobSource = 'hub'): number {
    if (executions.length === 0) return 0
    return this.guarded(() => this.enqueueTx(executions, now, source))
  }

  /**
   * Claims up to `max` queued jobs (priority, then arrival), in one
   * transaction with their in_progress updates. Expired ones are ended
   * instead and do not count toward `max`.
   */
  claim(max: number, now: number): ClaimedJob[] {
    if (max <= 0 || this.queued === 0) return []
    // Durable even when the ledger is NORMAL: a claim a power cut rolled back
    // would put a job that already started (and may have done its work) back in
    // the queue, to run again under the same attempt. One fsync per batch.
    return this.ledger.durably(() => this.guarded(() => this.claimTx(max, now)))
  }

  /** Ends running jobs, many in one transaction; a job that is not running is skipped. Returns how many ended. */
  complete(results: readonly JobCompletion[], now: number): number {
    if (results.length === 0) return 0
    return this.guarded(() => this.completeTx(results, now))
  }

  /** Cancels queued attempts (no update is written); returns the ones that are running, for the runner to abort. */
  cancel(refs: readonly ExecRef[], now: number): ExecRef[] {
    if (refs.length === 0) return []
    return this.guarded(() => this.cancelTx(refs, now))
  }

  /** On open: rows a previous run left `running` become failed/INTERRUPTED (see the header). Returns how many. */
  recoverInterrupted(now: number): number {
    return this.guarded(() => this.recoverTx(now))
  }

  /** Deletes done rows no longer needed for dedup (see the header). Returns how many. */
  prune(now: number): number {
    return this.guarded(() => this.pruneTx(now))
  }

  /** How many more jobs the queue takes before it is at capacity. */
  room(): number {
    return Math.max(0, this.options.capacity - this.queued - this.running.size)
  }

  isRunning(execId: string, attempt: number): boolean {
    return this.running.has(keyOf(execId, attempt))
  }

  /** Up to `limit` update rows with id > `afterId`, in id order. */
  readUpdatesAfter(afterId: number, limit: number): JobUpdateRow[] {
    return this.sql.selectUpdatesAfter.all(afterId, limit)
  }

  /** Deletes the named update rows (the hub has them); unknown ids are ignored. Returns how many were deleted. */
  ackUpdates(ids: readonly number[]): number {
    if (ids.length === 0) return 0
    return this.guarded(() => this.ackTx(ids))
  }

  /** Called (synchronously, after commit) whenever update rows were written. */
  onUpdate(listener: UpdateListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  stats(): JobQueueStats {
    return {
      capacity: this.options.capacity,
      queued: this.queued,
      running: this.running.size,
      done: this.done,
      updatesPending: this.updates,
      outcomes: { ...this.outcomes },
    }
  }

  /**
   * Inside a transaction: a queued or running row becomes done. A hub job
   * owes the hub its terminal update, except a cancellation (the hub canceled
   * it and already knows); a local job's outcome is handed on by flushLocal().
   */
  private finish(execId: string, attempt: number, job: EndingJob, startedAt: number | undefined, now: number, end: JobEnd): void {
    this.sql.finishRow.run(end.outcome, now, job.rowid)
    this.done++
    this.outcomes[end.outcome]++
    if (job.source === 'local') {
      this.local.push({ execId, schedule: job.jobId, task: job.name, outcome: end.outcome, result: end.value, error: end.error, startedAt, finishedAt: now })
    } else if (end.outcome !== 'canceled') {
      this.writeUpdate(execId, attempt, end.outcome, updateBody(execId, attempt, job.version, end.outcome, startedAt, now, end.json, end.error))
    }
  }

  private writeUpdate(execId: string, attempt: number, status: JobUpdateStatus, body: string): number {
    const id = Number(this.sql.insertUpdate.run(execId, attempt, status, body).lastInsertRowid)
    this.updates++
    this.wrote = true
    return id
  }

  private flushLocal(): void {
    if (this.local.length === 0) return
    const outcomes = this.local
    this.local = []
    this.options.onLocalOutcome?.(outcomes)
  }

  /**
   * Runs a transaction; if it rolls back, puts the in-memory mirror back the
   * way it was, so the counts never drift from the table. Notifies update
   * listeners after a commit that wrote updates.
   */
  private guarded<T>(tx: () => T): T {
    const saved = { queued: this.queued, done: this.done, updates: this.updates, outcomes: { ...this.outcomes }, running: new Map(this.running) }
    this.wrote = false
    this.local = []
    let value: T
    try {
      value = tx()
    } catch (err) {
      this.queued = saved.queued
      this.done = saved.done
      this.updates = saved.updates
      Object.assign(this.outcomes, saved.outcomes)
      this.running.clear()
      for (const [k, v] of saved.running) this.running.set(k, v)
      this.local = []
      throw err
    }
    if (this.wrote) {
      this.wrote = false
      for (const listener of this.listeners) listener()
    }
    return value
  }
}
