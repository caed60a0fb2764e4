import { RollcallError } from '../../common/errors.js'
import { isSensorName, isTaskName } from '../../protocol/ids.js'
import { boundJson, describeBounds } from '../../protocol/json-bounds.js'
import { EVENT_LEVELS, LIMITS } from '../../protocol/limits.js'
import { parseTarget, type JobTarget } from '../fleet/targets.js'
import { COMPARISONS, JOB_FAILURES, type JobCondition, type PresenceCondition, type TelemetryCondition, type Threshold } from './machine.js'

/**
 * What a rule says, as the API and the CLI take it, and the check of it:
 * pure, so every refusal and its message is table-tested without a hub
 * (test/hub.rule-spec.test.ts).
 *
 *   name     lowercase letters, digits, ".", "-", "_" (as a task name)
 *   for      which devices it watches: device:ID, device:A,B, group:G or all
 *   when     one condition: a sensor crossing a threshold (optionally for a
 *            time or a number of samples, with a clear threshold for
 *            hysteresis), a device event of a kind (and level), a presence
 *            status (optionally held for a time: "offline for 10 min"), or a
 *            job execution that failed or timed out with no retry left
 *   then     1 to 8 actions: a command to the device that triggered it (or
 *            to a target), a job, an event the hub publishes, a webhook
 *
 * and the limits that keep a storm from becoming a flood: the oldest sample
 * that may still act (`maxSampleAgeMs`: older ones update the state but their
 * firings are suppressed as stale), a per-device cooldown and a per-rule rate.
 */

export type Condition =
  | { readonly telemetry: TelemetryCondition }
  | { readonly event: { readonly kind: string; readonly level?: EventLevel } }
  | { readonly presence: PresenceCondition }
  | { readonly job: JobCondition }

export type EventLevel = (typeof EVENT_LEVELS)[number]

/** `to`: "trigger" is the device whose sample fired the rule; otherwise a target. */
export type Action =
  | { readonly command: { readonly name: string; readonly args?: unknown; readonly to?: string; readonly timeoutMs?: number; readonly ifOffline?: 'fail' | 'queue' } }
  | { readonly job: { readonly name: string; readonly payload?: unknown; readonly to?: string; readonly timeoutMs?: number } }
  | { readonly event: { readonly level: EventLevel; readonly message: string } }
  | { readonly webhook: WebhookAction }

/** `secret`: the key the receiver checks X-Rollcall-Signature with (hub/rules/webhook.ts); shown only as "(set)". */
export interface WebhookAction {
  readonly url: string
  readonly secret?: string
  readonly maxAttempts?: number
  readonly timeoutMs?: number
}

export interface RuleSpec {
  readonly name: string
  readonly for: string
  readonly when: Condition
  readonly then: readonly Action[]
  readonly enabled?: boolean
  readonly maxSampleAgeMs?: number
  readonly cooldownMs?: number
  readonly maxFiringsPerMinute?: number
}

export const RULE_DEFAULTS = {
  maxSampleAgeMs: 5 * 60_000,
  cooldownMs: 0,
  maxFiringsPerMinute: 60,
} as const

export const MAX_ACTIONS = 8
const MAX_MESSAGE = 500
const MAX_WINDOW_MS = 24 * 3_600_000

/** A spec that passed: defaults filled in, the target parsed. */
export interface CheckedRule {
  readonly name: string
  readonly for: string
  readonly target: JobTarget
  readonly when: Condition
  readonly then: readonly Action[]
  readonly enabled: boolean
  readonly maxSampleAgeMs: number
  readonly cooldownMs: number
  readonly maxFiringsPerMinute: number
}

const bad = (message: string) => new RollcallError('BAD_REQUEST', message)

/** The values a threshold holds for, as an interval (an end at infinity is open). */
interface Interval { readonly lo: number; readonly loIn: boolean; readonly hi: number; readonly hiIn: boolean }

function valuesOf(t: Threshold): Interval {
  switch (t.op) {
    case '>': return { lo: t.value, loIn: false, hi: Infinity, hiIn: false }
    case '>=': return { lo: t.value, loIn: true, hi: Infinity, hiIn: false }
    case '<': return { lo: -Infinity, loIn: false, hi: t.value, hiIn: false }
    case '<=': return { lo: -Infinity, loIn: false, hi: t.value, hiIn: true }
    case '==': return { lo: t.value, loIn: true, hi: t.value, hiIn: true }
    default: {
      const never: never = t.op
      return never
    }
  }
}

