import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { Writer } from '../storage/group-commit.js'
import type { Action, WebhookAction } from './spec.js'
import type { RuleStore, Trigger } from './store.js'
import { backoffMs, postOnce, verdictOf, WEBHOOK_DEFAULTS, type TryResult } from './webhook.js'

/**
 * Carries out the actions of committed firings, each once:
 *
 *   pending ──(carried out)──► done | failed      (its outcome written)
 *      ▲
 *      └── a hub that stops, or dies, with an action under way leaves it
 *          pending; the next start carries it out again, as the same thing:
 *          a command keeps its id (the agent answers a repeat from its
 *          ledger and does not run it twice), a job keeps its id (made once).
 *
 * A command goes to the device that fired the rule (or to a target), pushed
 * only if it is reachable now, and fails fast otherwise unless the rule says
 * `ifOffline: "queue"` (then it is a job). A job is pulled by its devices
 * when they can. An event is published for observers. Ids are made from the
 * firing's, so every record the action leaves names its cause.
 */

/** Who caused a command or a job: the rule and its firing. */
export interface RuleCause {
  readonly rule: string
  readonly firing: string
}

/** How the hub carries out an action; hub.ts binds them to the commands, jobs and the broker. */
export interface RuleActionPorts {
  /**
   * A command to one device, under the given id; resolves with its outcome, throws DEVICE_OFFLINE and the like.
   * `again`: carried out again after a restart, so the id may have a record already (commands.ts send).
   */
  command(deviceId: string, spec: { readonly name: string; readonly args?: unknown; readonly timeoutMs?: number; readonly ifOffline?: 'fail' | 'queue' }, id: string, cause: RuleCause, again: boolean): Promise<unknown>
  /** A command to every reachable member of a target. */
  commandGroup(target: string, spec: { readonly name: string; readonly args?: unknown; readonly timeoutMs?: number; readonly ifOffline?: 'fail' | 'queue' }, cause: RuleCause): Promise<unknown>
  /** A job under the given id; returns what was made, or that it was made already (a repeat after a restart). */
  job(spec: { readonly name: string; readonly payload?: unknown; readonly target: string; readonly timeoutMs?: number }, id: string, cause: RuleCause): Promise<unknown>
  /** Whether a device is reachable now (a resumed command waits for its device to come back). */
  isReachable(deviceId: string): boolean
  /** A webhook call given up: kept with the dead letters, with why. */
  deadLetter(d: { readonly deviceId: string; readonly url: string; readonly detail: string; readonly body: string }): void
  /** An event for observers. */
  event(event: { readonly rule: string; readonly firing: string; readonly deviceId: string; readonly level: string; readonly message: string; readonly at: number }): void
}

export interface PendingAction {
  readonly firingId: string
  readonly idx: number
  readonly ruleId: number
  readonly rule: string
  readonly deviceId: string
  readonly action: Action
  /** What fired the rule (a webhook's body carries it). */
  readonly trigger: Trigger
  /** Tries made by an earlier run (webhooks count every try). */
  readonly attempts?: number
  /** Left pending by the last run: carried out at a start, when devices are still reconnecting. */
  readonly resumed?: boolean
}

/**
 * How long a command left pending by the last run waits, at the next start,
 * for its device to reconnect before it is sent (and fails fast if the device
 * is still away): the devices reconnect to a restarted hub within seconds.
 */
export const RESUME_GRACE_MS = 30_000
const RESUME_POLL_MS = 200

/** The id of the command or job an action makes: the firing's, so a repeat after a restart is the same one. */
export function actionObjectId(prefix: 'c' | 'j', firingId: string, idx: number): string {
  return `${prefix}${firingId.slice(1)}${idx}`
}

interface ActionRunnerDeps {
  readonly store: RuleStore
  readonly writer: Writer
  readonly clock: Clock
  readonly logger: Logger
  readonly ports: RuleActionPorts
  readonly concurrency: number
  readonly resumeGraceMs?: number
  /** An action failed: the circuit breaker counts it. */
  readonly onFailed?: (ruleId: number) => void
}

