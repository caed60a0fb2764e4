import type { Db } from '../common/sqlite.js'
import type { JobUpdateStatus } from '../protocol/messages.js'
import type { JobOutcome, JobSource } from './job-outcome.js'

/**
 * The SQL of the device's job queue: every statement on the `jobs` and
 * `job_updates` tables of the ledger (migration 2), prepared once, and the
 * rows they return. It holds SQL only: which row moves to which state, in
 * which transaction, and the in-memory mirror of the counts are the queue's
 * (job-queue.ts, whose header describes a row's lifecycle), and the queue is
 * the only caller.
 */

/** An update the device owes the hub, as the reporter reads it. */
export interface JobUpdateRow {
  readonly id: number
  readonly execId: string
  readonly attempt: number
  readonly status: JobUpdateStatus
  /** The wire JobUpdate's JSON without `id`: `{"execId":...}`. */
  readonly body: string
}

export interface QueuedRow {
  rowid: number
  exec_id: string
  attempt: number
  job_id: string
  name: string
  payload: string
  version: number
  timeout_ms: number
  expires_at: number | null
  priority: number
  source: JobSource
}

export interface RunningRow {
  rowid: number
  exec_id: string
  attempt: number
  job_id: string
  name: string
  version: number
  source: JobSource
  started_at: number | null
}

export type JobStatements = ReturnType<typeof prepareJobStatements>

export function prepareJobStatements(db: Db) {
  const unacked = '(exec_id, attempt) NOT IN (SELECT exec_id, attempt FROM job_updates)'
  return {
    insertJob: db.prepare<[string, number, string, string, string, number, number, number | null, number, JobSource, number]>(`INSERT OR IGNORE INTO jobs (exec_id, attempt, job_id, name, payload, version, timeout_ms, expires_at, priority, source, state, received_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)`),
    // Any queued attempt older than the newest one this execution has is superseded.
    supersede: db.prepare<[number, string, string]>(`UPDATE jobs SET state = 'done', outcome = 'canceled', finished_at = ?
      WHERE exec_id = ? AND state = 'queued' AND attempt < (SELECT MAX(attempt) FROM jobs WHERE exec_id = ?)`),
    // Rows whose execution still runs an older attempt are skipped in claim();
    // a subquery here measured as a third of a claim's cost.
    selectQueued: db.prepare<[number], QueuedRow>(`SELECT rowid, exec_id, attempt, job_id, name, payload, version, timeout_ms, expires_at, priority, source FROM jobs
      WHERE state = 'queued' ORDER BY priority DESC, rowid LIMIT ?`),
    startJob: db.prepare<[number, number]>("UPDATE jobs SET state = 'running', started_at = ? WHERE rowid = ?"),
    finishRow: db.prepare<[JobOutcome, number, number]>("UPDATE jobs SET state = 'done', outcome = ?, finished_at = ? WHERE rowid = ?"),
    cancelQueued: db.prepare<[number, string, number]>("UPDATE jobs SET state = 'done', outcome = 'canceled', finished_at = ? WHERE exec_id = ? AND attempt = ? AND state = 'queued'"),
    insertUpdate: db.prepare<[string, number, JobUpdateStatus, string]>('INSERT INTO job_updates (exec_id, attempt, status, body) VALUES (?, ?, ?, ?)'),
    deleteUpdate: db.prepare<[number]>('DELETE FROM job_updates WHERE id = ?'),
    selectUpdatesAfter: db.prepare<[number, number], JobUpdateRow>('SELECT id, exec_id AS execId, attempt, status, body FROM job_updates WHERE id > ? ORDER BY id LIMIT ?'),
    selectRunning: db.prepare<[], RunningRow>("SELECT rowid, exec_id, attempt, job_id, name, version, source, started_at FROM jobs WHERE state = 'running' ORDER BY rowid"),
    pruneOld: db.prepare<[number]>(`DELETE FROM jobs WHERE state = 'done' AND finished_at < ? AND ${unacked}`),
    pruneExcess: db.prepare<[number]>(`DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE state = 'done' AND ${unacked} ORDER BY finished_at LIMIT ?)`),
  }
}

/** The counts the queue mirrors in memory, read once when it opens. */
export function countJobs(db: Db): { queued: number; done: number; updates: number } {
  let queued = 0
  let done = 0
  for (const r of db.prepare<[], { state: string; n: number }>('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all()) {
    if (r.state === 'queued') queued = r.n
    else if (r.state === 'done') done = r.n
  }
  const updates = db.prepare<[], number>('SELECT COUNT(*) FROM job_updates').pluck().get() ?? 0
  return { queued, done, updates }
}
