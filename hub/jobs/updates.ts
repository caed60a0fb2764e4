import type { OnFailed } from '../storage/group-commit.js'
import { LIMITS } from '../../protocol/limits.js'
import type { JobsUpdate, JobUpdate } from '../../protocol/messages.js'
import { encode } from '../../protocol/codec.js'
import { parseExecId } from '../../protocol/ids.js'
import { topics } from '../../protocol/topics.js'
import { decideUpdate, leaseUntil } from './decisions.js'
import type { JobRow } from './store.js'
import { tx, type Step } from './tx.js'
import { count, type FailedForGood, type JobsContext, type StepEnv, type Tally } from './context.js'
import type { Endings } from './endings.js'
import type { Dispatch } from './dispatch.js'

/**
 * Execution updates from devices: each applied by version (decisions.ts,
 * decideUpdate), a final one retried while attempts remain, the job aborted
 * or completed as its executions end; the jobs/ack that names them leaves
 * after the commit, so an acked update is always stored.
 */

function clip(text: string, max: number): string {
  return text.length > max ? text.slice(0, max) : text
}

/** What a device's update message came to: the ids it carried, the ones refused and why, and what the commit must do. */
export interface UpdatesApplied {
  readonly ids: number[]
  readonly refused: Array<{ id: number; code: 'STALE_VERSION' | 'UNKNOWN_EXECUTION' | 'NOT_YOURS' }>
  /** Devices to tell about cancellations (a job aborted). */
  readonly notify: string[]
  readonly tally: Tally
  readonly failed: FailedForGood[]
}

function* applyOne({ options, logger }: StepEnv, endings: Endings, tally: Tally, deviceId: string, u: JobUpdate, now: number, touched: Set<string>, jobs: Map<string, JobRow | undefined>, failed: FailedForGood[]): Step<'applied' | 'duplicate' | 'STALE_VERSION' | 'UNKNOWN_EXECUTION' | 'NOT_YOURS'> {
  const ref = parseExecId(u.execId)
  if (!ref) return 'UNKNOWN_EXECUTION'
  if (ref.deviceId !== deviceId) return 'NOT_YOURS'
  const row = yield* tx.getExec(ref.jobId, deviceId)
  if (!jobs.has(ref.jobId)) jobs.set(ref.jobId, yield* tx.getJob(ref.jobId))
  const job = jobs.get(ref.jobId)
  if (!row || !job) return 'UNKNOWN_EXECUTION'
  const verdict = decideUpdate({ state: row.state, attempt: row.attempt, version: row.version, baseVersion: row.base_version, deviceVersion: row.device_version }, u)
  if (verdict.verdict === 'duplicate') return 'duplicate'
  if (verdict.verdict === 'stale') {
    logger.debug({ execId: u.execId, status: u.status, why: verdict.why }, 'stale execution update refused')
    return 'STALE_VERSION'
  }
  // Expired and rejected attempts never ran: no start time unless the device gave one.
  const neverRan = verdict.to === 'expired' || verdict.to === 'rejected'
  const startedAt = row.started_at ?? u.startedAt ?? (neverRan ? null : now)
  if (verdict.to === 'in_progress') {
    yield* tx.transition(row, 'in_progress', now, 'device', null, {
      deviceVersion: row.version + 1, startedAt, leaseUntil: leaseUntil('in_progress', now, job.timeout_ms, job.expires_at, options.leaseGraceMs),
    })
    return 'applied'
  }
  const result = u.result === undefined ? null : JSON.stringify(u.result)
  yield* endings.finish(tally, row, job, verdict.to, now, 'device', u.error ? clip(`${u.error.code}: ${u.error.message}`, 300) : null, {
    deviceVersion: row.version + 1, startedAt, finishedAt: u.finishedAt ?? now, leaseUntil: null,
    result,
    errorCode: u.error?.code ?? null, errorMessage: u.error ? clip(u.error.message, LIMITS.maxJobErrorChars) : null,
  }, failed)
  touched.add(job.id)
  return 'applied'
}

/** The job transaction that applies a device's execution updates, received at `now`, by version. */
export function* updateStep(env: StepEnv, endings: Endings, deviceId: string, message: JobsUpdate, now: number): Step<UpdatesApplied> {
  const ids: number[] = []
  const refused: UpdatesApplied['refused'] = []
  const touched = new Set<string>()
  const jobs = new Map<string, JobRow | undefined>()
  const tally: Tally = {}
  const failed: FailedForGood[] = []
  for (const u of message.updates) {
    const outcome = yield* applyOne(env, endings, tally, deviceId, u, now, touched, jobs, failed)
    ids.push(u.id)
    if (outcome === 'applied') count(tally, 'updatesApplied')
    else if (outcome === 'duplicate') count(tally, 'updatesDuplicate')
    else {
      count(tally, 'updatesRefused')
      refused.push({ id: u.id, code: outcome })
    }
  }
  const notify: string[] = []
  // In job order: two hubs ending executions of the same jobs lock them in the same order.
  for (const j of [...touched].sort()) notify.push(...(yield* endings.afterFinal(j, now, tally)))
  return { ids, refused, notify, tally, failed }
}

export function createUpdates(ctx: JobsContext, endings: Endings, dispatch: Dispatch) {
  const { options } = ctx
  const { logger, random } = ctx.deps
  const env: StepEnv = { options, logger, random }

  /** A device's execution updates, received at `now`, applied in one transaction; jobs/ack names them after the commit. */
  function update(deviceId: string, message: JobsUpdate, now: number, onFailed?: OnFailed): void {
    ctx.backend.enqueue(() => updateStep(env, endings, deviceId, message, now), {
      inside: ({ failed }) => ctx.reactToFailures(failed),
      after: ({ ids, refused, notify, tally }) => {
        ctx.book(tally)
        ctx.deps.publish(topics.jobsAck(deviceId), encode({ type: 'jobs.ack', v: 1, storeId: message.storeId, ids, ...(refused.length > 0 ? { refused } : {}) }))
        if (notify.length > 0) dispatch.sendCancels(notify)
      },
      weight: message.updates.length,
      onFailed,
      key: deviceId,
    })
  }

  return { update }
}
