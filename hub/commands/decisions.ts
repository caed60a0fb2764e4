import { RollcallError } from '../../common/errors.js'
import { QUEUED_COMMAND_TASK_PREFIX, isTaskName } from '../../protocol/ids.js'
import { boundJson, describeBounds } from '../../protocol/json-bounds.js'
import { LIMITS } from '../../protocol/limits.js'
import type { CommandResponse } from '../../protocol/messages.js'
import type { OutcomeCode } from '../../protocol/outcome-codes.js'
import type { CommandOutcome, CommandSpec, GroupResult, QueuedCommand } from './commands.js'
import type { CommandRecord } from './store.js'

/**
 * The decisions about a command, apart from the record and the MQTT around
 * them (STYLE habit 5): whether a spec may be sent and under which deadline,
 * why a device is refused (not reachable, or an agent without commands),
 * what a group member's turn comes to, and how a sent command ended: by its
 * device's reply, or without one (its deadline, its connection, the hub
 * stopping). Each is a pure function of what the caller read from presence
 * and the clock; commands.ts reads, records and sends around them. Table
 * tests: test/hub.command-decisions.test.ts.
 */

/** A spec that passed the checks: its args serialised once, and its deadline. */
export interface CheckedSpec {
  readonly args: string | null
  readonly timeoutMs: number
}

/**
 * Checks a command before anything is recorded or sent: its name, its
 * deadline (the default when it has none) and its args, bounded before
 * anything serialises them. Throws BAD_REQUEST, TOO_DEEP or PAYLOAD_TOO_LARGE.
 */
export function checkCommandSpec(spec: CommandSpec, defaultTimeoutMs: number): CheckedSpec {
  if (spec.ifOffline === 'queue' && spec.name.length > 64 - QUEUED_COMMAND_TASK_PREFIX.length) {
    throw new RollcallError('BAD_REQUEST', `a command that may be queued as a job has a name of at most ${64 - QUEUED_COMMAND_TASK_PREFIX.length} characters`)
  }
  if (!isTaskName(spec.name)) throw new RollcallError('BAD_REQUEST', `command name ${JSON.stringify(spec.name)} must be lowercase letters, digits, ".", "-" and "_", e.g. "ping" or "sys.info"`)
  const timeoutMs = spec.timeoutMs ?? defaultTimeoutMs
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > LIMITS.maxCommandTimeoutMs) {
    throw new RollcallError('BAD_REQUEST', `timeout must be from 1ms to ${LIMITS.maxCommandTimeoutMs / 60_000}m; a command is for now (use a job for work that may wait)`)
  }
  if (spec.args === undefined) return { args: null, timeoutMs }
  // Bounded before anything serialises them: args nested 200k deep would overflow the stack (H05).
  const bounded = boundJson(spec.args, LIMITS.maxCommandArgsBytes)
  if (!bounded.ok) throw new RollcallError(bounded.limit === 'depth' ? 'TOO_DEEP' : 'PAYLOAD_TOO_LARGE', describeBounds('args', bounded))
  return { args: bounded.json, timeoutMs }
}

/** The refusal of a command to a device that is not reachable now, saying when it was last seen. */
export function offlineError(deviceId: string, id: string, lastSeen: number | null): RollcallError {
  const when = lastSeen === null ? 'it has never connected' : `last seen ${new Date(lastSeen).toISOString()}`
  return new RollcallError('DEVICE_OFFLINE', `device "${deviceId}" is not reachable now (${when}); retry later, or send with ifOffline "queue" to run it as a job when it is back`, { id, lastSeen })
}

/**
 * A device whose birth says what it can do, without commands (an older
 * agent), would never answer: refused. No capabilities at all means unknown
 * (a device that is not a rollcall agent), and is sent to.
 */
export function unsupportedError(deviceId: string, capabilities: readonly string[]): RollcallError | undefined {
  if (capabilities.length === 0 || capabilities.includes('commands')) return undefined
  return new RollcallError('COMMANDS_NOT_SUPPORTED', `device "${deviceId}" runs an agent that does not take commands (it advertises ${capabilities.join(', ')}); upgrade its agent, or use a job`)
}

type OutcomeError = { readonly code: string; readonly message: string }

/** A group member skipped because it was not reachable when the group command was sent. */
export const SKIPPED_OFFLINE: OutcomeError = { code: 'DEVICE_OFFLINE' satisfies OutcomeCode, message: 'not reachable when the group command was sent' }

/**
 * A group member's turn, under the group's one deadline: a member that went
 * away since the group started is skipped, not sent into the void (checked
 * first); one whose turn came after the deadline is recorded with why it was
 * never sent; any other is sent with what is left of the deadline.
 */
export type MemberTurn =
  | { readonly verdict: 'send' }
  | { readonly verdict: 'offline'; readonly error: OutcomeError }
  | { readonly verdict: 'expired'; readonly error: OutcomeError }

export function memberTurn(reachable: boolean, leftMs: number): MemberTurn {
  if (!reachable) return { verdict: 'offline', error: { code: 'DEVICE_OFFLINE' satisfies OutcomeCode, message: 'not reachable when its turn came' } }
  if (leftMs <= 0) return { verdict: 'expired', error: { code: 'COMMAND_TIMEOUT' satisfies OutcomeCode, message: 'the group command\'s deadline passed before this member\'s turn; it was not sent' } }
  return { verdict: 'send' }
}

