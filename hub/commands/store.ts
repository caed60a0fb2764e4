import { readJsonColumn } from '../storage/schema.js'
import type { OutcomeCode } from '../../protocol/outcome-codes.js'

/**
 * The command record, whichever database holds it: the hub's own SQLite
 * file (sqlite.ts) or a PostgreSQL shared by several hubs (postgres.ts).
 * commands.ts sees only this.
 *
 * A new command and an outcome resolve once they are committed:
 * commands.ts publishes a command only after its record is, and answers its
 * caller only after its outcome is, so a hub that dies at any moment never
 * leaves a command it sent, or an answer it gave, out of the record. Reads
 * see every write made before them, committed first if need be.
 *
 * A late reply is one that comes after its command ended without an answer
 * (its deadline, its device's disconnect, a hub restart): it is kept, the
 * first one only, and changes nothing. A second copy of the reply that ended
 * it is not late: on an external broker every hub gets every reply, and the
 * ones that did not send the command must not record the sender's answer as
 * a late one.
 */

export const COMMAND_STATUSES = ['offline', 'queued', 'sent', 'succeeded', 'failed', 'timed_out', 'disconnected'] as const
export type CommandStatus = (typeof COMMAND_STATUSES)[number]
/** How a command that was sent ended. */
export type CommandEnd = Extract<CommandStatus, 'succeeded' | 'failed' | 'timed_out' | 'disconnected'>

/** A commands row, as both databases return it. */
export interface CommandRow {
  id: string
  device_id: string
  name: string
  args: string | null
  group_id: string | null
  status: CommandStatus
  created_at: number
  sent_at: number | null
  expires_at: number
  finished_at: number | null
  result: string | null
  error_code: string | null
  error_message: string | null
  job_id: string | null
  late_at: number | null
  late_response: string | null
  first_sent_at: number | null
  resent: number
  cause_rule: string | null
  cause_firing: string | null
}

/** What made a command when it was not a caller of the API: a rule's firing (hub/rules/). */
export interface CommandCause {
  readonly rule: string
  readonly firing: string
}

export interface CommandRecord {
  readonly id: string
  readonly deviceId: string
  readonly name: string
  readonly args: unknown
  readonly groupId: string | null
  readonly status: CommandStatus
  readonly createdAt: number
  readonly sentAt: number | null
  readonly expiresAt: number
  readonly finishedAt: number | null
  readonly result: unknown
  readonly error: { readonly code: string; readonly message: string } | null
  /** The job the command became, when it was queued for an offline device. */
  readonly jobId: string | null
  /** A reply that came after the outcome was settled: kept, never acted on. */
  readonly late: { readonly at: number; readonly response: unknown } | null
  /** The rule firing that made it; null when a caller of the API did. */
  readonly cause: CommandCause | null
  /** What happened, in order. */
  readonly timeline: ReadonlyArray<{ readonly at: number; readonly event: string }>
}

export interface NewCommand {
  readonly id: string
  readonly deviceId: string
  readonly name: string
  readonly args: string | null
  readonly groupId: string | null
  /** timed_out here: a group member whose turn came after the group's deadline (never sent). */
  readonly status: 'offline' | 'queued' | 'sent' | 'timed_out'
  readonly createdAt: number
  readonly expiresAt: number
  readonly jobId?: string
  readonly error?: { readonly code: string; readonly message: string }
  readonly cause?: CommandCause
}

export function toRecord(r: CommandRow): CommandRecord {
  const timeline: Array<{ at: number; event: string }> = [{ at: r.created_at, event: 'created' }]
  // Carried out again under its id after a restart (first_sent_at is then set): the first send, then the last.
  if (r.first_sent_at !== null) timeline.push({ at: r.first_sent_at, event: 'sent' })
  if (r.sent_at !== null) timeline.push({ at: r.sent_at, event: r.first_sent_at !== null ? `sent again after a hub restart${r.resent > 1 ? ` (${r.resent} times)` : ''}` : 'sent' })
  if (r.status === 'offline' || r.status === 'queued') timeline.push({ at: r.created_at, event: r.status === 'offline' ? 'refused: device offline' : `queued as job ${r.job_id ?? ''}` })
  if (r.status === 'timed_out' && r.sent_at === null) timeline.push({ at: r.created_at, event: 'not sent: the group\'s deadline passed first' })
  // Rows never sent (offline, queued, not sent) were settled when made: their one entry is above.
  else if (r.finished_at !== null && r.sent_at !== null) timeline.push({ at: r.finished_at, event: r.status === 'succeeded' ? 'replied' : r.status === 'failed' ? `replied with error ${r.error_code ?? ''}` : r.status })
  if (r.late_at !== null) timeline.push({ at: r.late_at, event: 'late reply (ignored)' })
  return {
    id: r.id, deviceId: r.device_id, name: r.name, args: readJsonColumn(r.args), groupId: r.group_id, status: r.status,
    createdAt: r.created_at, sentAt: r.sent_at, expiresAt: r.expires_at, finishedAt: r.finished_at, result: readJsonColumn(r.result),
    error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? '' }, jobId: r.job_id,
    late: r.late_at === null ? null : { at: r.late_at, response: readJsonColumn(r.late_response) }, timeline,
    cause: r.cause_rule === null || r.cause_firing === null ? null : { rule: r.cause_rule, firing: r.cause_firing },
  }
}

export interface CommandStore {
  /**
   * At start: commands the last run of this hub sent and never settled end as
   * disconnected (HUB_RESTART). On a shared database, so do those of any hub
   * whose deadline passed more than ABANDONED_AFTER_MS ago (a hub that is
   * gone: a live one settles its commands at their deadline).
   */
  settleOrphans(now: number): Promise<number>
  /** Records a new command (sent, refused as offline, queued as a job, or never sent before the deadline); resolves once it is committed. */
  add(c: NewCommand): Promise<void>
  /** The outcome of a sent command (the whole row, in case its first write was lost); one already settled keeps its first. Resolves once committed. */
  finish(c: NewCommand, status: CommandEnd, at: number, result: string | null, error: { code: string; message: string } | null): Promise<void>
  /** A reply after the command ended unanswered; resolves with whether it was kept (the first late reply only). Nobody waits on it. */
  late(id: string, deviceId: string, at: number, response: string): Promise<boolean>
  get(id: string): Promise<CommandRecord | undefined>
  /** A device's commands, newest first. */
  ofDevice(deviceId: string, limit: number): Promise<CommandRecord[]>
  /** A group command's members, by device. */
  ofGroup(groupId: string): Promise<CommandRecord[]>
  /** Retention: deletes commands created before `cutoff`. */
  prune(cutoff: number): Promise<number>
  /** Commits what is queued now (the hub stopping: its callers are answered before the API closes). */
  flush(): Promise<void>
}

/**
 * A command still `sent` this long past its deadline was sent by a hub that
 * is gone (a live hub settles its commands at their deadline). Generous, so
 * clocks a little apart between hubs and database never settle a command a
 * live hub still waits on.
 */
export const ABANDONED_AFTER_MS = 5 * 60_000

/** The error a command the hub lost track of ends with. */
export const HUB_RESTART_ERROR = { code: 'HUB_RESTART', message: 'the hub stopped before it recorded an answer from the device; the device may have run it' } as const satisfies { code: OutcomeCode; message: string }
