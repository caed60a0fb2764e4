import type { Db } from '../../common/sqlite.js'
import type { Logger } from '../../common/logger.js'
import type { WalSync } from './wal-sync.js'

/**
 * Group commit: every write the hub makes on the hot path (telemetry, events,
 * presence, dead letters) is queued here and applied in one transaction every
 * `flushDelayMs` or as soon as `maxBatchWeight` is queued, whichever comes
 * first. One fsync then covers thousands of rows, which is what makes
 * "acknowledge only what is durably stored" fast; with a WalSync that fsync
 * runs in the thread pool while the event loop goes on reading packets.
 *
 * An operation runs inside the transaction and returns what to do after the
 * commit (publish an ack, ...). Each operation runs in its own savepoint: one
 * that throws is rolled back alone and logged, so a single bad write cannot
 * sink the rest of the group: every other operation commits and its
 * after-commit step (its ack) runs (M19b). The one that failed is reported to
 * its owner after the commit (`onFailed`), so ingress can dead-letter the
 * message that carried it and strike its sender, unless the failure was the
 * database's own (disk full, I/O): then it is treated like a failed commit.
 * If the commit itself fails, nothing is applied and no after-commit step
 * runs; senders retry what they did not see acknowledged. Either way
 * `onRollback` hooks let owners drop caches they advanced optimistically.
 *
 * `commit` is for a write someone waits on (a command's record before it is
 * published, its outcome before its caller is answered): it asks for the
 * group to commit at the end of this turn of the event loop instead of after
 * `flushDelayMs`, and says when it is durable, or that it is not. Every write
 * queued by then shares that transaction and its fsync, so many commands at
 * once still cost one commit per turn, not one each.
 */

export type AfterCommit = () => void
export type WriteOp = (db: Db) => AfterCommit | void
/** Told, after the commit, that its operation threw and was rolled back alone. */
export type OnFailed = (err: Error) => void

/**
 * Whose failure an operation's error is. SQLite's codes for the database's
 * own condition (full, I/O, busy, locked, out of memory, corrupt, read-only)
 * say nothing about what the operation carried: its sender retries, as after
 * a failed commit. Anything else (a constraint, a RangeError from a value it
 * could not serialise) is the operation's own, and retrying it would fail again.
 */
export function blameOf(err: unknown): 'operation' | 'database' {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string' || !(err instanceof Error) || err.name !== 'SqliteError') return 'operation'
  return /^SQLITE_(FULL|IOERR|BUSY|LOCKED|NOMEM|CORRUPT|READONLY|CANTOPEN|NOTADB|INTERRUPT|PROTOCOL)(_|$)/.test(code) ? 'database' : 'operation'
}

export interface WriterOptions {
  readonly flushDelayMs: number
  /**
   * Commit at once when this much is queued. The commit is synchronous, so
   * the queue never grows past it: while SQLite commits, the event loop reads
   * no more packets, and TCP pushes back on the devices.
   */
  readonly maxBatchWeight: number
  /**
   * Called once after each commit that succeeded, with the time from its
   * start to durable (its fsync included, wherever that ran) and its weight
   * (rows): the metrics' histograms. Must be cheap: it runs per commit.
   */
  readonly observeCommit?: (ms: number, rows: number) => void
  /**
   * When given, a group commit is made durable by an fsync in the thread
   * pool (wal-sync.ts) instead of inside COMMIT on the event loop, and its
   * after-commit steps, waiters and commit hooks run once that fsync is done,
   * in commit order. The writer closes it. Without it (tests of the writer
   * alone) everything runs in `flush`, as SQLite's own synchronous setting
   * made the commit durable.
   */
  readonly walSync?: WalSync
  /**
   * Told once that an fsync of the WAL failed. The writer has stopped for
   * good by then: see `fail`. The hub logs it and stops.
   */
  readonly onSyncFailed?: (err: Error) => void
}

/** A `commit` caller waiting on its write. */
interface Waiter {
  readonly resolve: () => void
  readonly reject: (err: Error) => void
}

