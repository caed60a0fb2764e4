import type { Clock, Random } from '../../common/clock.js'
import { formatDurationMs } from '../../common/duration.js'
import { randomId } from '../../common/random-id.js'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import type { Db } from '../../common/sqlite.js'
import { encode } from '../../protocol/codec.js'
import { execIdOf, isTaskName, parseExecId } from '../../protocol/ids.js'
import { boundJson, describeBounds } from '../../protocol/json-bounds.js'
import { LIMITS } from '../../protocol/limits.js'
import type { ExecRef, JobExecution, JobsUpdate, JobUpdate } from '../../protocol/messages.js'
import { topics } from '../../protocol/topics.js'
import type { JobIngress } from '../mqtt/ingress.js'
import {
  decideUpdate, isFinal, lapsedTo, leaseUntil, retryPlan, rolloutRelease, shouldAbort, type ExecState,
} from './decisions.js'
import { createJobStore, type ExecRow, type ExecutionView, type HistoryView, type JobRow, type JobStatus, type JobView } from './store.js'
import { parseTarget, resolveTarget, targetIncludes, type JobTarget } from '../fleet/targets.js'
import type { Registry } from '../fleet/registry.js'
import type { OnFailed, Writer } from '../storage/group-commit.js'
import type { OutcomeCode } from '../../protocol/outcome-codes.js'

/**
 * Job dispatch: the hub half of the pull pattern (DESIGN.md, "Jobs").
 *
 * - create: the job and one queued execution per targeted device commit in
 *   one transaction; then the doorbell (jobs/notify) rings for the targeted
 *   devices that are reachable now (for a paced rollout, only as many as the
 *   pace allows).
 * - pull: a device asks for up to `max`; the executions due for it are leased
 *   (priority, then age) in one writer operation and sent as one jobs/batch
 *   after the commit. Rollout pacing is applied to first deliveries.
 * - update: the device's execution updates are applied by version (see
 *   decisions.ts) in one writer operation; jobs/ack names them after the
 *   commit, so an acked update is always stored. Final failures are retried
 *   while attempts remain; a job whose failure rate passes its abort
 *   criteria is aborted and its queued executions canceled.
 * - sweep (every jobSweepIntervalMs): in-progress executions whose lease
 *   lapsed become timed_out (and are retried), executions not started by
 *   their job's expiresAt become expired, retries whose wait ended ring
 *   their device, and paced rollouts ring the next devices.
 *
 * Every write goes through the group-commit writer (or, for create and
 * cancel, one synchronous transaction), and every publish happens after the
 * commit it reports: persist first, send second.
 */

export interface JobsOptions {
  readonly sweepIntervalMs: number
  readonly leaseGraceMs: number
  readonly redeliverAfterMs: number
  readonly defaultTimeoutMs: number
  readonly defaultMaxAttempts: number
  readonly backoffBaseMs: number
  readonly backoffMaxMs: number
}

export interface JobsDeps {
  readonly db: Db
  readonly writer: Writer
  readonly registry: Registry
  /** Reachable now (connected, birth received for this epoch), and since when. */
  readonly reachableSince: (deviceId: string) => number | undefined
  /** QoS 1 publish to a device's down-topic. */
  readonly publish: (topic: string, payload: Buffer) => void
  readonly clock: Clock
  readonly random: Random
  readonly logger: Logger
}

/** What a caller (API, CLI, schedule) asks for; unset fields take the hub's defaults. */
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

export interface JobOrigin {
  readonly scheduleId: number
  readonly tick: number
}

export interface JobDetail extends JobView {
  readonly executions: readonly ExecutionView[]
}

export interface ExecutionDetail extends ExecutionView {
  readonly history: readonly HistoryView[]
}

export interface JobStats {
  readonly pulls: number
  readonly batches: number
  readonly delivered: number
  readonly updatesApplied: number
  readonly updatesDuplicate: number
  readonly updatesRefused: number
  readonly retries: number
  readonly timedOut: number
  readonly expired: number
  readonly aborted: number
  /** Paced rollouts being rung now (the sweeper keeps where each left off). */
  readonly pacedRinging: number
}

