import type { Clock, Random } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { Db } from '../../common/sqlite.js'
import { encode } from '../../protocol/codec.js'
import type { ExecRef } from '../../protocol/messages.js'
import { topics } from '../../protocol/topics.js'
import type { Registry } from '../fleet/registry.js'
import type { AfterCommit, Writer } from '../storage/group-commit.js'
import { createJobStore, type JobStore } from './store.js'

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
  readonly store: JobStore
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
    store: createJobStore(deps.db),
    counters,
    book: (tally) => {
      for (const [k, n] of Object.entries(tally) as Array<[keyof Tally, number]>) counters[k] += n
    },
    ring: (deviceId, cancel) => {
      deps.publish(topics.jobsNotify(deviceId), encode(cancel && cancel.length > 0 ? { type: 'jobs.notify', v: 1, cancel: [...cancel] } : { type: 'jobs.notify', v: 1 }))
    },
    reachable: (deviceId) => deps.reachableSince(deviceId) !== undefined,
    reactToFailures: (failed) => (reaction && failed.length > 0 ? reaction(failed) : undefined),
    reactWith: (r) => { reaction = r },
  }
}
