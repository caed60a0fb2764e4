import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import { randomId } from '../../common/random-id.js'
import { parseTarget, resolveTarget, targetIncludes } from '../fleet/targets.js'
import { isFinal } from './decisions.js'
import type { JobView, NewJob } from './store.js'
import { tx, type Step } from './tx.js'
import { jobAndViewStep, jobNotFound, jobViewStep } from './reads.js'
import { checkJobSpec, type JobCause, type JobOrigin, type JobSpec } from './spec.js'
import type { JobsContext, Tally } from './context.js'
import type { Endings } from './endings.js'
import type { Dispatch } from './dispatch.js'

/**
 * A job's life outside the devices' own updates: made (the job and one
 * queued execution per targeted device in one transaction, then the
 * doorbell), canceled by an operator, and joined or left by devices added to
 * or removed from the fleet (continuous jobs). Each runs as one transaction
 * of its own (the backend's `now`: on SQLite after the writer's queue is
 * flushed, so it sees the state the queued writes describe).
 */

/** The transaction that makes a job and one queued execution per device; false when its schedule tick or rule action made it already. */
export function* insertJobStep(row: NewJob, devices: readonly string[]): Step<boolean> {
  if (!(yield* tx.insertJob(row))) return false
  yield* tx.addExecutions(row.id, devices, row.priority, row.createdAt)
  return true
}


/** The job transaction that cancels a job: its open executions end canceled; returns the devices to tell. */
export function* cancelStep(endings: Endings, id: string, now: number, reason: string): Step<Set<string>> {
  // Read here, after the flush: a queued update may just have completed or aborted the job.
  const job = yield* tx.lockJob(id)
  if (!job) throw jobNotFound(id)
  if (job.status !== 'active') throw new RollcallError('JOB_FINISHED', `job "${id}" is already ${job.status}; nothing to cancel`)
  const notify = yield* endings.cancelExecutions(job, ['queued', 'in_progress'], now, 'api', reason)
  yield* tx.setJobStatus(job.id, 'canceled', reason, now)
  return notify
}

/**
 * A new device joins the executions of continuous jobs whose target
 * includes it. A device removed and added again under the same id gets its
 * execution back as a new attempt (its removal had canceled it).
 */
export function* addedStep(logger: Logger, deviceId: string, group: string | null, now: number): Step<void> {
  for (const job of yield* tx.activeContinuous()) {
    if (!targetIncludes(parseTarget(job.target), deviceId, group)) continue
    if ((yield* tx.addExecutions(job.id, [deviceId], job.priority, now)).length > 0) {
      logger.info({ jobId: job.id, deviceId }, 'continuous job: new device added')
      continue
    }
    const r = yield* tx.getExec(job.id, deviceId)
    if (!r || !isFinal(r.state)) continue
    yield* tx.transition(r, 'queued', now, 'hub', 'device added again', {
      attempt: r.attempt + 1, baseVersion: r.version + 1, deviceVersion: null, runAfter: now, deliveredAt: null, leaseUntil: null,
      startedAt: null, finishedAt: null, result: null, errorCode: null, errorMessage: null,
    })
    logger.info({ jobId: job.id, deviceId }, 'continuous job: device added again, its execution queued anew')
  }
}

/** A removed device's open executions are canceled, so its jobs can complete. */
export function* removedStep(endings: Endings, deviceId: string, now: number): Step<Tally> {
  // Made here: a transaction run again (PostgreSQL, after a deadlock) must not count twice.
  const tally: Tally = {}
  const touched = new Set<string>()
  for (const r of yield* tx.openOfDevice(deviceId)) {
    yield* tx.transition(r, 'canceled', now, 'api', 'device removed', { leaseUntil: null, finishedAt: now })
    touched.add(r.job_id)
  }
  for (const j of [...touched].sort()) yield* endings.afterFinal(j, now, tally)
  return tally
}

