import type { JobIngress } from '../mqtt/ingress.js'
import type { ExecState } from './decisions.js'
import type { JobStatus, JobView } from './store.js'
import { createJobsContext, type JobCounters, type JobsDeps, type JobsOptions } from './context.js'
import { createEndings } from './endings.js'
import { createDispatch } from './dispatch.js'
import { createUpdates } from './updates.js'
import { createSweeper } from './sweeper.js'
import { createLifecycle } from './lifecycle.js'
import { activeCountsStep, executionStep, executionsOfDeviceStep, failuresStep, getStep, listStep, pruneStep, type ExecutionDetail, type JobDetail } from './reads.js'

export type { JobsDeps, JobsOptions } from './context.js'
export type { JobOrigin, JobSpec } from './spec.js'

/**
 * Job dispatch: the hub half of the pull pattern (DESIGN.md, "Jobs"), put
 * together from its parts over one shared context (context.ts):
 *
 * - lifecycle.ts: create (the job and one queued execution per targeted
 *   device in one transaction, then the doorbell: jobs/notify for the
 *   targeted devices reachable now, or as many as a paced rollout allows),
 *   cancel, and devices joining or leaving continuous jobs;
 * - dispatch.ts: a pull is answered with one jobs/batch of the executions
 *   due (planned by decisions.ts, planBatch), leased in one transaction
 *   and sent after its commit; paced rollouts ring their devices in turn;
 * - updates.ts: the device's execution updates, applied by version; jobs/ack
 *   names them after the commit, so an acked update is always stored;
 * - endings.ts: retries, aborts and completions as executions end;
 * - sweeper.ts: lapsed leases, expiries, due retries, paced ringing.
 *
 * Every transaction runs on the backend (context.ts: the SQLite writer and
 * file, or PostgreSQL), each a step of store calls (tx.ts), and every publish
 * happens after the commit it reports: persist first, send second. This file
 * adds the reads (reads.ts).
 */

export type { ExecutionDetail, JobDetail } from './reads.js'

export interface JobStats extends Readonly<JobCounters> {
  /** Paced rollouts being rung now (the sweeper keeps where each left off). */
  readonly pacedRinging: number
}

export function createJobs(options: JobsOptions, deps: JobsDeps) {
  const ctx = createJobsContext(options, deps)
  const { backend } = ctx
  const endings = createEndings(ctx.deps)
  const dispatch = createDispatch(ctx)
  const updates = createUpdates(ctx, endings, dispatch)
  const sweeper = createSweeper(ctx, endings, dispatch)
  const lifecycle = createLifecycle(ctx, endings, dispatch)

  const list = (filter: { status?: JobStatus; before?: string; limit?: number } = {}): Promise<JobView[]> => backend.read(listStep(filter))
  const get = (id: string, filter: { state?: ExecState; after?: string; limit?: number } = {}): Promise<JobDetail> => backend.read(getStep(id, filter))
  const execution = (execId: string): Promise<ExecutionDetail> => backend.read(executionStep(execId))
  const executionsOfDevice = (deviceId: string, limit: number) => backend.read(executionsOfDeviceStep(deviceId, limit))

  /**
   * Retention: deletes jobs that finished (completed, canceled, aborted)
   * before `cutoff`, a few at a time so the event loop keeps serving. An
   * agent's late update for a deleted execution is acked as UNKNOWN_EXECUTION.
   */
  async function prune(cutoff: number, chunkJobs = 1): Promise<number> {
    let total = 0
    for (let n = chunkJobs; n === chunkJobs;) {
      n = await backend.alone(pruneStep(cutoff, chunkJobs))
      total += n
      // The event loop serves between chunks.
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    return total
  }

  const ingress: JobIngress = {
    pull: (deviceId, max, now) => { dispatch.pull(deviceId, max, now) },
    update: (deviceId, message, now, onFailed) => { updates.update(deviceId, message, now, onFailed) },
    online: (deviceId, now) => { dispatch.online(deviceId, now) },
  }

  return {
    create: lifecycle.create,
    check: lifecycle.check,
    cancel: lifecycle.cancel,
    list,
    get,
    execution,
    deviceAdded: lifecycle.deviceAdded,
    deviceRemoved: lifecycle.deviceRemoved,
    prune,
    ingress,
    /** The rules, told of each execution that failed for good, inside the write that ended it. */
    reactWith: ctx.reactWith,
    /** Runs one sweep now (tests; the timer does it every sweepIntervalMs). */
    sweep: sweeper.sweep,
    start: sweeper.start,
    stop: sweeper.stop,
    stats: (): JobStats => ({ ...ctx.counters, pacedRinging: dispatch.pacedRinging() }),
    executionsOfDevice,
    /** A device's executions that failed for good from `sinceMs` to before `untilMs`, oldest first (a rule's dry run). */
    failuresOfDevice: (deviceId: string, sinceMs: number, untilMs: number, limit: number) => backend.read(failuresStep(deviceId, sinceMs, untilMs, limit)),
    /** Changes whenever a job or an execution may have changed (the live feed's cue to re-read). */
    version: () => backend.version(),
    /** Executions of active jobs by state, read now. */
    activeExecutions: () => backend.read(activeCountsStep()),
  }
}

export type Jobs = ReturnType<typeof createJobs>
