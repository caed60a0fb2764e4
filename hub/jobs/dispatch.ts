import { execIdOf } from '../../protocol/ids.js'
import { encode } from '../../protocol/codec.js'
import { LIMITS } from '../../protocol/limits.js'
import type { ExecRef, JobExecution, JobsBatch } from '../../protocol/messages.js'
import { topics } from '../../protocol/topics.js'
import { leaseUntil, planBatch, rolloutRelease } from './decisions.js'
import type { JobRow } from './store.js'
import type { JobsContext, JobsOptions } from './context.js'
import { tx, type Step } from './tx.js'

/**
 * Getting executions to devices: the batch a pull is answered with (leases,
 * redelivery, rollout pacing), the doorbell of a paced rollout going round
 * its devices, and the stop notices a device is owed.
 */

/** Stop notices that ride on one batch (a doorbell takes up to 500: 500 refs of the longest ids stay under 64 KiB). */
const CANCELS_PER_BATCH = 100
/** A batch leaves room under the payload cap for the envelope and the cancel list. */
const BATCH_BUDGET_BYTES = LIMITS.maxPayloadBytes - 8 * 1024
/** Rows of a paced job the ringing looks at per sweep. */
const RING_SCAN_ROWS = 2000

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
    *save(): Step<void> {
      for (const [jobId, g] of grants) if (g.changed && g.tat !== null) yield* tx.setTat(jobId, g.tat)
    },
  }
}

/** Stop notices owed to the device, cleared as they are taken (inside a transaction). */
function* takeCancels(deviceId: string, max: number = LIMITS.maxJobsPerBatch): Step<ExecRef[]> {
  const refs: ExecRef[] = []
  for (const c of yield* tx.pendingCancels(deviceId, max)) {
    yield* tx.clearCancel(c.key)
    refs.push({ execId: execIdOf(c.job_id, deviceId), attempt: c.attempt })
  }
  return refs
}

/**
 * The transaction that answers a pull received at `now`: the executions due
 * for the device (at most `max`, under the payload cap), leased, and the stop
 * notices it is owed, taken. `since`: when its connection became reachable.
 */
export function* pullStep(options: Pick<JobsOptions, 'leaseGraceMs' | 'redeliverAfterMs'>, deviceId: string, max: number, now: number, since: number | undefined): Step<JobsBatch> {
  // The pace of each paced job the pull may release from, read (and on PostgreSQL locked, jobs before
  // executions, in job order) before the stop notices and the due executions: the plan itself reads nothing.
  const tats = new Map<string, number | null>()
  for (const id of yield* tx.pacedDue(deviceId, now)) tats.set(id, yield* tx.paceOf(id))
  // The rest of the stop notices go with the next doorbell or batch; a batch must stay under the payload cap.
  const cancel = yield* takeCancels(deviceId, CANCELS_PER_BATCH)
  const due = yield* tx.due(deviceId, now, max + 64)
  const pace = pacer(now)
  const { take, more } = planBatch(due, {
    max,
    // Send again what was delivered before this connection (it may have been lost with the last one), or long ago.
    redeliverBefore: Math.max(since ?? 0, now - options.redeliverAfterMs),
    budgetBytes: BATCH_BUDGET_BYTES,
    usedBytes: Buffer.byteLength(JSON.stringify(cancel)),
    // A paced job made between the two reads waits for the next pull: its pace was not read.
    release: (r) => tats.has(r.job_id) && pace.take({ job_id: r.job_id, rate_per_min: r.rate_per_min!, tat: tats.get(r.job_id) ?? null }),
  })
  const executions: JobExecution[] = take.map((r) => ({
    execId: execIdOf(r.job_id, r.device_id), jobId: r.job_id, name: r.name, payload: JSON.parse(r.payload) as unknown,
    attempt: r.attempt, version: r.base_version, timeoutMs: r.timeout_ms, priority: r.priority,
    ...(r.expires_at !== null ? { expiresAt: r.expires_at } : {}),
  }))
  for (const r of take) yield* tx.markDelivered(r.key, now, leaseUntil('queued', now, r.timeout_ms, r.expires_at, options.leaseGraceMs))
  yield* pace.save()
  return { type: 'jobs.batch', v: 1, executions, more, ...(cancel.length > 0 ? { cancel } : {}) }
}