interface Queued {
  readonly op: WriteOp
  readonly waiter: Waiter | undefined
  readonly onFailed: OnFailed | undefined
}

/** What a flush left to do once its commit is durable. */
interface Outcome {
  readonly after: readonly AfterCommit[]
  readonly applied: readonly Waiter[]
  readonly refused: ReadonlyArray<[Waiter, unknown]>
  readonly failed: ReadonlyArray<[OnFailed, Error]>
  readonly committed: boolean
  /** What the written hooks left at the commit: run after the after-commit steps and commit hooks. */
  readonly later: ReadonlyArray<() => void>
  /** performance.now() as the commit began: observeCommit hears the time to durable. */
  readonly t0: number
  readonly weight: number
  /** Durable (or failed, with nothing to wait for): its steps may run. */
  ready: boolean
}

const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)))

export interface WriterStats {
  readonly commits: number
  readonly failedCommits: number
  readonly failedOps: number
  readonly queuedWeight: number
  readonly lastCommitMs: number
  readonly lastCommitWeight: number
  /** How long the oldest write queued now has waited for its commit, in ms (0: nothing queued). */
  readonly oldestQueuedMs: number
  /** Commits written and waiting for their fsync in the thread pool (0 without a WalSync). */
  readonly awaitingSync: number
  /** Fsyncs of the WAL that failed (at most 1: the writer stops at the first). */
  readonly failedSyncs: number
}