/** A sent command's outcome from its device's reply, and the result to record (JSON; null for a failure). */
export function replyOutcome(deviceId: string, m: CommandResponse, durationMs: number): { readonly outcome: CommandOutcome; readonly result: string | null } {
  if (m.ok) return { outcome: { id: m.id, deviceId, status: 'succeeded', result: m.result ?? null, durationMs }, result: JSON.stringify(m.result ?? null) }
  const error = m.error ?? { code: 'FAILED' satisfies OutcomeCode, message: 'the device reported a failure without details' }
  return { outcome: { id: m.id, deviceId, status: 'failed', error, durationMs }, result: null }
}

/** Why a sent command ended without its device's reply. */
export type Unanswered =
  | { readonly why: 'deadline'; readonly timeoutMs: number }
  /** The publish itself failed: the device's session could not take it. */
  | { readonly why: 'not-delivered'; readonly detail: string }
  | { readonly why: 'disconnected' }
  | { readonly why: 'hub-stopping' }

/** A sent command's outcome when no reply ended it, with the stable code its caller gets. */
export function unansweredOutcome(id: string, deviceId: string, u: Unanswered, durationMs: number): CommandOutcome {
  switch (u.why) {
    case 'deadline':
      return { id, deviceId, status: 'timed_out', error: { code: 'COMMAND_TIMEOUT' satisfies OutcomeCode, message: `no reply from "${deviceId}" within ${u.timeoutMs} ms` }, durationMs }
    case 'not-delivered':
      return { id, deviceId, status: 'disconnected', error: { code: 'DEVICE_DISCONNECTED' satisfies OutcomeCode, message: `could not send to "${deviceId}": ${u.detail}` }, durationMs }
    case 'disconnected':
      return { id, deviceId, status: 'disconnected', error: { code: 'DEVICE_DISCONNECTED' satisfies OutcomeCode, message: `"${deviceId}" disconnected before it replied` }, durationMs }
    case 'hub-stopping':
      return { id, deviceId, status: 'disconnected', error: { code: 'HUB_STOPPING' satisfies OutcomeCode, message: 'the hub stopped before the device replied' }, durationMs }
    default: {
      const never: never = u
      throw new Error(`unknown ending ${JSON.stringify(never)}`)
    }
  }
}

/** A group's tally: each member's outcome by status, and the members skipped as not reachable. */
export function groupCounts(outcomes: readonly CommandOutcome[], skipped: number): GroupResult['counts'] {
  const counts = { succeeded: 0, failed: 0, timed_out: 0, disconnected: 0, skipped }
  for (const o of outcomes) counts[o.status]++
  return counts
}

/** A record the hub lost track of: sent and never answered, or ended only by the hub stopping or restarting. */
export function lostTrack(r: CommandRecord): boolean {
  if (r.status === 'sent') return true
  const code = r.error?.code
  return r.status === 'disconnected' && (code === ('HUB_RESTART' satisfies OutcomeCode) || code === ('HUB_STOPPING' satisfies OutcomeCode))
}

/** What an earlier send of the same id came to, as send() answers it. */
export function recordedOutcome(r: CommandRecord): CommandOutcome | QueuedCommand {
  const durationMs = r.finishedAt !== null && r.sentAt !== null ? r.finishedAt - r.sentAt : 0
  switch (r.status) {
    case 'queued': return { id: r.id, deviceId: r.deviceId, status: 'queued', jobId: r.jobId ?? '' }
    case 'succeeded': return { id: r.id, deviceId: r.deviceId, status: 'succeeded', result: r.result, durationMs }
    case 'offline': throw new RollcallError('DEVICE_OFFLINE', r.error?.message ?? `"${r.deviceId}" was offline`, { id: r.id, deviceId: r.deviceId })
    case 'failed': return { id: r.id, deviceId: r.deviceId, status: 'failed', error: r.error ?? { code: 'HANDLER_FAILED', message: '' }, durationMs }
    case 'timed_out':
    case 'disconnected':
    case 'sent':
      return { id: r.id, deviceId: r.deviceId, status: r.status === 'sent' ? 'disconnected' : r.status, error: r.error ?? { code: 'TIMEOUT', message: '' }, durationMs }
    default: {
      const never: never = r.status
      return never
    }
  }
}

const LOST_TRACK = { code: 'HUB_RESTART', message: 'the hub stopped before it recorded an answer from the device; the device may have run it' } as const

/**
 * A command sent again under its id (a rule's action carried out again after
 * a restart), given what the record says of it. What it came to stands. Only
 * one the hub lost track of goes out again, under its first deadline: the
 * agent answers a repeat of an id it ran from its ledger, or refuses it as
 * expired, and never runs it twice. One whose deadline passed, or whose
 * device is away now, is not sent, queued or recorded anew: it may have run.
 */
export function sendAgain(prior: CommandRecord, now: number, reachable: boolean): { readonly answer: CommandOutcome | QueuedCommand } | { readonly timeoutMs: number; readonly args: string | null } {
  if (!lostTrack(prior)) return { answer: recordedOutcome(prior) }
  if (prior.expiresAt <= now || !reachable) return { answer: recordedOutcome({ ...prior, status: 'disconnected', error: prior.error ?? LOST_TRACK }) }
  return { timeoutMs: prior.expiresAt - now, args: prior.args === null ? null : JSON.stringify(prior.args) }
}
