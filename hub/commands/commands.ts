import { randomId } from '../../common/random-id.js'
import type { Clock } from '../../common/clock.js'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import { encode } from '../../protocol/codec.js'
import type { CommandResponse } from '../../protocol/messages.js'
import { topics } from '../../protocol/topics.js'
import type { CommandCause, CommandRecord, CommandStore, NewCommand } from './store.js'
import {
  SKIPPED_OFFLINE, checkCommandSpec, groupCounts, memberTurn, offlineError, replyOutcome, sendAgain, unansweredOutcome, unsupportedError, type CheckedSpec,
} from './decisions.js'
import { createInFlight, type Dispatched } from './in-flight.js'
import { createQueuing } from './queued.js'
import { parseTarget, resolveTarget } from '../fleet/targets.js'
import type { Jobs } from '../jobs/jobs.js'
import type { Registry } from '../fleet/registry.js'

/**
 * Commands: the push half (DESIGN.md, "Commands"): act now, or fail now.
 *
 * A command to one device:
 *   not reachable   -> DEVICE_OFFLINE at once, with when it was last seen
 *                      (or, with ifOffline "queue", a job for it instead)
 *   reachable       -> cmd/req is published with a unique id and expiresAt,
 *                      and the call waits for the first of:
 *                        the device's reply          -> its result or its error
 *                        the deadline                -> COMMAND_TIMEOUT
 *                        the device's connection ends -> DEVICE_DISCONNECTED
 *                      A reply after that is recorded as late and changes nothing.
 *
 * A group command sends to the reachable members only, at most
 * `groupConcurrency` in flight, under one deadline, and reports each
 * member's outcome and who was skipped as offline.
 *
 * Every command is recorded (store.ts), durably before it counts:
 * a command is published only once its record is committed, and its caller
 * answered (outcome, DEVICE_OFFLINE, queued) only once the outcome is. The
 * commits are the writer's group commit at the end of the event loop's turn,
 * so commands in flight together share one transaction and one fsync. A hub
 * that dies at any moment leaves every command it sent in the record, and
 * every answer it gave; a command it sent but had no recorded answer for is
 * settled at the next start as HUB_RESTART.
 *
 * This module reads presence, records and publishes; what it decides with
 * (whether a spec may be sent, why a device is refused, a group member's
 * turn, how a command ended) is pure, in decisions.ts, and who is still
 * waiting for a command to end is kept in in-flight.ts.
 */

export interface CommandsOptions {
  readonly defaultTimeoutMs: number
  readonly groupConcurrency: number
}

export interface CommandsDeps {
  /** The command record: the hub's SQLite file, or a PostgreSQL shared by several hubs. */
  readonly store: CommandStore
  readonly registry: Registry
  readonly jobs: Jobs
  /** Reachable now: connected, and a birth received for this connection's epoch. */
  readonly isReachable: (deviceId: string) => boolean
  /** When the device was last heard from (null: never). */
  readonly lastSeen: (deviceId: string) => number | null
  /** What the device's last birth advertised (empty: unknown, e.g. a device that is not a rollcall agent). */
  readonly capabilities: (deviceId: string) => readonly string[]
  readonly publish: (topic: string, payload: Buffer) => Promise<void>
  readonly clock: Clock
  readonly logger: Logger
  /** Called once per command sent, when it ends, with how and its send-to-outcome time (a metric's histogram). */
  readonly observeDuration?: (outcome: CommandOutcome['status'], ms: number) => void
}

export interface CommandSpec {
  readonly name: string
  readonly args?: unknown
  readonly timeoutMs?: number
  /** What to do when the device is not reachable: fail at once (default), or turn the command into a job. */
  readonly ifOffline?: 'fail' | 'queue'
}

/** How one device's command ended. */
export type CommandOutcome =
  | { readonly id: string; readonly deviceId: string; readonly status: 'succeeded'; readonly result: unknown; readonly durationMs: number }
  | { readonly id: string; readonly deviceId: string; readonly status: 'failed'; readonly error: { readonly code: string; readonly message: string }; readonly durationMs: number }
  | { readonly id: string; readonly deviceId: string; readonly status: 'timed_out' | 'disconnected'; readonly error: { readonly code: string; readonly message: string }; readonly durationMs: number }

