import type { Clock, Random } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { Db } from '../../common/sqlite.js'
import { encode } from '../../protocol/codec.js'
import type { ExecRef } from '../../protocol/messages.js'
import { topics } from '../../protocol/topics.js'
import type { Registry } from '../fleet/registry.js'
import type { AfterCommit, OnFailed, Writer } from '../storage/group-commit.js'
import { createJobStore } from './store.js'
import { runSync, type Step } from './tx.js'

/**
 * What the parts of job dispatch share (jobs.ts builds it once): the options,
 * the store, the counters, and the two ways to reach a device.
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

/**
 * Where job transactions run: the hub's SQLite file (sqliteJobsBackend,
 * below) or a PostgreSQL shared by several hubs (postgres.ts). The job logic
 * is the same steps (tx.ts) on both.
 */
export interface JobsBackend {
  /**
   * A job transaction with the next group of writes. `inside` runs within it,
   * last (the rules' reaction to failed jobs); `after` runs once it is
   * committed (what it sends). `onFailed`: the transaction was refused.
   */
  enqueue<T>(make: () => Step<T>, then: EnqueueOptions<T>): void
  /** A job transaction now (on SQLite after the writes queued before it; on PostgreSQL beside them); resolves once it is committed. */
  now<T>(make: () => Step<T>): Promise<T>
  /** A read for the API, outside any transaction. */
  read<T>(step: Step<T>): Promise<T>
  /** One statement on its own, outside the groups of writes (retention's deletes, chunk by chunk). */
  alone<T>(step: Step<T>): Promise<T>
  /** A number that changes whenever a job or an execution may have changed (the live feed's cue to read again). */
  version(): number
  /** Whether `inside` runs inside the transaction, so the rules can react to failed jobs in it (SQLite only, so far). */
  readonly reacts: boolean
}

export interface EnqueueOptions<T> {
  readonly after: (result: T) => void
  readonly inside?: (result: T) => AfterCommit | void
  /** Rows it may write, so a group commit stays its size (SQLite). */
  readonly weight?: number
  readonly onFailed?: OnFailed
  /** Transactions with the same key run one after another, in the order enqueued (a device's messages; SQLite runs all in order). */
  readonly key?: string
}

/** Job transactions on the hub's SQLite file: queued ones in the group-commit writer's transaction, the others at once in their own. */
export function sqliteJobsBackend(db: Db, writer: Writer): JobsBackend {
  const store = createJobStore(db)
  return {
    enqueue(make, then) {
      writer.enqueue(() => {
        const result = runSync(store, make())
        const reacted = then.inside?.(result)
        return () => {
          reacted?.()
          then.after(result)
        }
      }, then.weight, then.onFailed)
    },
    // At once, as before this was a promise; a failure rejects rather than throws.
    now: (make) => new Promise((resolve) => {
      // Queued writes go first, so the transaction sees the state they describe.
      writer.flush()
      resolve(db.transaction(() => runSync(store, make())).immediate())
    }),
    read: (step) => new Promise((resolve) => { resolve(runSync(store, step)) }),
    alone: (step) => new Promise((resolve) => { resolve(runSync(store, step)) }),
    version: () => store.version(),
    reacts: true,
  }
}

export interface JobsDeps {
  readonly backend: JobsBackend
  readonly registry: Registry
  /** Reachable now (connected, birth received for this epoch), and since when. */
  readonly reachableSince: (deviceId: string) => number | undefined
  /** QoS 1 publish to a device's down-topic. */
  readonly publish: (topic: string, payload: Buffer) => void
  readonly clock: Clock
  readonly random: Random
  readonly logger: Logger
}

/** What a job transaction needs besides the store calls (tx.ts): the options, a logger, randomness for retries' jitter. */
export interface StepEnv {
  readonly options: JobsOptions
  readonly logger: Logger
  readonly random: Random
}

export interface JobCounters {
  pulls: number
  batches: number
  delivered: number
  updatesApplied: number
  updatesDuplicate: number
  updatesRefused: number
  retries: number
  timedOut: number
  expired: number
  aborted: number
}

/**
 * What a transaction counts, booked only once it commits: a write rolled back
 * (alone, or with its whole group) and done again must not count twice.
 */
export type Tally = Partial<Record<Exclude<keyof JobCounters, 'pulls' | 'batches'>, number>>

export function count(tally: Tally, what: keyof Tally, n = 1): void {
  tally[what] = (tally[what] ?? 0) + n
}

/** An execution that failed, or timed out, with no retry left: what rules react to (hub/rules/). */
export interface FailedForGood {
  readonly deviceId: string
  readonly jobId: string
  readonly name: string
  readonly outcome: 'failed' | 'timed_out'
  readonly attempt: number
  readonly error: string | null
  /** The rule whose firing made the job, if one did. */
  readonly causeRule: string | null
}

/** Runs last inside the write that ended them; what it returns runs after the commit. */
export type FailureReaction = (failed: readonly FailedForGood[]) => AfterCommit | void

export interface JobsContext {
  readonly options: JobsOptions
  readonly deps: JobsDeps
  readonly backend: JobsBackend
  readonly counters: JobCounters
  /** Adds what a committed transaction counted. */
  readonly book: (tally: Tally) => void
  /** Rings a device's doorbell (jobs/notify), with the stop notices it is owed. */
  readonly ring: (deviceId: string, cancel?: readonly ExecRef[]) => void
  readonly reachable: (deviceId: string) => boolean
  /** Hands a write's failures for good to the rules (set by reactWith); called last in the write. */
  readonly reactToFailures: (failed: readonly FailedForGood[]) => AfterCommit | void
  readonly reactWith: (r: FailureReaction) => void
}

export function createJobsContext(options: JobsOptions, deps: JobsDeps): JobsContext {
  let reaction: FailureReaction | undefined
  const counters: JobCounters = { pulls: 0, batches: 0, delivered: 0, updatesApplied: 0, updatesDuplicate: 0, updatesRefused: 0, retries: 0, timedOut: 0, expired: 0, aborted: 0 }
  return {
    options,
    deps,
    backend: deps.backend,
    counters,
    book: (tally) => {
      for (const [k, n] of Object.entries(tally) as Array<[keyof Tally, number]>) counters[k] += n
    },
    ring: (deviceId, cancel) => {
      deps.publish(topics.jobsNotify(deviceId), encode(cancel && cancel.length > 0 ? { type: 'jobs.notify', v: 1, cancel: [...cancel] } : { type: 'jobs.notify', v: 1 }))
    },
    reachable: (deviceId) => deps.reachableSince(deviceId) !== undefined,
    reactToFailures: (failed) => (reaction && failed.length > 0 ? reaction(failed) : undefined),
    reactWith: (r) => {
      if (!deps.backend.reacts) throw new Error('rules do not react to failed jobs on PostgreSQL yet')
      reaction = r
    },
  }
}