const MAX_SWEEP_ROWS = 1000
/** Stop notices that ride on one batch (a doorbell takes up to 500: 500 refs of the longest ids stay under 64 KiB). */
const CANCELS_PER_BATCH = 100
/** A batch leaves room under the payload cap for the envelope and the cancel list. */
const BATCH_BUDGET_BYTES = LIMITS.maxPayloadBytes - 8 * 1024


function clip(text: string, max: number): string {
  return text.length > max ? text.slice(0, max) : text
}

export function createJobs(options: JobsOptions, deps: JobsDeps) {
  const { db, writer, registry, clock, random, logger } = deps
  const store = createJobStore(db)
  const stats = { pulls: 0, batches: 0, delivered: 0, updatesApplied: 0, updatesDuplicate: 0, updatesRefused: 0, retries: 0, timedOut: 0, expired: 0, aborted: 0 }
  /**
   * What a transaction counts is booked only once it commits: a write rolled
   * back (alone, or with its whole group) and done again must not count twice.
   */
  type Tally = Partial<Record<Exclude<keyof typeof stats, 'pulls' | 'batches'>, number>>
  const count = (tally: Tally, what: keyof Tally, n = 1): void => { tally[what] = (tally[what] ?? 0) + n }
  const book = (tally: Tally): void => { for (const [k, n] of Object.entries(tally) as Array<[keyof Tally, number]>) stats[k] += n }
  let sweepTimer: NodeJS.Timeout | undefined
  let lastSweep = clock.now()

  function ring(deviceId: string, cancel?: readonly ExecRef[]): void {
    deps.publish(topics.jobsNotify(deviceId), encode(cancel && cancel.length > 0 ? { type: 'jobs.notify', v: 1, cancel: [...cancel] } : { type: 'jobs.notify', v: 1 }))
  }

  const reachable = (deviceId: string) => deps.reachableSince(deviceId) !== undefined

  // ---- create, cancel, continuous ----

  function validate(spec: JobSpec, now: number): { target: JobTarget; payload: string } {
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

  const insertJobTx = db.transaction((row: Parameters<typeof store.insertJob>[0], devices: readonly string[]) => {
    if (!store.insertJob(row)) return false
    store.addExecutions(row.id, devices, row.priority, row.createdAt)
    return true
  })

  /**
   * Creates a job; for a schedule's tick, returns undefined when that tick
   * already made its job (a double fire, or a fire again after a restart).
   */
  function create(spec: JobSpec, origin?: JobOrigin): JobView | undefined {
    const now = clock.now()
    const { target, payload } = validate(spec, now)
    const devices = resolveTarget(target, registry)
    if (devices.length === 0 && !spec.continuous) {
      throw new RollcallError('TARGET_EMPTY', `target "${spec.target}" matches no registered device; a group or all job can be made continuous to wait for devices`)
    }
    const id = randomId('j')
    const row = {
      id, name: spec.name, payload, target, priority: spec.priority ?? 0,
      timeoutMs: spec.timeoutMs ?? options.defaultTimeoutMs, expiresAt: spec.expiresAt ?? null,
      maxAttempts: spec.maxAttempts ?? options.defaultMaxAttempts,
      backoffBaseMs: spec.backoffBaseMs ?? options.backoffBaseMs, backoffMaxMs: spec.backoffMaxMs ?? options.backoffMaxMs,
      ratePerMinute: spec.ratePerMinute ?? null, abortMinFinished: spec.abortAfter ?? null, abortFailurePct: spec.abortAtPercent ?? null,
      continuous: spec.continuous ?? false, createdAt: now, scheduleId: origin?.scheduleId ?? null, scheduleTick: origin?.tick ?? null,
    }
    // Queued writes go first, so the new job sees the state they describe.
    writer.flush()
    if (!insertJobTx.immediate(row, devices)) return undefined
    logger.info({ jobId: id, name: spec.name, target: spec.target, executions: devices.length, scheduleId: row.scheduleId }, 'job created')
    const job = store.getJob(id)!
    if (job.rate_per_min !== null) ringPaced(job, now)
    else for (const d of devices) if (reachable(d)) ring(d)
    return store.jobView(job)
  }

  /** Checks a job spec as create would, without creating it (schedules check their template when added). */
  function check(spec: JobSpec & { readonly expiresInMs?: number }): void {
    const { expiresInMs, ...rest } = spec
    if (expiresInMs !== undefined && (!Number.isInteger(expiresInMs) || expiresInMs < 1)) throw new RollcallError('BAD_REQUEST', 'expiresInMs must be a positive integer')
    const { target } = validate(rest, clock.now())
    if (target.kind === 'devices') resolveTarget(target, registry)
  }

  function requireJob(id: string): JobRow {
    const job = store.getJob(id)
    if (!job) {
      const hint = parseExecId(id) ? `; "${id}" is an execution id: rollcall job execution ${id}` : ' (rollcall job list shows the jobs)'
      throw new RollcallError('JOB_NOT_FOUND', `no job "${id}"${hint}`)
    }
    return job
  }

  /** Cancels every execution in `from`; the devices that may hold one are told (now if reachable, else when they come back). */
  function cancelExecutions(job: JobRow, from: readonly ExecState[], now: number, source: string, detail: string): Set<string> {
    const notify = new Set<string>()
    const rows = from.length === 1 ? store.execsIn(job.id, from[0]!, from[0]!) : store.execsIn(job.id, from[0]!, from[1]!)
    for (const r of rows) {
      const held = r.state === 'in_progress' || r.delivered_at !== null
      // Not held now: a stop notice still owed for an earlier attempt (a timed-out run) stays owed.
      store.transition(r, 'canceled', now, source, detail, { ...(held ? { cancelAttempt: r.attempt } : {}), leaseUntil: null, finishedAt: now })
      if (held || r.cancel_notify > 0) notify.add(r.device_id)
    }
    return notify
  }

  const cancelTx = db.transaction((id: string, now: number, reason: string) => {
    // Read here, after the flush: a queued update may just have completed or aborted the job.
    const job = requireJob(id)
    if (job.status !== 'active') throw new RollcallError('JOB_FINISHED', `job "${id}" is already ${job.status}; nothing to cancel`)
    const notify = cancelExecutions(job, ['queued', 'in_progress'], now, 'api', reason)
    store.setJobStatus(job.id, 'canceled', reason, now)
    return notify
  })

  function cancel(id: string, reason = 'canceled by an operator'): JobView {
    writer.flush()
    const notify = cancelTx.immediate(id, clock.now(), reason)
    logger.info({ jobId: id, devicesNotified: notify.size }, 'job canceled')
    sendCancels([...notify])
    return store.jobView(store.getJob(id)!)
  }

  /** Tells reachable devices which executions they hold were canceled; the rest hear it when they come back. */
  function sendCancels(deviceIds: readonly string[]): void {
    const online = deviceIds.filter(reachable)
    if (online.length === 0) return
    writer.enqueue(() => {
      const sends: Array<[string, ExecRef[]]> = []
      for (const d of online) {
        const refs = takeCancels(d)
        if (refs.length > 0) sends.push([d, refs])
      }
      return () => { for (const [d, refs] of sends) ring(d, refs) }
    }, online.length)
  }

  function takeCancels(deviceId: string, max: number = LIMITS.maxJobsPerBatch): ExecRef[] {
    const refs: ExecRef[] = []
    for (const c of store.pendingCancels(deviceId, max)) {
      store.clearCancel(c.key)
      refs.push({ execId: execIdOf(c.job_id, deviceId), attempt: c.attempt })
    }
    return refs
  }

  /**
   * A new device joins the executions of continuous jobs whose target
   * includes it. A device removed and added again under the same id gets its
   * execution back as a new attempt (its removal had canceled it).
   */
  const addedTx = db.transaction((deviceId: string, group: string | null, now: number) => {
    for (const job of store.activeContinuous()) {
      if (!targetIncludes(parseTarget(job.target), deviceId, group)) continue
      if (store.addExecutions(job.id, [deviceId], job.priority, now).length > 0) {
        logger.info({ jobId: job.id, deviceId }, 'continuous job: new device added')
        continue
      }
      const r = store.getExec(job.id, deviceId)
      if (!r || !isFinal(r.state)) continue
      store.transition(r, 'queued', now, 'hub', 'device added again', {
        attempt: r.attempt + 1, baseVersion: r.version + 1, deviceVersion: null, runAfter: now, deliveredAt: null, leaseUntil: null,
        startedAt: null, finishedAt: null, result: null, errorCode: null, errorMessage: null,
      })
      logger.info({ jobId: job.id, deviceId }, 'continuous job: device added again, its execution queued anew')
    }
  })

  function deviceAdded(deviceId: string, group: string | null): void {
    writer.flush()
    addedTx.immediate(deviceId, group, clock.now())
  }

  const removedTx = db.transaction((deviceId: string, now: number, tally: Tally) => {
    const touched = new Set<string>()
    for (const r of store.openOfDevice(deviceId)) {
      store.transition(r, 'canceled', now, 'api', 'device removed', { leaseUntil: null, finishedAt: now })
      touched.add(r.job_id)
    }
    for (const j of touched) afterFinal(j, now, tally)
  })

  /** A removed device's open executions are canceled, so its jobs can complete. */
  function deviceRemoved(deviceId: string): void {
    writer.flush()
    const tally: Tally = {}
    removedTx.immediate(deviceId, clock.now(), tally)
    book(tally)
  }

  // ---- after a final state: abort, completion ----

  /** Runs inside a transaction. Returns devices to tell about cancellations (an abort). */
  function afterFinal(jobId: string, now: number, tally: Tally): string[] {
    const job = store.getJob(jobId)
    if (!job || job.status !== 'active') return []
    let notify: string[] = []
    if (job.abort_min_finished !== null && job.abort_failure_pct !== null) {
      const verdict = shouldAbort(store.countsOf(jobId), { minFinished: job.abort_min_finished, failurePct: job.abort_failure_pct })
      if (verdict) {
        const reason = `failure rate ${verdict.pct.toFixed(1)}%: ${verdict.failed} of ${verdict.finished} finished executions failed, at or over the abort threshold of ${job.abort_failure_pct}%`
        notify = [...cancelExecutions(job, ['queued'], now, 'hub', `job aborted: ${reason}`)]
        store.setJobStatus(jobId, 'aborted', reason, now)
        count(tally, 'aborted')
        logger.warn({ jobId, ...verdict }, 'job aborted: failure rate reached its threshold; queued executions canceled')
        return notify
      }
    }
    // An index probe, not a count: this runs for every update that ends an execution.
    if (job.continuous === 0 && !store.hasOpen(jobId)) {
      store.setJobStatus(jobId, 'completed', null, now)
      const c = store.countsOf(jobId)
      logger.info({ jobId, succeeded: c.succeeded, failed: c.failed + c.timed_out + c.rejected }, 'job completed')
    }
    return notify
  }

  /** A final state for `row`, then a retry if its job allows one. Runs inside a transaction. */
  function finish(tally: Tally, row: ExecRow, job: JobRow, to: ExecState, now: number, source: string, detail: string | null, f: Parameters<typeof store.transition>[5]): ExecRow {
    const done = store.transition(row, to, now, source, detail, f)
    const plan = job.status === 'active'
      ? retryPlan(to, done.attempt, { maxAttempts: job.max_attempts, backoffBaseMs: job.backoff_base_ms, backoffMaxMs: job.backoff_max_ms }, now, random)
      : undefined
    if (!plan) return done
    count(tally, 'retries')
    return store.transition(done, 'queued', now, 'hub', `retry ${done.attempt + 1} of ${job.max_attempts} after ${to}`, {
      attempt: done.attempt + 1, baseVersion: done.version + 1, deviceVersion: null, runAfter: plan.runAfter,
      deliveredAt: null, leaseUntil: null, startedAt: null, finishedAt: null, result: null,
    })
  }

  // ---- pull ----

  /** How many of a paced job's executions may be released now; updates the stored pace. */
  function pacer(now: number) {
    const grants = new Map<string, { rate: number; tat: number | null; changed: boolean }>()
    return {
      take(job: { job_id: string; rate_per_min: number; tat: number | null }): boolean {
        let g = grants.get(job.job_id)
        if (!g) grants.set(job.job_id, g = { rate: job.rate_per_min, tat: job.tat, changed: false })
        const r = rolloutRelease(g.rate, g.tat, now, 1)
        if (r.granted === 0) return false
        g.tat = r.tat
        g.changed = true
        return true
      },
      save(): void {
        for (const [jobId, g] of grants) if (g.changed && g.tat !== null) store.setTat(jobId, g.tat)
      },
    }
  }

  function pull(deviceId: string, max: number): void {
    stats.pulls++
    writer.enqueue(() => {
      const now = clock.now()
      const since = deps.reachableSince(deviceId)
      // Send again what was delivered before this connection (it may have been lost with the last one), or long ago.
      const redeliverBefore = Math.max(since ?? 0, now - options.redeliverAfterMs)
      // The rest of the stop notices go with the next doorbell or batch; a batch must stay under the payload cap.
      const cancel = takeCancels(deviceId, CANCELS_PER_BATCH)
      const rows = store.due(deviceId, now, max + 64)
      const pace = pacer(now)
      const executions: JobExecution[] = []
      let bytes = Buffer.byteLength(JSON.stringify(cancel))
      let more = false
      const tats = new Map<string, number | null>()
      for (const r of rows) {
        if (r.delivered_at !== null && r.delivered_at >= redeliverBefore) continue
        if (executions.length >= max) { more = true; break }
        if (r.rate_per_min !== null && r.first_delivered_at === null) {
          if (!tats.has(r.job_id)) tats.set(r.job_id, store.getJob(r.job_id)?.rollout_tat ?? null)
          if (!pace.take({ job_id: r.job_id, rate_per_min: r.rate_per_min, tat: tats.get(r.job_id) ?? null })) continue
        }
        const e: JobExecution = {
          execId: execIdOf(r.job_id, r.device_id), jobId: r.job_id, name: r.name, payload: JSON.parse(r.payload) as unknown,
          attempt: r.attempt, version: r.base_version, timeoutMs: r.timeout_ms, priority: r.priority,
          ...(r.expires_at !== null ? { expiresAt: r.expires_at } : {}),
        }
        const size = Buffer.byteLength(r.payload) + 300
        if (executions.length > 0 && bytes + size > BATCH_BUDGET_BYTES) { more = true; break }
        bytes += size
        executions.push(e)
        store.markDelivered(r.key, now, leaseUntil('queued', now, r.timeout_ms, r.expires_at, options.leaseGraceMs))
      }
      pace.save()
      return () => {
        stats.delivered += executions.length
        stats.batches++
        deps.publish(topics.jobsBatch(deviceId), encode({ type: 'jobs.batch', v: 1, executions, more, ...(cancel.length > 0 ? { cancel } : {}) }))
      }
    }, 1 + max)
  }

  // ---- updates ----

  function applyOne(tally: Tally, deviceId: string, u: JobUpdate, now: number, touched: Set<string>, jobs: Map<string, JobRow | undefined>): 'applied' | 'duplicate' | 'STALE_VERSION' | 'UNKNOWN_EXECUTION' | 'NOT_YOURS' {
    const ref = parseExecId(u.execId)
    if (!ref) return 'UNKNOWN_EXECUTION'
    if (ref.deviceId !== deviceId) return 'NOT_YOURS'
    const row = store.getExec(ref.jobId, deviceId)
    if (!jobs.has(ref.jobId)) jobs.set(ref.jobId, store.getJob(ref.jobId))
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
      store.transition(row, 'in_progress', now, 'device', null, {
        deviceVersion: row.version + 1, startedAt, leaseUntil: leaseUntil('in_progress', now, job.timeout_ms, job.expires_at, options.leaseGraceMs),
      })
      return 'applied'
    }
    const result = u.result === undefined ? null : JSON.stringify(u.result)
    finish(tally, row, job, verdict.to, now, 'device', u.error ? clip(`${u.error.code}: ${u.error.message}`, 300) : null, {
      deviceVersion: row.version + 1, startedAt, finishedAt: u.finishedAt ?? now, leaseUntil: null,
      result,
      errorCode: u.error?.code ?? null, errorMessage: u.error ? clip(u.error.message, LIMITS.maxJobErrorChars) : null,
    })
    touched.add(job.id)
    return 'applied'
  }

  function update(deviceId: string, message: JobsUpdate, onFailed?: OnFailed): void {
    writer.enqueue(() => {
      const now = clock.now()
      const ids: number[] = []
      const refused: Array<{ id: number; code: 'STALE_VERSION' | 'UNKNOWN_EXECUTION' | 'NOT_YOURS' }> = []
      const touched = new Set<string>()
      const jobs = new Map<string, JobRow | undefined>()
      const tally: Tally = {}
      for (const u of message.updates) {
        const outcome = applyOne(tally, deviceId, u, now, touched, jobs)
        ids.push(u.id)
        if (outcome === 'applied') count(tally, 'updatesApplied')
        else if (outcome === 'duplicate') count(tally, 'updatesDuplicate')
        else {
          count(tally, 'updatesRefused')
          refused.push({ id: u.id, code: outcome })
        }
      }
      const notify: string[] = []
      for (const j of touched) notify.push(...afterFinal(j, now, tally))
      return () => {
        book(tally)
        deps.publish(topics.jobsAck(deviceId), encode({ type: 'jobs.ack', v: 1, storeId: message.storeId, ids, ...(refused.length > 0 ? { refused } : {}) }))
        if (notify.length > 0) sendCancels(notify)
      }
    }, message.updates.length, onFailed)
  }

  /** A device came online (birth): tell it of cancellations it missed, and ring if work is due. */
  function online(deviceId: string): void {
    writer.enqueue(() => {
      const cancel = takeCancels(deviceId)
      const due = store.hasDue(deviceId, clock.now())
      return () => { if (cancel.length > 0 || due) ring(deviceId, cancel) }
    })
  }

  // ---- sweep ----

  /** Where each paced job's ringing left off: rings go round the undelivered executions, so offline devices cannot hold the line. */
  const ringCursor = new Map<string, number>()
  const RING_SCAN_ROWS = 2000

  /**
   * Rings as many reachable devices with an undelivered execution of a paced
   * job as its pace allows now. Ringing consumes nothing: a device that does
   * not pull (offline since, queue full) leaves its turn to the next ones, and
   * the cursor moves on so the next sweep rings others.
   */
  function ringPaced(job: JobRow, now: number): void {
    const allowance = rolloutRelease(job.rate_per_min!, job.rollout_tat, now, 10_000).granted
    if (allowance === 0) return
    let rung = 0
    let scanned = 0
    let cursor = ringCursor.get(job.id) ?? 0
    let wrapped = cursor === 0
    while (rung < allowance && scanned < RING_SCAN_ROWS) {
      const rows = store.undeliveredAfter(job.id, now, cursor, 256)
      if (rows.length === 0) {
        if (wrapped) break
        cursor = 0
        wrapped = true
        continue
      }
      for (const r of rows) {
        scanned++
        cursor = r.key
        if (!reachable(r.device_id)) continue
        ring(r.device_id)
        if (++rung >= allowance) break
      }
    }
    ringCursor.set(job.id, cursor)
  }

  function sweep(): void {
    writer.enqueue(() => {
      const now = clock.now()
      const touched = new Set<string>()
      const jobs = new Map<string, JobRow | undefined>()
      const jobOf = (id: string) => {
        if (!jobs.has(id)) jobs.set(id, store.getJob(id))
        return jobs.get(id)
      }
      const interrupt: string[] = []
      const tally: Tally = {}
      for (const r of store.lapsed(now, MAX_SWEEP_ROWS)) {
        const to = lapsedTo(r.state)
        const job = jobOf(r.job_id)
        if (!to || !job) continue
        if (to === 'timed_out') {
          count(tally, 'timedOut')
          // The device may still be running it: tell it to stop before a retry starts there.
          finish(tally, r, job, 'timed_out', now, 'sweeper', `no result within the timeout (${job.timeout_ms} ms) plus ${options.leaseGraceMs} ms grace`, {
            leaseUntil: null, finishedAt: now, cancelAttempt: r.attempt, errorCode: 'TIMEOUT' satisfies OutcomeCode, errorMessage: 'the device did not report a result in time',
          })
          interrupt.push(r.device_id)
        } else {
          count(tally, 'expired')
          store.transition(r, 'expired', now, 'sweeper', 'not started by the job\'s expiresAt', { leaseUntil: null, finishedAt: now })
        }
        touched.add(r.job_id)
      }
      for (const r of store.expiredUndelivered(now, MAX_SWEEP_ROWS)) {
        count(tally, 'expired')
        store.transition(r, 'expired', now, 'sweeper', 'not started by the job\'s expiresAt', { leaseUntil: null, finishedAt: now })
        touched.add(r.job_id)
      }
      const notify: string[] = [...interrupt]
      for (const j of touched) notify.push(...afterFinal(j, now, tally))
      const due = store.becameDue(lastSweep, now).filter(reachable)
      const paced = store.activePaced()
      return () => {
        book(tally)
        lastSweep = now
        for (const d of due) ring(d)
        for (const job of paced) ringPaced(job, now)
        // A job no longer paced and active has no turn to keep.
        if (ringCursor.size > paced.length) {
          const active = new Set(paced.map((j) => j.id))
          for (const id of ringCursor.keys()) if (!active.has(id)) ringCursor.delete(id)
        }
        if (notify.length > 0) sendCancels([...new Set(notify)])
      }
    }, 10)
  }

  // ---- reads ----

  /** Newest first; `before` is a job id: the page continues after that job. */
  function list(filter: { status?: JobStatus; before?: string; limit?: number } = {}): JobView[] {
    const cursor = filter.before === undefined ? undefined : requireJob(filter.before)
    return store.listJobs(filter.status ?? null, filter.limit ?? 100, cursor && { createdAt: cursor.created_at, id: cursor.id }).map(store.jobView)
  }

  /** The job with its executions by device id; `after` is a device id: the page continues after it. */
  function get(id: string, filter: { state?: ExecState; after?: string; limit?: number } = {}): JobDetail {
    const job = requireJob(id)
    const execs = store.listExecs(id, filter.state ?? null, filter.after ?? '', filter.limit ?? 1000)
    return { ...store.jobView(job), executions: execs.map(store.execView) }
  }

  function execution(execId: string): ExecutionDetail {
    const ref = parseExecId(execId)
    const row = ref ? store.getExec(ref.jobId, ref.deviceId) : undefined
    if (!row) throw new RollcallError('EXECUTION_NOT_FOUND', `no execution "${execId}" (execution ids are JOBID.DEVICEID)`)
    return { ...store.execView(row), history: store.history(row.key) }
  }

  /** A device's latest executions of any job, newest first, each with its job's name. */
  function executionsOfDevice(deviceId: string, limit: number): Array<ExecutionView & { jobName: string }> {
    return store.recentOfDevice(deviceId, limit).map((r) => ({ ...store.execView(r), jobName: r.job_name }))
  }

  /**
   * Retention: deletes jobs that finished (completed, canceled, aborted)
   * before `cutoff`, a few at a time so the event loop keeps serving. An
   * agent's late update for a deleted execution is acked as UNKNOWN_EXECUTION.
   */
  async function prune(cutoff: number, chunkJobs = 1): Promise<number> {
    let total = 0
    for (let n = chunkJobs; n === chunkJobs;) {
      n = store.pruneFinished(cutoff, chunkJobs)
      total += n
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    return total
  }

  const ingress: JobIngress = {
    pull: (deviceId, max) => { pull(deviceId, max) },
    update: (deviceId, message, _now, onFailed) => { update(deviceId, message, onFailed) },
    online: (deviceId) => { online(deviceId) },
  }

  return {
    create,
    check,
    cancel,
    list,
    get,
    execution,
    deviceAdded,
    deviceRemoved,
    prune,
    ingress,
    /** Runs one sweep now (tests; the timer does it every sweepIntervalMs). */
    sweep,
    start(): void {
      sweepTimer ??= setInterval(sweep, options.sweepIntervalMs)
      sweepTimer.unref()
    },
    stop(): void {
      if (sweepTimer) clearInterval(sweepTimer)
      sweepTimer = undefined
    },
    stats: (): JobStats => ({ ...stats, pacedRinging: ringCursor.size }),
    executionsOfDevice,
    /** Changes whenever a job or an execution may have changed (the live feed's cue to re-read). */
    version: () => store.version(),
    /** Executions of active jobs by state, read now. */
    activeExecutions: () => store.activeStateCounts(),
  }
}

export type Jobs = ReturnType<typeof createJobs>
