import type { Db } from '../../common/sqlite.js'
import { readJsonColumn } from '../storage/schema.js'
import { execIdOf } from '../../protocol/ids.js'
import { EXEC_STATES, canMove, type ExecState } from './decisions.js'
import { formatTarget, type JobTarget } from '../fleet/targets.js'

/**
 * The job store owns the jobs, executions and execution_history tables. It
 * holds SQL only: what to change is decided in decisions.ts and by the
 * dispatcher (jobs.ts), which also decides which transaction a call joins.
 * Every state change of an execution goes through `transition`, which bumps
 * the version and writes the history row, so the two cannot disagree.
 */

export const JOB_STATUSES = ['active', 'completed', 'canceled', 'aborted'] as const
export type JobStatus = (typeof JOB_STATUSES)[number]

export interface JobRow {
  id: string
  name: string
  payload: string
  target: string
  priority: number
  timeout_ms: number
  expires_at: number | null
  max_attempts: number
  backoff_base_ms: number
  backoff_max_ms: number
  rate_per_min: number | null
  rollout_tat: number | null
  abort_min_finished: number | null
  abort_failure_pct: number | null
  continuous: number
  status: JobStatus
  status_reason: string | null
  created_at: number
  finished_at: number | null
  schedule_id: number | null
  schedule_tick: number | null
  cause_rule: string | null
  cause_firing: string | null
}

export interface ExecRow {
  key: number
  job_id: string
  device_id: string
  priority: number
  state: ExecState
  attempt: number
  version: number
  base_version: number
  device_version: number | null
  run_after: number
  first_delivered_at: number | null
  delivered_at: number | null
  lease_until: number | null
  cancel_notify: number
  started_at: number | null
  finished_at: number | null
  result: string | null
  error_code: string | null
  error_message: string | null
  created_at: number
  updated_at: number
}

/** An execution joined with what delivering it needs from its job. */
export interface DueRow extends ExecRow {
  name: string
  payload: string
  timeout_ms: number
  expires_at: number | null
  rate_per_min: number | null
}

export type ExecCounts = Record<ExecState, number>

export interface JobView {
  readonly id: string
  readonly name: string
  readonly payload: unknown
  readonly target: string
  readonly priority: number
  readonly timeoutMs: number
  readonly expiresAt: number | null
  readonly maxAttempts: number
  readonly backoffBaseMs: number
  readonly backoffMaxMs: number
  readonly ratePerMinute: number | null
  readonly abort: { readonly afterFinished: number; readonly atPercent: number } | null
  readonly continuous: boolean
  readonly status: JobStatus
  readonly statusReason: string | null
  readonly createdAt: number
  readonly finishedAt: number | null
  readonly scheduleId: number | null
  /** The schedule tick (ms) that made this job. */
  readonly scheduleTick: number | null
  /** The rule firing that made this job (hub/rules/); null otherwise. */
  readonly cause: { readonly rule: string; readonly firing: string } | null
  readonly counts: ExecCounts
}

export interface FailedExecRow {
  job_id: string
  job_name: string
  state: 'failed' | 'timed_out'
  attempt: number
  finished_at: number
  error_code: string | null
  error_message: string | null
  cause_rule: string | null
}

export interface ExecutionView {
  readonly execId: string
  readonly jobId: string
  readonly deviceId: string
  readonly state: ExecState
  readonly attempt: number
  readonly version: number
  readonly runAfter: number
  readonly deliveredAt: number | null
  readonly startedAt: number | null
  readonly finishedAt: number | null
  readonly result: unknown
  readonly error: { readonly code: string; readonly message: string } | null
  readonly updatedAt: number
}

export interface HistoryView {
  readonly version: number
  readonly attempt: number
  readonly state: ExecState
  readonly at: number
  readonly source: string
  readonly detail: string | null
}

export interface NewJob {
  readonly id: string
  readonly name: string
  readonly payload: string
  readonly target: JobTarget
  readonly priority: number
  readonly timeoutMs: number
  readonly expiresAt: number | null
  readonly maxAttempts: number
  readonly backoffBaseMs: number
  readonly backoffMaxMs: number
  readonly ratePerMinute: number | null
  readonly abortMinFinished: number | null
  readonly abortFailurePct: number | null
  readonly continuous: boolean
  readonly createdAt: number
  readonly scheduleId: number | null
  readonly scheduleTick: number | null
  readonly causeRule: string | null
  readonly causeFiring: string | null
}