export interface QueuedCommand {
  readonly id: string
  readonly deviceId: string
  readonly status: 'queued'
  readonly jobId: string
}

export interface GroupResult {
  readonly id: string
  readonly target: string
  readonly name: string
  readonly outcomes: readonly CommandOutcome[]
  /** Members that were not reachable: not sent anything. */
  readonly skipped: ReadonlyArray<{ readonly deviceId: string; readonly lastSeen: number | null }>
  /** With ifOffline "queue": the job made for the skipped members. */
  readonly jobId: string | null
  readonly counts: Readonly<Record<'succeeded' | 'failed' | 'timed_out' | 'disconnected' | 'skipped', number>>
  readonly durationMs: number
}

/** A command sent under a given id, for a cause: a rule's action (hub/rules/actions.ts). */
export interface SendOrigin {
  readonly id: string
  readonly cause?: CommandCause
  /** Carried out again (after a restart): the id may have a record already, which decides. */
  readonly again?: boolean
}


export interface CommandStats {
  readonly sent: number
  readonly succeeded: number
  readonly failed: number
  readonly timedOut: number
  readonly disconnected: number
  readonly offline: number
  readonly queued: number
  readonly lateReplies: number
  readonly unknownReplies: number
  readonly pending: number
}

export async function createCommands(options: CommandsOptions, deps: CommandsDeps) {
  const { registry, clock, logger, store } = deps
  const orphans = await store.settleOrphans(clock.now())
  if (orphans > 0) logger.warn({ commands: orphans }, 'commands left in flight by the last hub process recorded as disconnected (HUB_RESTART)')
  let stopped = false
  const inFlight = createInFlight(clock)
  const queuing = createQueuing(deps.jobs)
  const stats = { sent: 0, succeeded: 0, failed: 0, timedOut: 0, disconnected: 0, offline: 0, queued: 0, lateReplies: 0, unknownReplies: 0 }

  function validate(spec: CommandSpec): CheckedSpec {
    if (stopped) throw new RollcallError('UNAVAILABLE', 'the hub is stopping; send the command again when it is back')
    return checkCommandSpec(spec, options.defaultTimeoutMs)
  }

  /** The record could not be written (a full disk, an I/O error): the caller is told, not answered as if it were. */
  function notRecorded(err: unknown, what: string, details: Record<string, unknown>): RollcallError {
    logger.error({ err, ...details }, `command record not written: ${what}`)
    return new RollcallError('INTERNAL', `${what}: the hub could not write its record (${(err as Error).message}); see the hub log`, details)
  }

  /** A record's commit, settled with the error for the caller if it failed: never rejects, so it may wait unobserved. */
  function written(write: Promise<void>, what: string, details: Record<string, unknown>): Promise<RollcallError | undefined> {
    return write.then(() => undefined, (err: unknown) => notRecorded(err, what, details))
  }

  /** Waits for a record to be committed; a failure becomes INTERNAL for the caller. */
  async function recorded(write: Promise<void>, what: string, details: Record<string, unknown>): Promise<void> {
    const failed = await written(write, what, details)
    if (failed) throw failed
  }

  /**
   * Ends a command in flight: its outcome goes to the record, and to its sender
   * with the promise of that commit. Returns that promise too (it never
   * rejects: a failed record is its value), for stop() to wait on.
   */
  function settle(id: string, outcome: CommandOutcome, result: string | null): Promise<unknown> | undefined {
    const p = inFlight.take(id)
    if (!p) return undefined
    deps.observeDuration?.(outcome.status, outcome.durationMs)
    const what = `"${p.deviceId}" ${outcome.status === 'succeeded' || outcome.status === 'failed' ? 'answered' : 'ended'} (${outcome.status})`
    const recorded = written(store.finish(p.rec, outcome.status, clock.now(), result, 'error' in outcome ? outcome.error : null), what, { id, deviceId: p.deviceId, outcome })
    p.resolve({ outcome, recorded })
    return recorded
  }

  /**
   * Records a command, publishes it to a reachable device once the record is
   * committed, and resolves with how it ended; rejects only when its record
   * could not be written (then nothing was sent).
   */
  function dispatch(deviceId: string, name: string, argsJson: string | null, args: unknown, timeoutMs: number, groupId: string | null, origin?: SendOrigin): Promise<Dispatched> {
    const id = origin?.id ?? randomId('c')
    const now = clock.now()
    const expiresAt = now + timeoutMs
    let t0 = performance.now()
    const ms = () => Math.round((performance.now() - t0) * 1000) / 1000
    const rec: NewCommand = { id, deviceId, name, args: argsJson, groupId, status: 'sent', createdAt: now, expiresAt, ...(origin?.cause ? { cause: origin.cause } : {}) }
    stats.sent++
    return new Promise<Dispatched>((resolve, reject) => {
      const timer = clock.setTimeout(() => {
        stats.timedOut++
        void settle(id, unansweredOutcome(id, deviceId, { why: 'deadline', timeoutMs }, ms()), null)
      }, timeoutMs)
      inFlight.add({ rec, deviceId, startedAt: t0, timer, resolve, reject })
      // Published only once its record is committed: from then on a hub that dies finds it at its next start.
      store.add(rec).then(() => {
        // Ended meanwhile (its deadline, its device's disconnect, the hub stopping): its outcome is recorded, nothing is sent.
        const p = inFlight.get(id)
        if (!p) return
        // durationMs is the device's leg, from the publish: the commit before it is the hub's.
        p.startedAt = t0 = performance.now()
        deps.publish(topics.cmdReq(deviceId), encode({ type: 'cmd.req', v: 1, id, name, ...(args === undefined ? {} : { args }), expiresAt }))
          .catch((err: unknown) => {
            logger.warn({ err, deviceId, id }, 'command publish failed')
            stats.disconnected++
            void settle(id, unansweredOutcome(id, deviceId, { why: 'not-delivered', detail: (err as Error).message }, ms()), null)
          })
      }, (err: unknown) => {
        // Not recorded, so not sent: a command the record does not know must never run.
        const p = inFlight.take(id)
        p?.reject(notRecorded(err, `command "${name}" to "${deviceId}" was not sent`, { id, deviceId }))
      })
    })
  }

  /**
   * Sends a command to one device. Resolves with its outcome (including the
   * device's own error); throws DEVICE_OFFLINE when it is not reachable (unless
   * queued), and bad input as BAD_REQUEST.
   */
  async function send(deviceId: string, spec: CommandSpec, origin?: SendOrigin): Promise<CommandOutcome | QueuedCommand> {
    registry.requireDevice(deviceId)
    let { args, timeoutMs } = validate(spec)
    const prior = origin?.again ? await store.get(origin.id) : undefined
    // On PostgreSQL that read is a round trip: the hub may have begun to stop meanwhile, and time has passed.
    if (stopped) throw new RollcallError('UNAVAILABLE', 'the hub is stopping; send the command again when it is back')
    const now = clock.now()
    const queuedAs = origin?.again && !prior ? await queuing.queuedAs(origin.id) : undefined
    if (origin && queuedAs !== undefined) {
      // Queued as its job by the last run, which died before the command's own record: the job stands.
      const jobId = queuedAs
      await recorded(store.add({ id: origin.id, deviceId, name: spec.name, args, groupId: null, status: 'queued', createdAt: now, expiresAt: now + timeoutMs, jobId, ...(origin.cause ? { cause: origin.cause } : {}) }),
        `command "${spec.name}" to "${deviceId}" was queued as job ${jobId}`, { id: origin.id, deviceId, jobId })
      return { id: origin.id, deviceId, status: 'queued', jobId }
    }
    if (prior) {
      const again = sendAgain(prior, now, deps.isReachable(deviceId))
      if ('answer' in again) return again.answer
      ;({ timeoutMs, args } = again)
    }
    const unsupported = unsupportedError(deviceId, deps.capabilities(deviceId))
    if (unsupported) throw unsupported
    const cause = origin?.cause ? { cause: origin.cause } : {}
    if (!deps.isReachable(deviceId)) {
      const id = origin?.id ?? randomId('c')
      if (spec.ifOffline === 'queue') {
        const jobId = await queuing.queue(spec, [deviceId], origin)
        stats.queued++
        await recorded(store.add({ id, deviceId, name: spec.name, args, groupId: null, status: 'queued', createdAt: now, expiresAt: now + timeoutMs, jobId, ...cause }),
          `command "${spec.name}" to "${deviceId}" was queued as job ${jobId}`, { id, deviceId, jobId })
        return { id, deviceId, status: 'queued', jobId }
      }
      const err = offlineError(deviceId, id, deps.lastSeen(deviceId))
      stats.offline++
      await recorded(store.add({ id, deviceId, name: spec.name, args, groupId: null, status: 'offline', createdAt: now, expiresAt: now + timeoutMs, error: { code: err.code, message: err.message }, ...cause }),
        `"${deviceId}" is offline and nothing was sent`, { id, deviceId })
      throw err
    }
    // Its reads were awaited (round trips on PostgreSQL): a hub that began to stop meanwhile sends nothing more.
    if (stopped) throw new RollcallError('UNAVAILABLE', 'the hub is stopping; send the command again when it is back')
    const { outcome, recorded: failed } = await dispatch(deviceId, spec.name, args, spec.args, timeoutMs, null, origin)
    // Answered only once the outcome is durable.
    const notWritten = await failed
    if (notWritten) throw notWritten
    return outcome
  }

  /** Sends to every reachable member of `target` (at most groupConcurrency at once), under one deadline. */
  async function sendGroup(targetText: string, spec: CommandSpec, cause?: CommandCause): Promise<GroupResult> {
    const caused = cause ? { cause } : {}
    const target = parseTarget(targetText)
    const { args, timeoutMs } = validate(spec)
    const members = resolveTarget(target, registry)
    if (members.length === 0) throw new RollcallError('TARGET_EMPTY', `target "${targetText}" matches no registered device`)
    const groupId = randomId('c')
    const now = clock.now()
    const deadline = now + timeoutMs
    const t0 = performance.now()
    const reachable: string[] = []
    const skipped: Array<{ deviceId: string; lastSeen: number | null }> = []
    for (const d of members) {
      if (deps.isReachable(d)) reachable.push(d)
      else skipped.push({ deviceId: d, lastSeen: deps.lastSeen(d) })
    }
    let jobId: string | null = null
    if (skipped.length > 0 && spec.ifOffline === 'queue') jobId = await queuing.queue(spec, skipped.map((s) => s.deviceId), cause ? { id: groupId, cause } : undefined)
    // The job for the offline members stands; nothing is sent by a hub that began to stop while it was made.
    if (stopped) throw new RollcallError('UNAVAILABLE', 'the hub is stopping; send the command again when it is back')
    // Every member's record; the reply waits for them all.
    const records: Array<Promise<RollcallError | undefined>> = []
    const note = (write: Promise<void>) => { records.push(written(write, `group command ${groupId}`, { groupId })) }
    let failure: RollcallError | undefined
    for (const s of skipped) {
      note(store.add({
        id: randomId('c'), deviceId: s.deviceId, name: spec.name, args, groupId, status: jobId ? 'queued' : 'offline', createdAt: now, expiresAt: deadline,
        ...(jobId ? { jobId } : { error: SKIPPED_OFFLINE }), ...caused,
      }))
      if (jobId) stats.queued++
      else stats.offline++
    }
    const outcomes: CommandOutcome[] = []
    let next = 0
    const worker = async () => {
      while (next < reachable.length) {
        const d = reachable[next++]!
        const at = clock.now()
        const left = deadline - at
        const turn = memberTurn(deps.isReachable(d), left)
        if (turn.verdict === 'offline') {
          // Went away since the group started: skipped, not sent into the void.
          skipped.push({ deviceId: d, lastSeen: deps.lastSeen(d) })
          note(store.add({ id: randomId('c'), deviceId: d, name: spec.name, args, groupId, status: 'offline', createdAt: at, expiresAt: deadline, error: turn.error, ...caused }))
          stats.offline++
          continue
        }
        if (turn.verdict === 'expired') {
          // Recorded like any other member: with its own id, and why it was never sent.
          const id = randomId('c')
          note(store.add({ id, deviceId: d, name: spec.name, args, groupId, status: 'timed_out', createdAt: at, expiresAt: deadline, error: turn.error, ...caused }))
          stats.timedOut++
          outcomes.push({ id, deviceId: d, status: 'timed_out', error: turn.error, durationMs: 0 })
          continue
        }
        try {
          // The next member goes out as soon as this one's outcome is known, not after its commit.
          const { outcome, recorded: failed } = await dispatch(d, spec.name, args, spec.args, left, groupId)
          outcomes.push(outcome)
          records.push(failed)
        } catch (err) {
          // Its record could not be written (logged); the others go on, and the reply says so below.
          failure ??= err as RollcallError // dispatch rejects only with notRecorded's error
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(options.groupConcurrency, reachable.length) }, worker))
    for (const r of await Promise.all(records)) failure ??= r
    if (failure !== undefined) throw failure
    return { id: groupId, target: targetText, name: spec.name, outcomes, skipped, jobId, counts: groupCounts(outcomes, skipped.length), durationMs: Math.round(performance.now() - t0) }
  }

  /** A device's cmd.res: settles its pending command, or is recorded as late. */
  function response(deviceId: string, m: CommandResponse): void {
    const p = inFlight.get(m.id)
    if (!p || p.deviceId !== deviceId) {
      // After the deadline or a disconnect, or a reply to a command this hub process never sent.
      // Late only if its command ended unanswered: on an external broker every hub gets every reply,
      // and the hubs that did not send the command see the sender's answer here too.
      if (p !== undefined) stats.unknownReplies++
      store.late(m.id, deviceId, clock.now(), JSON.stringify(m.ok ? { ok: true, result: m.result ?? null } : { ok: false, error: m.error ?? null })).then(
        (kept) => { if (kept && p === undefined) stats.lateReplies++ },
        (err: unknown) => { logger.warn({ err, id: m.id, deviceId }, 'a late command reply was not recorded') },
      )
      return
    }
    const durationMs = Math.round((performance.now() - p.startedAt) * 1000) / 1000
    if (m.ok) stats.succeeded++
    else stats.failed++
    const { outcome, result } = replyOutcome(deviceId, m, durationMs)
    void settle(m.id, outcome, result)
  }

  /** The device's connection ended: its commands in flight end now. */
  function disconnected(deviceId: string): void {
    for (const id of inFlight.idsOf(deviceId)) {
      const p = inFlight.get(id)
      if (!p) continue
      stats.disconnected++
      const durationMs = Math.round((performance.now() - p.startedAt) * 1000) / 1000
      void settle(id, unansweredOutcome(id, deviceId, { why: 'disconnected' }, durationMs), null)
    }
  }

  async function get(id: string): Promise<CommandRecord> {
    const r = await store.get(id)
    if (!r) throw new RollcallError('COMMAND_NOT_FOUND', `no command "${id}"`)
    return r
  }

  return {
    send,
    sendGroup,
    response,
    disconnected,
    get,
    ofDevice(deviceId: string, limit = 50): Promise<CommandRecord[]> {
      registry.requireDevice(deviceId)
      return store.ofDevice(deviceId, limit)
    },
    ofGroup: (groupId: string): Promise<CommandRecord[]> => store.ofGroup(groupId),
    prune: (cutoff: number) => store.prune(cutoff),
    /**
     * The hub is stopping: new commands are refused (UNAVAILABLE), and every
     * command in flight ends now, so no caller waits for a deadline the hub
     * will not see; then the record is written. Resolves once every one of
     * those records has settled (committed or refused).
     */
    stop(): Promise<void> {
      stopped = true
      const records: Array<Promise<unknown>> = []
      for (const p of inFlight.all()) {
        const id = p.rec.id
        const r = settle(id, unansweredOutcome(id, p.deviceId, { why: 'hub-stopping' }, Math.round(performance.now() - p.startedAt)), null)
        if (r) records.push(r)
      }
      // Committed now, not at the end of the turn: their callers are answered before the API closes.
      return Promise.allSettled([store.flush(), ...records]).then(() => undefined)
    },
    stats: (): CommandStats => ({ ...stats, pending: inFlight.size }),
  }
}

export type Commands = Awaited<ReturnType<typeof createCommands>>