/** The stop notices owed to each of `deviceIds`, taken. */
function* cancelsStep(deviceIds: readonly string[]): Step<Array<[string, ExecRef[]]>> {
  const sends: Array<[string, ExecRef[]]> = []
  for (const d of deviceIds) {
    const refs = yield* takeCancels(d)
    if (refs.length > 0) sends.push([d, refs])
  }
  return sends
}

/** A device that came online: the stop notices it missed, taken, and whether work is due for it. */
function* onlineStep(deviceId: string, now: number): Step<{ cancel: ExecRef[]; due: boolean }> {
  const cancel = yield* takeCancels(deviceId)
  return { cancel, due: yield* tx.hasDue(deviceId, now) }
}

/** Up to `limit` undelivered, due executions of a paced job after `afterKey`, in rollout order. */
function* undeliveredStep(jobId: string, now: number, afterKey: number, limit: number): Step<Array<{ key: number; device_id: string }>> {
  return yield* tx.undeliveredAfter(jobId, now, afterKey, limit)
}

export function createDispatch(ctx: JobsContext) {
  const { backend, options, counters, ring, reachable } = ctx

  /** Tells reachable devices which executions they hold were canceled; the rest hear it when they come back. */
  function sendCancels(deviceIds: readonly string[]): void {
    const online = deviceIds.filter(reachable)
    if (online.length === 0) return
    backend.enqueue(() => cancelsStep(online), { after: (sends) => { for (const [d, refs] of sends) ring(d, refs) }, weight: online.length })
  }

  /** A pull, received at `now`: the batch pullStep leases in one transaction goes out after its commit. */
  function pull(deviceId: string, max: number, now: number): void {
    counters.pulls++
    backend.enqueue(() => pullStep(options, deviceId, max, now, ctx.deps.reachableSince(deviceId)), {
      after: (batch) => {
        counters.delivered += batch.executions.length
        counters.batches++
        ctx.deps.publish(topics.jobsBatch(deviceId), encode(batch))
      },
      weight: 1 + max,
      key: deviceId,
    })
  }

  /** A device came online (its birth, received at `now`): tell it of cancellations it missed, and ring if work is due. */
  function online(deviceId: string, now: number): void {
    backend.enqueue(() => onlineStep(deviceId, now), { after: ({ cancel, due }) => { if (cancel.length > 0 || due) ring(deviceId, cancel) }, key: deviceId })
  }

  /** Where each paced job's ringing left off: rings go round the undelivered executions, so offline devices cannot hold the line. */
  const ringCursor = new Map<string, number>()

  /**
   * Rings as many reachable devices with an undelivered execution of a paced
   * job as its pace allows now. Ringing consumes nothing: a device that does
   * not pull (offline since, queue full) leaves its turn to the next ones, and
   * the cursor moves on so the next sweep rings others.
   */
  async function ringPaced(job: JobRow, now: number): Promise<void> {
    try {
      await ringPacedInner(job, now)
    } catch (err) {
      // The next sweep rings again.
      ctx.deps.logger.warn({ err, jobId: job.id }, 'could not ring a paced rollout\'s devices')
    }
  }

  async function ringPacedInner(job: JobRow, now: number): Promise<void> {
    const allowance = rolloutRelease(job.rate_per_min!, job.rollout_tat, now, 10_000).granted
    if (allowance === 0) return
    let rung = 0
    let scanned = 0
    let cursor = ringCursor.get(job.id) ?? 0
    let wrapped = cursor === 0
    while (rung < allowance && scanned < RING_SCAN_ROWS) {
      const rows = await backend.read(undeliveredStep(job.id, now, cursor, 256))
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

  /** Forgets the ringing of jobs no longer paced and active (the sweeper passes the ones that are). */
  function keepRinging(active: readonly JobRow[]): void {
    if (ringCursor.size === 0) return
    const ids = new Set(active.map((j) => j.id))
    for (const id of ringCursor.keys()) if (!ids.has(id)) ringCursor.delete(id)
  }

  return { pull, online, sendCancels, ringPaced, keepRinging, pacedRinging: () => ringCursor.size }
}

export type Dispatch = ReturnType<typeof createDispatch>