/** Whether some value lies in both. */
function overlap(a: Interval, b: Interval): boolean {
  const lo = Math.max(a.lo, b.lo)
  const hi = Math.min(a.hi, b.hi)
  if (lo < hi) return true
  if (lo > hi) return false
  const loIn = a.lo === b.lo ? a.loIn && b.loIn : a.lo > b.lo ? a.loIn : b.loIn
  const hiIn = a.hi === b.hi ? a.hiIn && b.hiIn : a.hi < b.hi ? a.hiIn : b.hiIn
  return loIn && hiIn
}

function checkDuration(what: string, v: number | undefined, max: number): void {
  if (v === undefined) return
  if (!Number.isInteger(v) || v < 0 || v > max) throw bad(`${what} must be a whole number of milliseconds from 0 to ${max}`)
}

function checkThreshold(what: string, t: Threshold): void {
  if (!COMPARISONS.includes(t.op)) throw bad(`${what}.op must be one of ${COMPARISONS.join(' ')}`)
  if (typeof t.value !== 'number' || !Number.isFinite(t.value)) throw bad(`${what}.value must be a finite number`)
}

const CONDITION_KINDS = '"telemetry", "event", "presence" or "job"'

function checkCondition(when: Condition): void {
  const keys = Object.keys(when)
  if (keys.length !== 1) throw bad(`when takes exactly one of ${CONDITION_KINDS}`)
  if ('telemetry' in when) {
    const c = when.telemetry
    if (!isSensorName(c.sensor)) throw bad(`when.telemetry.sensor ${JSON.stringify(c.sensor)} is not a sensor name (lowercase letters, digits, ".", "-", "_")`)
    checkThreshold('when.telemetry', c)
    if (c.forMs !== undefined && c.samples !== undefined) throw bad('when.telemetry takes forMs or samples, not both: "held for a time" or "N samples in a row"')
    checkDuration('when.telemetry.forMs', c.forMs, MAX_WINDOW_MS)
    if (c.samples !== undefined && (!Number.isInteger(c.samples) || c.samples < 1 || c.samples > 10_000)) throw bad('when.telemetry.samples must be a whole number from 1 to 10000')
    if (c.clear !== undefined) {
      checkThreshold('when.telemetry.clear', c.clear)
      // A clear that holds for a value the trigger holds for would clear as it fires, and flap.
      if (overlap(valuesOf(c), valuesOf(c.clear))) throw bad('when.telemetry.clear holds for values the trigger holds for too; give a threshold on the other side, at which the condition is over, e.g. {"op": "<=", "value": 0.06} for a trigger "> 0.08"')
    }
    return
  }
  if ('event' in when) {
    const e = when.event
    if (!isSensorName(e.kind)) throw bad(`when.event.kind ${JSON.stringify(e.kind)} is not an event kind (lowercase letters, digits, ".", "-", "_")`)
    if (e.level !== undefined && !EVENT_LEVELS.includes(e.level)) throw bad(`when.event.level must be one of ${EVENT_LEVELS.join(', ')}`)
    return
  }
  if ('presence' in when) {
    const p = when.presence
    if (p.status !== 'offline' && p.status !== 'online') throw bad('when.presence.status must be "offline" (went offline) or "online" (came back)')
    checkDuration('when.presence.forMs', p.forMs, MAX_WINDOW_MS)
    return
  }
  if ('job' in when) {
    const j = when.job
    if (j.outcome !== undefined && !JOB_FAILURES.includes(j.outcome)) throw bad(`when.job.outcome must be one of ${JOB_FAILURES.join(', ')} (leave it out for either)`)
    if (j.name !== undefined && !isTaskName(j.name)) throw bad(`when.job.name ${JSON.stringify(j.name)} is not a task name`)
    return
  }
  throw bad(`when takes exactly one of ${CONDITION_KINDS}`)
}

function checkTo(what: string, to: string | undefined): void {
  if (to === undefined || to === 'trigger') return
  try {
    parseTarget(to)
  } catch (err) {
    throw bad(`${what}: ${(err as Error).message}; or "trigger", the device that fired the rule`)
  }
}

function checkJson(what: string, value: unknown, maxBytes: number): void {
  if (value === undefined) return
  const b = boundJson(value, maxBytes)
  if (!b.ok) throw bad(describeBounds(what, b))
}

