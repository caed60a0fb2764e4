import type { JobStore } from './store.js'

/**
 * One copy of the job logic over two databases (issue #18). On the hub's
 * SQLite file a job transaction runs inside the group-commit writer's
 * transaction, synchronously: nothing may come between its reads and its
 * writes. On PostgreSQL every read and write is a round trip, so the same
 * transaction is asynchronous. Written as a generator that yields each store
 * call and gets its answer back, the logic runs either way:
 *
 *     function* take(deviceId: string): Step<number> {
 *       const rows = yield* tx.due(deviceId, now, 10)
 *       for (const r of rows) yield* tx.markDelivered(r.key, now, null)
 *       return rows.length
 *     }
 *
 * `runSync(store, take(id))` answers each call from the SQLite store at once
 * and returns inside the writer's operation; `runAsync(ops, take(id))`
 * awaits each answer from PostgreSQL inside a transaction there. A call that
 * fails is thrown into the generator at its `yield*`. A step may catch it
 * only to end: on PostgreSQL a failed statement aborts the transaction, so
 * nothing after it can be written (SQLite would carry on), and a step that
 * carried on would behave differently on the two.
 *
 * A store call without `yield*` in front does nothing: it only makes a
 * generator. Every call in a step is `yield* tx.something(...)`.
 */

/** The store calls a job transaction may make. */
export const JOB_OPS = [
  'insertJob', 'addExecutions', 'due', 'getJob', 'lockJob', 'getExec', 'paceOf', 'pacedDue', 'markDelivered', 'setTat', 'pendingCancels', 'clearCancel',
  'execsIn', 'transition', 'countsOf', 'setJobStatus', 'hasOpen', 'lapsed', 'expiredUndelivered', 'becameDue', 'activePaced', 'activeContinuous', 'openOfDevice',
  // Reads for the API (reads.ts), outside any transaction.
  'listJobs', 'listExecs', 'readExec', 'history', 'recentOfDevice', 'failedOfDevice', 'activeStateCounts', 'hasDue', 'undeliveredAfter', 'pruneFinished',
] as const satisfies ReadonlyArray<keyof JobStore>
export type JobOp = (typeof JOB_OPS)[number]
export type JobOps = Pick<JobStore, JobOp>

/** The same calls, each answered later (PostgreSQL). */
export type AsyncJobOps = { readonly [K in JobOp]: (...args: Parameters<JobOps[K]>) => Promise<ReturnType<JobOps[K]>> }

export interface Call { readonly op: JobOp; readonly args: readonly unknown[] }

/** A job transaction, or a part of one, that ends with a `T`. */
export type Step<T> = Generator<Call, T, unknown>

type Tx = { readonly [K in JobOp]: (...args: Parameters<JobOps[K]>) => Step<ReturnType<JobOps[K]>> }

function caller<K extends JobOp>(op: K): Tx[K] {
  return function* (...args: Parameters<JobOps[K]>): Step<ReturnType<JobOps[K]>> {
    // What the driver sends back is the store's answer to exactly this call.
    return (yield { op, args }) as ReturnType<JobOps[K]>
  } as Tx[K]
}

/** The store calls, for `yield*` inside a job transaction. */
export const tx: Tx = Object.fromEntries(JOB_OPS.map((op) => [op, caller(op)])) as unknown as Tx

type AnyOp = (...args: readonly unknown[]) => unknown

/** Runs a job transaction on the SQLite store, synchronously (inside a writer operation). */
export function runSync<T>(store: JobOps, step: Step<T>): T {
  let next = step.next()
  while (!next.done) {
    const { op, args } = next.value
    let answer: unknown
    try {
      answer = (store[op] as AnyOp)(...args)
    } catch (err) {
      next = step.throw(err)
      continue
    }
    next = step.next(answer)
  }
  return next.value
}

/** Runs a job transaction on an asynchronous store (PostgreSQL, inside a transaction of its own). */
export async function runAsync<T>(ops: AsyncJobOps, step: Step<T>): Promise<T> {
  let next = step.next()
  while (!next.done) {
    const { op, args } = next.value
    let answer: unknown
    try {
      answer = await (ops[op] as (...a: readonly unknown[]) => Promise<unknown>)(...args)
    } catch (err) {
      next = step.throw(err)
      continue
    }
    next = step.next(answer)
  }
  return next.value
}