/** Columns a transition may set besides state and version. */
export interface TransitionFields {
  readonly attempt?: number
  readonly baseVersion?: number
  readonly deviceVersion?: number | null
  readonly runAfter?: number
  readonly deliveredAt?: number | null
  readonly leaseUntil?: number | null
  /** The attempt the device must be told to stop (0: none); kept through a retry, which has a newer attempt. */
  readonly cancelAttempt?: number
  readonly startedAt?: number | null
  readonly finishedAt?: number | null
  readonly result?: string | null
  readonly errorCode?: string | null
  readonly errorMessage?: string | null
}

/**
 * An execution after a transition (the one way it changes, on either
 * database): state, version + 1, the given columns. Throws if the move is not
 * one the table allows (decisions.ts, MOVES).
 */
export function nextRow(row: ExecRow, to: ExecState, now: number, f: TransitionFields = {}): ExecRow {
  if (!canMove(row.state, to)) throw new Error(`execution ${execIdOf(row.job_id, row.device_id)} cannot move from ${row.state} to ${to} (decisions.ts, MOVES)`)
  return {
    ...row,
    state: to,
    version: row.version + 1,
    attempt: f.attempt ?? row.attempt,
    base_version: f.baseVersion ?? row.base_version,
    device_version: f.deviceVersion !== undefined ? f.deviceVersion : row.device_version,
    run_after: f.runAfter ?? row.run_after,
    delivered_at: f.deliveredAt !== undefined ? f.deliveredAt : row.delivered_at,
    lease_until: f.leaseUntil !== undefined ? f.leaseUntil : row.lease_until,
    cancel_notify: f.cancelAttempt ?? row.cancel_notify,
    started_at: f.startedAt !== undefined ? f.startedAt : row.started_at,
    finished_at: f.finishedAt !== undefined ? f.finishedAt : row.finished_at,
    result: f.result !== undefined ? f.result : row.result,
    error_code: f.errorCode !== undefined ? f.errorCode : row.error_code,
    error_message: f.errorMessage !== undefined ? f.errorMessage : row.error_message,
    updated_at: now,
  }
}

/** A job as the API shows it, with its executions counted by state. */
export function toJobView(r: JobRow, counts: ExecCounts): JobView {
  return {
    id: r.id, name: r.name, payload: readJsonColumn(r.payload), target: r.target, priority: r.priority,
    timeoutMs: r.timeout_ms, expiresAt: r.expires_at, maxAttempts: r.max_attempts,
    backoffBaseMs: r.backoff_base_ms, backoffMaxMs: r.backoff_max_ms, ratePerMinute: r.rate_per_min,
    abort: r.abort_min_finished === null || r.abort_failure_pct === null ? null : { afterFinished: r.abort_min_finished, atPercent: r.abort_failure_pct },
    continuous: r.continuous === 1, status: r.status, statusReason: r.status_reason, createdAt: r.created_at,
    finishedAt: r.finished_at, scheduleId: r.schedule_id, scheduleTick: r.schedule_tick,
    cause: r.cause_rule === null || r.cause_firing === null ? null : { rule: r.cause_rule, firing: r.cause_firing }, counts,
  }
}

/** An execution as the API shows it. */
export function execView(r: ExecRow): ExecutionView {
  return {
    execId: execIdOf(r.job_id, r.device_id), jobId: r.job_id, deviceId: r.device_id, state: r.state, attempt: r.attempt,
    version: r.version, runAfter: r.run_after, deliveredAt: r.delivered_at, startedAt: r.started_at, finishedAt: r.finished_at,
    result: readJsonColumn(r.result), error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? '' },
    updatedAt: r.updated_at,
  }
}

export function emptyCounts(): ExecCounts {
  return Object.fromEntries(EXEC_STATES.map((s) => [s, 0])) as ExecCounts
}