function checkAction(a: Action, i: number): void {
  const at = `then[${i}]`
  const keys = Object.keys(a)
  if (keys.length !== 1) throw bad(`${at} takes exactly one of ${ACTION_KINDS}`)
  if ('command' in a) {
    const c = a.command
    if (!isTaskName(c.name)) throw bad(`${at}.command.name ${JSON.stringify(c.name)} is not a command name`)
    checkTo(`${at}.command.to`, c.to)
    checkDuration(`${at}.command.timeoutMs`, c.timeoutMs, LIMITS.maxCommandTimeoutMs)
    if (c.timeoutMs === 0) throw bad(`${at}.command.timeoutMs must be at least 1`)
    if (c.ifOffline !== undefined && c.ifOffline !== 'fail' && c.ifOffline !== 'queue') throw bad(`${at}.command.ifOffline must be "fail" or "queue"`)
    checkJson(`${at}.command.args`, c.args, LIMITS.maxCommandArgsBytes)
    return
  }
  if ('job' in a) {
    const j = a.job
    if (!isTaskName(j.name)) throw bad(`${at}.job.name ${JSON.stringify(j.name)} is not a task name`)
    checkTo(`${at}.job.to`, j.to)
    checkDuration(`${at}.job.timeoutMs`, j.timeoutMs, LIMITS.maxJobTimeoutMs)
    checkJson(`${at}.job.payload`, j.payload, LIMITS.maxJobPayloadBytes)
    return
  }
  if ('event' in a) {
    const e = a.event
    if (!EVENT_LEVELS.includes(e.level)) throw bad(`${at}.event.level must be one of ${EVENT_LEVELS.join(', ')}`)
    if (typeof e.message !== 'string' || e.message.length === 0 || e.message.length > MAX_MESSAGE) throw bad(`${at}.event.message must be 1 to ${MAX_MESSAGE} characters`)
    return
  }
  if ('webhook' in a) {
    checkWebhook(at, a.webhook)
    return
  }
  throw bad(`${at} takes exactly one of ${ACTION_KINDS}`)
}

const ACTION_KINDS = '"command", "job", "event" or "webhook"'

function checkWebhook(at: string, w: WebhookAction): void {
  let url: URL | undefined
  try {
    url = typeof w.url === 'string' && w.url.length <= 2048 ? new URL(w.url) : undefined
  } catch {
    url = undefined
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw bad(`${at}.webhook.url must be an http:// or https:// URL of at most 2048 characters`)
  if (url.username !== '' || url.password !== '') throw bad(`${at}.webhook.url must not carry a user or password; give a secret and check the signature instead`)
  if (w.secret !== undefined && (typeof w.secret !== 'string' || w.secret.length < 16 || w.secret.length > 256)) throw bad(`${at}.webhook.secret must be 16 to 256 characters`)
  if (w.maxAttempts !== undefined && (!Number.isInteger(w.maxAttempts) || w.maxAttempts < 1 || w.maxAttempts > 20)) throw bad(`${at}.webhook.maxAttempts must be a whole number from 1 to 20`)
  if (w.timeoutMs !== undefined && (!Number.isInteger(w.timeoutMs) || w.timeoutMs < 1 || w.timeoutMs > 60_000)) throw bad(`${at}.webhook.timeoutMs must be a whole number of milliseconds from 1 to 60000`)
}

/** The actions as a view shows them: a webhook's secret is "(set)", never its value. */
export function redactedActions(then: readonly Action[]): Action[] {
  return then.map((a) => ('webhook' in a && a.webhook.secret !== undefined ? { webhook: { ...a.webhook, secret: '(set)' } } : a))
}

/** Checks a spec; returns it with its defaults and parsed target, or throws what to fix. */
export function checkRuleSpec(spec: RuleSpec): CheckedRule {
  if (!isTaskName(spec.name)) throw bad(`rule name ${JSON.stringify(spec.name)} must be 1 to 64 lowercase letters, digits, ".", "-" and "_", e.g. "pump.vibration"`)
  let target: JobTarget
  try {
    target = parseTarget(spec.for)
  } catch (err) {
    throw bad(`for: ${(err as Error).message}`)
  }
  checkCondition(spec.when)
  if (!Array.isArray(spec.then) || spec.then.length === 0 || spec.then.length > MAX_ACTIONS) throw bad(`then takes 1 to ${MAX_ACTIONS} actions`)
  spec.then.forEach(checkAction)
  checkDuration('maxSampleAgeMs', spec.maxSampleAgeMs, MAX_WINDOW_MS)
  checkDuration('cooldownMs', spec.cooldownMs, MAX_WINDOW_MS)
  const rate = spec.maxFiringsPerMinute
  if (rate !== undefined && (!Number.isInteger(rate) || rate < 1 || rate > 100_000)) throw bad('maxFiringsPerMinute must be a whole number from 1 to 100000')
  return {
    name: spec.name,
    for: spec.for,
    target,
    when: spec.when,
    then: spec.then,
    enabled: spec.enabled ?? true,
    maxSampleAgeMs: spec.maxSampleAgeMs ?? RULE_DEFAULTS.maxSampleAgeMs,
    cooldownMs: spec.cooldownMs ?? RULE_DEFAULTS.cooldownMs,
    maxFiringsPerMinute: rate ?? RULE_DEFAULTS.maxFiringsPerMinute,
  }
}
