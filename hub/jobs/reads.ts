import { RollcallError } from '../../common/errors.js'
import { parseExecId } from '../../protocol/ids.js'
import type { ExecState } from './decisions.js'
import { execView, toJobView, type ExecCounts, type ExecutionView, type FailedExecRow, type HistoryView, type JobRow, type JobStatus, type JobView } from './store.js'
import { tx, type Step } from './tx.js'

/**
 * What the jobs API shows, read the same way on both databases: each read
 * is a step of store calls (tx.ts), run on the SQLite store at once, or on
 * PostgreSQL one round trip at a time, outside any transaction.
 */

export interface JobDetail extends JobView {
  readonly executions: readonly ExecutionView[]
}

export interface ExecutionDetail extends ExecutionView {
  readonly history: readonly HistoryView[]
}

export function jobNotFound(id: string): RollcallError {
  const hint = parseExecId(id) ? `; "${id}" is an execution id: rollcall job execution ${id}` : ' (rollcall job list shows the jobs)'
  return new RollcallError('JOB_NOT_FOUND', `no job "${id}"${hint}`)
}

export function* requireJobStep(id: string): Step<JobRow> {
  const job = yield* tx.getJob(id)
  if (!job) throw jobNotFound(id)
  return job
}

function* viewOf(job: JobRow): Step<JobView> {
  return toJobView(job, yield* tx.countsOf(job.id))
}

/** A job as the API shows it. */
export function* jobViewStep(id: string): Step<JobView> {
  return (yield* jobAndViewStep(id)).view
}

/** A job's row (what the logic reads) and its view (what the API shows), in one read. */
export function* jobAndViewStep(id: string): Step<{ row: JobRow; view: JobView }> {
  const row = yield* requireJobStep(id)
  return { row, view: yield* viewOf(row) }
}

/** Newest first; `before` is a job id: the page continues after that job. */
export function* listStep(filter: { status?: JobStatus; before?: string; limit?: number }): Step<JobView[]> {
  const cursor = filter.before === undefined ? undefined : yield* requireJobStep(filter.before)
  const rows = yield* tx.listJobs(filter.status ?? null, filter.limit ?? 100, cursor && { createdAt: cursor.created_at, id: cursor.id })
  const views: JobView[] = []
  for (const r of rows) views.push(yield* viewOf(r))
  return views
}

/** The job with its executions by device id; `after` is a device id: the page continues after it. */
export function* getStep(id: string, filter: { state?: ExecState; after?: string; limit?: number }): Step<JobDetail> {
  const job = yield* requireJobStep(id)
  const execs = yield* tx.listExecs(id, filter.state ?? null, filter.after ?? '', filter.limit ?? 1000)
  return { ...(yield* viewOf(job)), executions: execs.map(execView) }
}

export function* executionStep(execId: string): Step<ExecutionDetail> {
  const ref = parseExecId(execId)
  const row = ref ? yield* tx.readExec(ref.jobId, ref.deviceId) : undefined
  if (!row) throw new RollcallError('EXECUTION_NOT_FOUND', `no execution "${execId}" (execution ids are JOBID.DEVICEID)`)
  return { ...execView(row), history: yield* tx.history(row.key) }
}

/** A device's latest executions of any job, newest first, each with its job's name. */
export function* executionsOfDeviceStep(deviceId: string, limit: number): Step<Array<ExecutionView & { jobName: string }>> {
  return (yield* tx.recentOfDevice(deviceId, limit)).map((r) => ({ ...execView(r), jobName: r.job_name }))
}

/** A device's executions that failed for good from `sinceMs` to before `untilMs`, oldest first (a rule's dry run). */
export function* failuresStep(deviceId: string, sinceMs: number, untilMs: number, limit: number): Step<FailedExecRow[]> {
  return yield* tx.failedOfDevice(deviceId, sinceMs, untilMs, limit)
}

/** Executions of the jobs still active, by state (the metrics scrape). */
export function* activeCountsStep(): Step<ExecCounts> {
  return yield* tx.activeStateCounts()
}

/** Retention: deletes up to `limit` jobs that finished before `cutoff`, with their executions and history; returns how many. */
export function* pruneStep(cutoff: number, limit: number): Step<number> {
  return yield* tx.pruneFinished(cutoff, limit)
}