export function createWriter(db: Db, options: WriterOptions, logger: Logger) {
  let queue: Queued[] = []
  let queuedWeight = 0
  /** performance.now() of the first write queued since the last flush. */
  let queuedSince = 0
  let timer: NodeJS.Timeout | undefined
  let soon: NodeJS.Immediate | undefined
  let closed = false
  const rollbackHooks: Array<() => void> = []
  const commitHooks: Array<() => void> = []
  const writtenHooks: Array<() => (() => void) | void> = []
  const commitFailedHooks: Array<() => void> = []
  const stats = { commits: 0, failedCommits: 0, failedOps: 0, failedSyncs: 0, lastCommitMs: 0, lastCommitWeight: 0 }
  const { walSync } = options
  /** Flushes in commit order whose steps have not run yet: each waits for its fsync and for those before it. */
  const unreleased: Outcome[] = []
  /** Set by a failed fsync: from then on nothing is committed or acknowledged. */
  let broken: Error | undefined

  // Called inside runAll's transaction, better-sqlite3 makes this a savepoint.
  const runOne = db.transaction((op: WriteOp) => op(db))
  /** Runs the group: what to do after the commit, and the waiters whose write is in it or was rolled back alone. */
  const runAll = db.transaction((ops: Queued[]) => {
    const after: AfterCommit[] = []
    const applied: Waiter[] = []
    const refused: Array<[Waiter, unknown]> = []
    const failed: Array<[OnFailed, Error]> = []
    for (const { op, waiter, onFailed } of ops) {
      try {
        const a = runOne(op)
        if (a) after.push(a)
        if (waiter) applied.push(waiter)
      } catch (err) {
        stats.failedOps++
        const blame = blameOf(err)
        logger.error({ err, blame }, 'write rolled back alone; the rest of the group commits')
        for (const hook of rollbackHooks) hook()
        if (waiter) refused.push([waiter, err])
        // Reported after the commit: the owner's reaction (a dead letter) is a write of its own.
        if (onFailed && blame === 'operation') failed.push([onFailed, asError(err)])
      }
    }
    return { after, applied, refused, failed }
  })

  function flush(): void {
    if (timer) { clearTimeout(timer); timer = undefined }
    if (soon) { clearImmediate(soon); soon = undefined }
    if (queue.length === 0) return
    if (broken) { refuseQueued(broken); return }
    // Inside someone's transaction (an op that filled the batch, a flush from a transaction):
    // the group would only be a savepoint of theirs, and SQLite refuses to change the
    // synchronous setting there. It commits at the end of this turn instead.
    if (db.inTransaction) { soon = setImmediate(flush); return }
    const ops = queue
    const weight = queuedWeight
    queue = []
    queuedWeight = 0
    const t0 = performance.now()
    let outcome: Outcome
    try {
      const r = walSync ? walSync.unsynced(() => runAll(ops)) : runAll(ops)
      stats.commits++
      outcome = { ...r, committed: true, later: written(), t0, weight, ready: walSync === undefined }
    } catch (err) {
      stats.failedCommits++
      logger.error({ err, ops: ops.length, weight }, 'group commit failed; its writes are dropped and will be retried by their senders')
      for (const hook of rollbackHooks) hook()
      for (const hook of commitFailedHooks) hook()
      const refused = ops.flatMap((o): Array<[Waiter, unknown]> => (o.waiter ? [[o.waiter, err]] : []))
      outcome = { after: [], applied: [], refused, failed: [], committed: false, later: written(), t0, weight, ready: true }
    }
    stats.lastCommitMs = performance.now() - t0
    stats.lastCommitWeight = weight
    unreleased.push(outcome)
    if (!outcome.ready && walSync) walSync.sync((err) => { synced(outcome, err) })
    release()
  }

  /** The written hooks, as the group's transaction ends: what they leave to run once it is durable. */
  function written(): Array<() => void> {
    const out: Array<() => void> = []
    for (const hook of writtenHooks) {
      try {
        const later = hook()
        if (later) out.push(later)
      } catch (err) { logger.error({ err }, 'written hook failed') }
    }
    return out
  }

  /** The fsync covering `outcome` is done. */
  function synced(outcome: Outcome, err: Error | null): void {
    if (outcome.ready || broken) return // released by close() meanwhile, or the writer has stopped
    if (err) { fail(err); return }
    outcome.ready = true
    release()
  }

  /**
   * An fsync of the WAL failed. Unlike a failed COMMIT this cannot be undone:
   * the group is in the database, visible, its stream marks moved on, and a
   * later fsync may report success for pages the kernel already dropped
   * (PostgreSQL's lesson). So the writer stops for good: no step of this
   * commit or any later one runs (no ack, no publish), every waiter is
   * refused, every new write is refused, and the owner is told (the hub
   * stops). The devices keep what was not acknowledged and send it again to
   * the restarted hub, whose recovery reads what did reach the disk.
   */
  function fail(err: Error): void {
    broken = err
    stats.failedSyncs++
    logger.fatal({ err, awaiting: unreleased.length }, 'fsync of the database\'s WAL failed: the hub stops acknowledging and must be restarted once the disk is checked')
    for (const o of unreleased.splice(0)) {
      for (const w of o.applied) w.reject(err)
      for (const [w] of o.refused) w.reject(err)
    }
    refuseQueued(err)
    try { options.onSyncFailed?.(err) } catch (e) { logger.error({ err: e }, 'sync-failure handler failed') }
  }

  function refuseQueued(err: Error): void {
    const ops = queue
    queue = []
    queuedWeight = 0
    for (const o of ops) o.waiter?.reject(err)
  }

  /** Runs the steps of every flush whose commit is durable, oldest first, up to the first that is not. */
  function release(): void {
    while (unreleased.length > 0 && unreleased[0]!.ready) runSteps(unreleased.shift()!)
  }

  function runSteps({ after, applied, refused, failed, committed, later, t0, weight }: Outcome): void {
    const ms = performance.now() - t0
    for (const a of after) {
      try { a() } catch (err) { logger.error({ err }, 'after-commit step failed') }
    }
    for (const [onFailed, err] of failed) {
      try { onFailed(err) } catch (e) { logger.error({ err: e }, 'failed-write report failed') }
    }
    // Promises: their callers run after this flush, never inside it.
    for (const w of applied) w.resolve()
    for (const [w, err] of refused) w.reject(asError(err))
    for (const hook of commitHooks) {
      try { hook() } catch (err) { logger.error({ err }, 'commit hook failed') }
    }
    // Last: the acks the commit hooks just wrote leave with the PUBACKs held for them.
    for (const l of later) {
      try { l() } catch (err) { logger.error({ err }, 'written hook\'s later step failed') }
    }
    if (committed && options.observeCommit) {
      try { options.observeCommit(ms, weight) } catch (err) { logger.error({ err }, 'commit observer failed') }
    }
  }

  function push(op: WriteOp, weight: number, waiter: Waiter | undefined, onFailed?: OnFailed, urgent = waiter !== undefined): void {
    if (closed) throw new Error('writer is closed')
    if (broken) throw new Error(`the database's fsync failed (${broken.message}); nothing more is written until the hub is restarted`)
    if (queue.length === 0) queuedSince = performance.now()
    queue.push({ op, waiter, onFailed })
    queuedWeight += weight
    if (queuedWeight >= options.maxBatchWeight) flush()
    else if (urgent) soon ??= setImmediate(flush)
    else timer ??= setTimeout(flush, options.flushDelayMs)
  }

  /**
   * Queues `op` for the next group commit. `onFailed` hears, after that
   * commit, that `op` itself threw and was rolled back alone (not when the
   * database failed, nor when the whole commit did).
   */
  function enqueue(op: WriteOp, weight = 1, onFailed?: OnFailed): void {
    push(op, weight, undefined, onFailed)
  }

  /**
   * Queues `op` to commit at the end of this turn of the event loop, with
   * everything queued by then. Resolves once it is committed and its
   * after-commit step has run; rejects if it was rolled back (the op threw,
   * or the commit failed) or the writer is closed.
   */
  function commit(op: WriteOp, weight = 1): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      try {
        push(op, weight, { resolve, reject })
      } catch (err) {
        reject(asError(err))
      }
    })
  }

  /**
   * As commit, but with the next group commit in its own time (within
   * flushDelayMs), not at the end of this turn: for a caller that needs to
   * know when its write is durable but not soon. A commit forced early
   * makes the groups of everything else smaller.
   */
  function commitWithGroup(op: WriteOp, weight = 1): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      try {
        push(op, weight, { resolve, reject }, undefined, false)
      } catch (err) {
        reject(asError(err))
      }
    })
  }

  return {
    enqueue,
    commit,
    commitWithGroup,
    flush,
    onRollback: (hook: () => void) => { rollbackHooks.push(hook) },
    /** Runs when a whole group failed to commit (not when one operation was rolled back alone). */
    onCommitFailed: (hook: () => void) => { commitFailedHooks.push(hook) },
    /** Runs once after each flush's after-commit steps, once durable: where owners send what they coalesced. */
    onCommit: (hook: () => void) => { commitHooks.push(hook) },
    /**
     * Runs as each group's transaction ends (committed, or failed), before
     * its fsync: what mirrors the transaction in memory is promoted or reset
     * here, since the next group may be written before this one is durable.
     * A function it returns runs after that commit's after-commit steps and
     * commit hooks, once the commit is durable: for what is closed at the
     * commit and sent with its acks (the connections whose PUBACKs are held
     * for them).
     */
    onWritten: (hook: () => (() => void) | void) => { writtenHooks.push(hook) },
    stats: (): WriterStats => ({
      ...stats, queuedWeight, oldestQueuedMs: queue.length === 0 ? 0 : performance.now() - queuedSince,
      awaitingSync: unreleased.filter((o) => !o.ready).length,
    }),
    /** Commits what is queued, waits for it to be on disk, runs its steps, and refuses more. */
    close(): void {
      flush()
      closed = true
      if (!walSync) return
      if (unreleased.length > 0 && !broken) {
        try {
          walSync.syncNow()
          for (const o of unreleased) o.ready = true
          release()
        } catch (e) {
          fail(asError(e))
        }
      }
      walSync.close()
    },
  }
}

export type Writer = ReturnType<typeof createWriter>