export function createLifecycle(ctx: JobsContext, endings: Endings, dispatch: Dispatch) {
  const { backend, options, ring, reachable } = ctx
  const { registry, clock, logger } = ctx.deps

  /**
   * Creates a job; for a schedule's tick or a rule's action, returns
   * undefined when that tick or action already made its job (a double fire,
   * or the same again after a restart).
   */
  async function create(spec: JobSpec, origin?: JobOrigin | JobCause): Promise<JobView | undefined> {
    const now = clock.now()
    const { target, payload } = checkJobSpec(spec, now)
    const devices = resolveTarget(target, registry)
    if (devices.length === 0 && !spec.continuous) {
      throw new RollcallError('TARGET_EMPTY', `target "${spec.target}" matches no registered device; a group or all job can be made continuous to wait for devices`)
    }
    const cause = origin !== undefined && 'firing' in origin ? origin : undefined
    const schedule = origin !== undefined && 'scheduleId' in origin ? origin : undefined
    const id = cause?.id ?? randomId('j')
    const row = {
      id, name: spec.name, payload, target, priority: spec.priority ?? 0,
      timeoutMs: spec.timeoutMs ?? options.defaultTimeoutMs, expiresAt: spec.expiresAt ?? null,
      maxAttempts: spec.maxAttempts ?? options.defaultMaxAttempts,
      backoffBaseMs: spec.backoffBaseMs ?? options.backoffBaseMs, backoffMaxMs: spec.backoffMaxMs ?? options.backoffMaxMs,
      ratePerMinute: spec.ratePerMinute ?? null, abortMinFinished: spec.abortAfter ?? null, abortFailurePct: spec.abortAtPercent ?? null,
      continuous: spec.continuous ?? false, createdAt: now, scheduleId: schedule?.scheduleId ?? null, scheduleTick: schedule?.tick ?? null,
      causeRule: cause?.rule ?? null, causeFiring: cause?.firing ?? null,
    }
    if (!(await backend.now(() => insertJobStep(row, devices)))) return undefined
    logger.info({ jobId: id, name: spec.name, target: spec.target, executions: devices.length, scheduleId: row.scheduleId }, 'job created')
    const { row: job, view } = await backend.read(jobAndViewStep(id))
    if (job.rate_per_min !== null) await dispatch.ringPaced(job, now)
    else for (const d of devices) if (reachable(d)) ring(d)
    return view
  }

  /** Checks a job spec as create would, without creating it (schedules check their template when added). */
  function check(spec: JobSpec & { readonly expiresInMs?: number }): void {
    const { expiresInMs, ...rest } = spec
    if (expiresInMs !== undefined && (!Number.isInteger(expiresInMs) || expiresInMs < 1)) throw new RollcallError('BAD_REQUEST', 'expiresInMs must be a positive integer')
    const { target } = checkJobSpec(rest, clock.now())
    if (target.kind === 'devices') resolveTarget(target, registry)
  }

  async function cancel(id: string, reason = 'canceled by an operator'): Promise<JobView> {
    // The time is taken as the transaction starts: after the writes it waits for, and afresh for a retry.
    const notify = await backend.now(() => cancelStep(endings, id, clock.now(), reason))
    logger.info({ jobId: id, devicesNotified: notify.size }, 'job canceled')
    dispatch.sendCancels([...notify])
    return backend.read(jobViewStep(id))
  }

  /** It joins the continuous jobs that target it (addedStep). */
  async function deviceAdded(deviceId: string, group: string | null): Promise<void> {
    await backend.now(() => addedStep(logger, deviceId, group, clock.now()))
  }

  /** Its open executions are canceled (removedStep). */
  async function deviceRemoved(deviceId: string): Promise<void> {
    ctx.book(await backend.now(() => removedStep(endings, deviceId, clock.now())))
  }

  return { create, check, cancel, deviceAdded, deviceRemoved }
}