export function createJobStore(db: Db) {
  const s = {
    insertJob: db.prepare(`INSERT INTO jobs (id, name, payload, target, priority, timeout_ms, expires_at, max_attempts, backoff_base_ms, backoff_max_ms,
      rate_per_min, rollout_tat, abort_min_finished, abort_failure_pct, continuous, status, status_reason, created_at, finished_at, schedule_id, schedule_tick, cause_rule, cause_firing)
      VALUES (@id, @name, @payload, @target, @priority, @timeoutMs, @expiresAt, @maxAttempts, @backoffBaseMs, @backoffMaxMs,
      @ratePerMinute, NULL, @abortMinFinished, @abortFailurePct, @continuous, 'active', NULL, @createdAt, NULL, @scheduleId, @scheduleTick, @causeRule, @causeFiring)`),
    insertExec: db.prepare<[string, string, number, number, number, number]>(`INSERT OR IGNORE INTO executions
      (job_id, device_id, priority, state, attempt, version, base_version, run_after, created_at, updated_at)
      VALUES (?, ?, ?, 'queued', 1, 1, 1, ?, ?, ?)`),
    insertHistory: db.prepare<[number, number, number, string, number, string, string | null]>(
      'INSERT INTO execution_history (exec_key, version, attempt, state, at, source, detail) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    getJob: db.prepare<[string], JobRow>('SELECT * FROM jobs WHERE id = ?'),
    paceOf: db.prepare<[string], number | null>('SELECT rollout_tat FROM jobs WHERE id = ?').pluck(),
    pacedDue: db.prepare<[string, number], string>(`SELECT DISTINCT e.job_id FROM executions e JOIN jobs j ON j.id = e.job_id
      WHERE e.device_id = ? AND e.state = 'queued' AND e.run_after <= ? AND j.status = 'active' AND j.rate_per_min IS NOT NULL AND e.first_delivered_at IS NULL
      ORDER BY e.job_id`).pluck(),
    // Newest first; the cursor is the last job of the previous page, so jobs made in the same millisecond are not skipped.
    listJobs: db.prepare<[{ status: string | null; beforeAt: number; beforeId: string; limit: number }], JobRow>(
      'SELECT * FROM jobs WHERE (@status IS NULL OR status = @status) AND (created_at, id) < (@beforeAt, @beforeId) ORDER BY created_at DESC, id DESC LIMIT @limit'),
    activeContinuous: db.prepare<[], JobRow>("SELECT * FROM jobs WHERE status = 'active' AND continuous = 1"),
    activePaced: db.prepare<[], JobRow>("SELECT * FROM jobs WHERE status = 'active' AND rate_per_min IS NOT NULL"),
    setJobStatus: db.prepare<[JobStatus, string | null, number | null, string]>('UPDATE jobs SET status = ?, status_reason = ?, finished_at = ? WHERE id = ?'),
    setTat: db.prepare<[number, string]>('UPDATE jobs SET rollout_tat = ? WHERE id = ?'),
    counts: db.prepare<[string], { state: ExecState; n: number }>('SELECT state, count(*) AS n FROM executions WHERE job_id = ? GROUP BY state'),
    getExec: db.prepare<[string, string], ExecRow>('SELECT * FROM executions WHERE job_id = ? AND device_id = ?'),
    getExecByKey: db.prepare<[number], ExecRow>('SELECT * FROM executions WHERE key = ?'),
    // By device id, which pages on the (job_id, device_id) key.
    listExecs: db.prepare<[{ jobId: string; state: string | null; after: string; limit: number }], ExecRow>(
      'SELECT * FROM executions WHERE job_id = @jobId AND (@state IS NULL OR state = @state) AND device_id > @after ORDER BY device_id LIMIT @limit'),
    execsInStates: db.prepare<[string, string, string], ExecRow>('SELECT * FROM executions WHERE job_id = ? AND state IN (?, ?)'),
    due: db.prepare<[string, number, number], DueRow>(`SELECT e.*, j.name, j.payload, j.timeout_ms, j.expires_at, j.rate_per_min
      FROM executions e JOIN jobs j ON j.id = e.job_id
      WHERE e.device_id = ? AND e.state = 'queued' AND e.run_after <= ? AND j.status = 'active'
      ORDER BY e.priority DESC, e.key LIMIT ?`),
    hasDue: db.prepare<[string, number], number>(`SELECT 1 FROM executions e JOIN jobs j ON j.id = e.job_id
      WHERE e.device_id = ? AND e.state = 'queued' AND e.run_after <= ? AND j.status = 'active' LIMIT 1`).pluck(),
    markDelivered: db.prepare<[{ now: number; lease: number | null; key: number }]>(
      'UPDATE executions SET delivered_at = @now, first_delivered_at = coalesce(first_delivered_at, @now), lease_until = @lease, updated_at = @now WHERE key = @key'),
    pendingCancels: db.prepare<[string, number], { key: number; job_id: string; attempt: number }>(
      'SELECT key, job_id, cancel_notify AS attempt FROM executions WHERE device_id = ? AND cancel_notify > 0 LIMIT ?'),
    clearCancel: db.prepare<[number]>('UPDATE executions SET cancel_notify = 0 WHERE key = ?'),
    lapsed: db.prepare<[number, number], ExecRow>(
      "SELECT * FROM executions WHERE state IN ('queued', 'in_progress') AND lease_until IS NOT NULL AND lease_until < ? LIMIT ?"),
    // Driven from the active jobs that have expired, then their undelivered executions.
    expiredUndelivered: db.prepare<[number, number], ExecRow>(`SELECT e.* FROM jobs j JOIN executions e ON e.job_id = j.id
      WHERE j.status = 'active' AND j.expires_at IS NOT NULL AND j.expires_at < ? AND e.state = 'queued' AND e.delivered_at IS NULL LIMIT ?`),
    becameDue: db.prepare<[number, number], { device_id: string }>(
      "SELECT DISTINCT device_id FROM executions WHERE state = 'queued' AND delivered_at IS NULL AND run_after > ? AND run_after <= ?"),
    // A job's executions all share its priority, so key order is its rollout order.
    undeliveredAfter: db.prepare<[string, number, number, number], { key: number; device_id: string }>(
      `SELECT key, device_id FROM executions WHERE job_id = ? AND state = 'queued' AND delivered_at IS NULL AND run_after <= ? AND key > ?
      ORDER BY key LIMIT ?`),
    activeStates: db.prepare<[], { state: ExecState; n: number }>(
      "SELECT e.state, count(*) AS n FROM jobs j JOIN executions e ON e.job_id = j.id WHERE j.status = 'active' GROUP BY e.state"),
    hasOpen: db.prepare<[string], number>("SELECT 1 FROM executions WHERE job_id = ? AND state IN ('queued', 'in_progress') LIMIT 1").pluck(),
    openOfDevice: db.prepare<[string], ExecRow>("SELECT * FROM executions WHERE device_id = ? AND state IN ('queued', 'in_progress')"),
    failedOfDevice: db.prepare<[string, number, number, number], FailedExecRow>(
      `SELECT e.job_id, j.name AS job_name, e.state, e.attempt, e.finished_at, e.error_code, e.error_message, j.cause_rule
       FROM executions e JOIN jobs j ON j.id = e.job_id
       WHERE e.device_id = ? AND e.state IN ('failed', 'timed_out') AND e.finished_at >= ? AND e.finished_at < ? ORDER BY e.finished_at LIMIT ?`),
    recentOfDevice: db.prepare<[string, number], ExecRow & { job_name: string }>(
      'SELECT e.*, j.name AS job_name FROM executions e JOIN jobs j ON j.id = e.job_id WHERE e.device_id = ? ORDER BY e.key DESC LIMIT ?'),
    // Executions and their history go with the job (ON DELETE CASCADE).
    pruneFinished: db.prepare<[number, number]>(
      "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status != 'active' AND finished_at < ? ORDER BY finished_at LIMIT ?)"),
    history: db.prepare<[number], { version: number; attempt: number; state: ExecState; at: number; source: string; detail: string | null }>(
      'SELECT version, attempt, state, at, source, detail FROM execution_history WHERE exec_key = ? ORDER BY version'),
  }

  const update = db.prepare(`UPDATE executions SET state = @state, version = @version, attempt = @attempt, base_version = @baseVersion,
    device_version = @deviceVersion, run_after = @runAfter, delivered_at = @deliveredAt, lease_until = @leaseUntil, cancel_notify = @cancelNotify,
    started_at = @startedAt, finished_at = @finishedAt, result = @result, error_code = @errorCode, error_message = @errorMessage, updated_at = @now
    WHERE key = @key AND version = @expected`)

  function countsOf(jobId: string): ExecCounts {
    const c = emptyCounts()
    for (const r of s.counts.all(jobId)) c[r.state] = r.n
    return c
  }


  // Counts every change to jobs and executions (a rolled-back one too, which only costs a reader a re-read):
  // the live feed re-reads the job list only when it moved.
  let version = 0

  return {
    /** A number that changes whenever a job or an execution may have changed. */
    version: (): number => version,
    /** Inserts the job; false when its (schedule, tick) already made one. */
    insertJob(job: NewJob): boolean {
      try {
        s.insertJob.run({ ...job, target: formatTarget(job.target), continuous: job.continuous ? 1 : 0 })
        version++
        return true
      } catch (err) {
        const code = (err as { code?: string }).code
        // A schedule's tick, or a rule's action, that made its job already (a double fire, a restart).
        if (code === 'SQLITE_CONSTRAINT_UNIQUE' && job.scheduleId !== null) return false
        if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' && job.causeFiring !== null) return false
        throw err
      }
    },

    /** New queued executions (attempt 1, version 1); devices that already have one for this job are skipped. Returns the devices added. */
    addExecutions(jobId: string, deviceIds: readonly string[], priority: number, now: number): string[] {
      const added: string[] = []
      for (const id of deviceIds) {
        const info = s.insertExec.run(jobId, id, priority, now, now, now)
        if (info.changes === 0) continue
        s.insertHistory.run(Number(info.lastInsertRowid), 1, 1, 'queued', now, 'hub', null)
        added.push(id)
      }
      if (added.length > 0) version++
      return added
    },

    getJob: (id: string): JobRow | undefined => s.getJob.get(id),
    /** The job, read to decide its end (abort, completion): on PostgreSQL its row is locked, so hubs ending its last executions at once take turns. */
    lockJob: (id: string): JobRow | undefined => s.getJob.get(id),
    /** Jobs older than the cursor `before` (a job's createdAt and id; omit for the newest), newest first. */
    listJobs: (status: JobStatus | null, limit: number, before?: { createdAt: number; id: string }): JobRow[] =>
      s.listJobs.all({ status, beforeAt: before?.createdAt ?? Number.MAX_SAFE_INTEGER, beforeId: before?.id ?? '', limit }),
    activeContinuous: (): JobRow[] => s.activeContinuous.all(),
    activePaced: (): JobRow[] => s.activePaced.all(),
    setJobStatus(id: string, status: JobStatus, reason: string | null, finishedAt: number | null): void {
      s.setJobStatus.run(status, reason, finishedAt, id)
      version++
    },
    /** A paced job's pace (its theoretical arrival time), null before its first release or when it has none. */
    paceOf: (jobId: string): number | null => s.paceOf.get(jobId) ?? null,
    /** The paced jobs with an execution due for the device that was never delivered (what a pull may release), by id. */
    pacedDue: (deviceId: string, now: number): string[] => s.pacedDue.all(deviceId, now),
    setTat(jobId: string, tat: number): void {
      s.setTat.run(tat, jobId)
    },
    countsOf,
    getExec: (jobId: string, deviceId: string): ExecRow | undefined => s.getExec.get(jobId, deviceId),
    /** An execution, read to show it (on PostgreSQL: without a lock). */
    readExec: (jobId: string, deviceId: string): ExecRow | undefined => s.getExec.get(jobId, deviceId),
    getExecByKey: (key: number): ExecRow | undefined => s.getExecByKey.get(key),
    /** A job's executions by device id, after `afterDevice` ('' for the first page). */
    listExecs: (jobId: string, state: ExecState | null, afterDevice: string, limit: number): ExecRow[] => s.listExecs.all({ jobId, state, after: afterDevice, limit }),
    /** Executions of a job in either of two states (what cancel and abort act on). */
    execsIn: (jobId: string, a: ExecState, b: ExecState): ExecRow[] => s.execsInStates.all(jobId, a, b),
    due: (deviceId: string, now: number, limit: number): DueRow[] => s.due.all(deviceId, now, limit),
    hasDue: (deviceId: string, now: number): boolean => s.hasDue.get(deviceId, now) !== undefined,
    markDelivered(key: number, now: number, leaseUntil: number | null): void {
      s.markDelivered.run({ now, lease: leaseUntil, key })
    },
    pendingCancels: (deviceId: string, limit: number) => s.pendingCancels.all(deviceId, limit),
    clearCancel(key: number): void {
      s.clearCancel.run(key)
    },
    lapsed: (now: number, limit: number): ExecRow[] => s.lapsed.all(now, limit),
    expiredUndelivered: (now: number, limit: number): ExecRow[] => s.expiredUndelivered.all(now, limit),
    /** Devices with an undelivered execution whose retry wait ended in (since, now]. */
    becameDue: (since: number, now: number): string[] => s.becameDue.all(since, now).map((r) => r.device_id),
    /** Undelivered, due executions of a job with key > afterKey, in rollout order. */
    undeliveredAfter: (jobId: string, now: number, afterKey: number, limit: number) => s.undeliveredAfter.all(jobId, now, afterKey, limit),
    /** Executions of the jobs still active, by state (one grouped query; for the metrics scrape). */
    activeStateCounts(): ExecCounts {
      const c = emptyCounts()
      for (const r of s.activeStates.all()) c[r.state] = r.n
      return c
    },
    /** Whether any execution of the job is still queued or in progress. */
    hasOpen: (jobId: string): boolean => s.hasOpen.get(jobId) !== undefined,
    /** A device's executions that are still queued or in progress, of any job. */
    openOfDevice: (deviceId: string): ExecRow[] => s.openOfDevice.all(deviceId),
    /** A device's executions of any job, newest first, with the job's name. */
    recentOfDevice: (deviceId: string, limit: number): Array<ExecRow & { job_name: string }> => s.recentOfDevice.all(deviceId, limit),
    /** A device's executions that ended failed or timed out for good (a retried attempt leaves the row queued), oldest first. */
    failedOfDevice: (deviceId: string, sinceMs: number, untilMs: number, limit: number): FailedExecRow[] => s.failedOfDevice.all(deviceId, sinceMs, untilMs, limit),
    history: (execKey: number): HistoryView[] => s.history.all(execKey),
    /** Deletes up to `limit` jobs that finished before `cutoff`, with their executions and history; returns how many. */
    pruneFinished(cutoff: number, limit: number): number {
      const n = s.pruneFinished.run(cutoff, limit).changes
      if (n > 0) version++
      return n
    },

    /**
     * The one way an execution changes: state, version + 1, the given
     * columns, and a history row, together. Returns the new row; throws if
     * the move is not one the table allows (decisions.ts, MOVES) or the row
     * changed under the caller (bugs both: callers hold the writer).
     */
    transition(row: ExecRow, to: ExecState, now: number, source: string, detail: string | null, f: TransitionFields = {}): ExecRow {
      const next = nextRow(row, to, now, f)
      const info = update.run({
        key: row.key, expected: row.version, now, state: next.state, version: next.version, attempt: next.attempt,
        baseVersion: next.base_version, deviceVersion: next.device_version, runAfter: next.run_after, deliveredAt: next.delivered_at,
        leaseUntil: next.lease_until, cancelNotify: next.cancel_notify, startedAt: next.started_at, finishedAt: next.finished_at,
        result: next.result, errorCode: next.error_code, errorMessage: next.error_message,
      })
      if (info.changes !== 1) throw new Error(`execution ${row.key} changed under a transition (expected version ${row.version})`)
      s.insertHistory.run(row.key, next.version, next.attempt, to, now, source, detail)
      version++
      return next
    },

  }
}

export type JobStore = ReturnType<typeof createJobStore>