/** Thrown out of an action the runner's stop interrupted: it stays pending. */
class Stopped extends Error {}

/** Whether an outcome the commands gave is a success. */
function commandSucceeded(outcome: unknown): boolean {
  const status = (outcome as { status?: unknown } | null)?.status
  return status === 'succeeded' || status === 'queued'
}

function errorOf(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown } | null
  return { code: typeof e?.code === 'string' ? e.code : 'INTERNAL', message: typeof e?.message === 'string' ? e.message : String(err) }
}

export function createActionRunner(deps: ActionRunnerDeps) {
  const { store, writer, clock, logger, ports } = deps
  const queue: PendingAction[] = []
  let running = 0
  let stopped = false
  const counts = { done: 0, failed: 0 }
  const idleWaiters: Array<() => void> = []
  /** Webhook back-offs under way: a stop wakes them. */
  const sleepers = new Set<() => void>()

  async function carryOut(p: PendingAction): Promise<{ status: 'done' | 'failed'; outcome: unknown }> {
    const cause: RuleCause = { rule: p.rule, firing: p.firingId }
    const a = p.action
    if ('command' in a) {
      const { to, ...spec } = a.command
      if (to === undefined || to === 'trigger') {
        if (p.resumed) await reachable(p.deviceId)
        if (stopped) throw new Stopped()
        const outcome = await ports.command(p.deviceId, spec, actionObjectId('c', p.firingId, p.idx), cause, p.resumed === true)
        return { status: commandSucceeded(outcome) ? 'done' : 'failed', outcome }
      }
      // A group command the last run left under way is not sent again: its members got ids of
      // their own, and those that ran it would run it twice. What it came to is in their records.
      if (p.resumed) return { status: 'failed', outcome: { error: { code: 'HUB_RESTART', message: 'the hub stopped while this group command was under way; its members may have run it (their records say)' } } }
      const outcome = await ports.commandGroup(to, spec, cause)
      return { status: 'done', outcome }
    }
    if ('job' in a) {
      const { to, ...spec } = a.job
      const target = to === undefined || to === 'trigger' ? `device:${p.deviceId}` : to
      const outcome = await ports.job({ ...spec, target }, actionObjectId('j', p.firingId, p.idx), cause)
      return { status: 'done', outcome }
    }
    if ('webhook' in a) return webhook(p, a.webhook)
    ports.event({ rule: p.rule, firing: p.firingId, deviceId: p.deviceId, level: a.event.level, message: a.event.message, at: clock.now() })
    return { status: 'done', outcome: null }
  }

  /** Tries a webhook until it is taken, given up, or the runner stops (then it stays pending, its tries counted). */
  async function webhook(p: PendingAction, w: WebhookAction): Promise<{ status: 'done' | 'failed'; outcome: unknown }> {
    const body = JSON.stringify({ type: 'rule.firing', v: 1, rule: p.rule, firing: p.firingId, action: p.idx, deviceId: p.deviceId, trigger: p.trigger })
    const max = w.maxAttempts ?? WEBHOOK_DEFAULTS.maxAttempts
    let attempt = p.attempts ?? 0
    let last: TryResult = { error: 'not tried' }
    while (attempt < max) {
      if (stopped) throw new Stopped()
      attempt++
      markStarted(p)
      last = await postOnce(w.url, body, `${p.firingId}.${p.idx}`, w.secret, clock.now(), w.timeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs)
      const verdict = verdictOf(last)
      if (verdict === 'done') return { status: 'done', outcome: { attempts: attempt, ...last } }
      if (verdict === 'give-up') break
      if (stopped) throw new Stopped()
      if (attempt < max) await pause(backoffMs(attempt))
    }
    const detail = 'status' in last || last.error !== 'not tried'
      ? `${'status' in last ? `answered ${last.status}` : last.error} after ${attempt} ${attempt === 1 ? 'try' : 'tries'}`
      : `given up at a restart: its ${attempt} tries were made before it`
    ports.deadLetter({ deviceId: p.deviceId, url: w.url, detail: `rule ${p.rule}, firing ${p.firingId}: ${detail}`, body })
    return { status: 'failed', outcome: { attempts: attempt, ...last, error: { code: 'WEBHOOK_FAILED', message: detail } } }
  }

  /** Waits `ms` on the clock; a stop ends the wait at once. */
  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = clock.setTimeout(() => { sleepers.delete(wake); resolve() }, ms).unref()
      const wake = () => { clock.clearTimer(timer); resolve() }
      sleepers.add(wake)
    })
  }

  function markStarted(p: PendingAction): void {
    // When it started, not when the write commits (up to a group commit's window later, after the command it made).
    const at = clock.now()
    writer.enqueue(() => { store.startAction(p.firingId, p.idx, at) })
  }

  /** Resolves once the device is reachable, or after the resume grace, or when the runner stops. */
  async function reachable(deviceId: string): Promise<void> {
    const until = clock.now() + (deps.resumeGraceMs ?? RESUME_GRACE_MS)
    while (!stopped && !ports.isReachable(deviceId) && clock.now() < until) await pause(RESUME_POLL_MS)
  }

  async function run(p: PendingAction): Promise<void> {
    if (!('webhook' in p.action)) markStarted(p)
    let result: { status: 'done' | 'failed'; outcome: unknown }
    try {
      result = await carryOut(p)
    } catch (err) {
      if (err instanceof Stopped) return
      result = { status: 'failed', outcome: { error: errorOf(err) } }
    }
    // Stopping: what ended now may have ended because the hub stops (its commands end
    // HUB_STOPPING). Left pending, it is carried out again, as the same command or job, at the next start.
    if (stopped) return
    try {
      // With the group's commit, not one forced now: a rule firing on many devices must not cut ingest's groups short.
      const at = clock.now()
      await writer.commitWithGroup(() => {
        store.endAction(p.firingId, p.idx, result.status, result.outcome, at)
        if (result.status === 'failed') store.count(p.ruleId, 'actions_failed')
      })
      counts[result.status]++
      if (result.status === 'failed') deps.onFailed?.(p.ruleId)
      const log = { firing: p.firingId, rule: p.rule, deviceId: p.deviceId, action: p.idx }
      if (result.status === 'failed') logger.warn({ ...log, outcome: result.outcome }, 'rule action failed')
      else logger.info(log, 'rule action done')
    } catch (err) {
      // Not recorded: it stays pending and is carried out again (as the same command or job) at the next start.
      logger.error({ err, firing: p.firingId, action: p.idx }, 'could not record a rule action\'s outcome')
    }
  }

  function pump(): void {
    while (!stopped && running < deps.concurrency && queue.length > 0) {
      const p = queue.shift()!
      running++
      void run(p).finally(() => {
        running--
        pump()
        if (running === 0 && queue.length === 0) for (const w of idleWaiters.splice(0)) w()
      })
    }
  }

  return {
    /** From an after-commit step: the actions start on the next turn, so the commit's other steps (acks) go first. */
    enqueue(actions: readonly PendingAction[]): void {
      if (stopped) return
      queue.push(...actions)
      setImmediate(pump)
    },
    /** Actions a previous run left pending. */
    resume(actions: readonly PendingAction[]): void {
      if (actions.length > 0) logger.info({ actions: actions.length }, 'carrying out rule actions left pending by the last run')
      queue.push(...actions.map((a) => ({ ...a, resumed: true })))
      pump()
    },
    stop(): void {
      stopped = true
      queue.length = 0
      for (const wake of [...sleepers]) wake()
      sleepers.clear()
    },
    idle(): Promise<void> {
      if (running === 0 && queue.length === 0) return Promise.resolve()
      return new Promise((resolve) => { idleWaiters.push(resolve) })
    },
    stats: () => ({ pending: queue.length, running, done: counts.done, failed: counts.failed }),
  }
}
