import type { Db } from '../../common/sqlite.js'
import type { Writer } from '../storage/group-commit.js'
import { deleteInChunks } from '../storage/chunked-delete.js'
import { readJsonColumn } from '../storage/schema.js'
import type { OutcomeCode } from '../../protocol/outcome-codes.js'

/**
 * The command record: the commands table, and only SQL. Every write goes
 * through the group-commit writer. A new command and an outcome are committed
 * at the end of the event loop's turn (`writer.commit`), and their promise
 * says when they are durable: commands.ts publishes a command only after its
 * record is, and answers its caller only after its outcome is, so a hub that
 * dies at any moment never leaves a command it sent, or an answer it gave,
 * out of the record. Late replies nobody waits for take the ordinary group
 * commit. Reads see what is committed.
 */

export const COMMAND_STATUSES = ['offline', 'queued', 'sent', 'succeeded', 'failed', 'timed_out', 'disconnected'] as const
export type CommandStatus = (typeof COMMAND_STATUSES)[number]
/** How a command that was sent ended. */
export type CommandEnd = Extract<CommandStatus, 'succeeded' | 'failed' | 'timed_out' | 'disconnected'>

interface CommandRow {
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

function toRecord(r: CommandRow): CommandRecord {
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

export function createCommandStore(db: Db, writer: Writer) {
  const s = {
    // A conflict is a command sent again under its own id (a rule's action carried out again after a
    // restart, commands.ts send): the row starts over from this attempt; its cause and creation stay.
    insert: db.prepare<[string, string, string, string | null, string | null, string, number, number | null, number, number | null, string | null, string | null, string | null, string | null, string | null]>(
      `INSERT INTO commands (id, device_id, name, args, group_id, status, created_at, sent_at, expires_at, finished_at, error_code, error_message, job_id, cause_rule, cause_firing)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET status = excluded.status, sent_at = excluded.sent_at, expires_at = excluded.expires_at, finished_at = excluded.finished_at,
         result = NULL, error_code = excluded.error_code, error_message = excluded.error_message, job_id = excluded.job_id,
         first_sent_at = COALESCE(commands.first_sent_at, commands.sent_at), resent = commands.resent + (excluded.sent_at IS NOT NULL)
       WHERE commands.status = 'sent' OR (commands.status = 'disconnected' AND commands.error_code IN ('HUB_RESTART', 'HUB_STOPPING'))`),
    // The whole row, so the outcome is recorded even if the row's first write was lost with a failed commit.
    finish: db.prepare(`INSERT INTO commands (id, device_id, name, args, group_id, status, created_at, sent_at, expires_at, finished_at, result, error_code, error_message, cause_rule, cause_firing)
       VALUES (@id, @deviceId, @name, @args, @groupId, @status, @createdAt, @createdAt, @expiresAt, @at, @result, @errorCode, @errorMessage, @causeRule, @causeFiring)
       ON CONFLICT (id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at, result = excluded.result,
         error_code = excluded.error_code, error_message = excluded.error_message
       WHERE commands.status = 'sent'`),
    late: db.prepare<[number, string, string, string]>('UPDATE commands SET late_at = ?, late_response = ? WHERE id = ? AND device_id = ? AND late_at IS NULL'),
    get: db.prepare<[string], CommandRow>('SELECT * FROM commands WHERE id = ?'),
    ofDevice: db.prepare<[string, number], CommandRow>('SELECT * FROM commands WHERE device_id = ? ORDER BY created_at DESC, id DESC LIMIT ?'),
    ofGroup: db.prepare<[string], CommandRow>('SELECT * FROM commands WHERE group_id = ? ORDER BY device_id'),
    prune: db.prepare<[number, number]>('DELETE FROM commands WHERE rowid IN (SELECT rowid FROM commands WHERE created_at < ? LIMIT ?)'),
    // A row still "sent" is a command whose caller got no answer: the hub died before the reply, or before it recorded it.
    orphaned: db.prepare<[number]>(`UPDATE commands SET status = 'disconnected', finished_at = ?, error_code = '${'HUB_RESTART' satisfies OutcomeCode}',
      error_message = 'the hub stopped before it recorded an answer from the device; the device may have run it' WHERE status = 'sent'`),
  }

  return {
    /** At start: commands a previous hub process sent and never settled end as disconnected (HUB_RESTART). */
    settleOrphans(now: number): number {
      return s.orphaned.run(now).changes
    },
    /**
     * Records a new command (sent, refused as offline, queued as a job, or
     * never sent before the deadline); resolves once it is committed.
     */
    add(c: NewCommand): Promise<void> {
      const settled = c.status !== 'sent'
      return writer.commit(() => {
        s.insert.run(c.id, c.deviceId, c.name, c.args, c.groupId, c.status, c.createdAt, settled ? null : c.createdAt, c.expiresAt,
          settled ? c.createdAt : null, c.error?.code ?? null, c.error?.message ?? null, c.jobId ?? null, c.cause?.rule ?? null, c.cause?.firing ?? null)
      })
    },
    /**
     * The outcome of a sent command (the whole row, see `finish`); a command
     * already settled keeps its first outcome. Resolves once it is committed.
     */
    finish(c: NewCommand, status: CommandEnd, at: number, result: string | null, error: { code: string; message: string } | null): Promise<void> {
      return writer.commit(() => {
        s.finish.run({
          id: c.id, deviceId: c.deviceId, name: c.name, args: c.args, groupId: c.groupId, status, createdAt: c.createdAt, expiresAt: c.expiresAt,
          at, result, errorCode: error?.code ?? null, errorMessage: error?.message ?? null, causeRule: c.cause?.rule ?? null, causeFiring: c.cause?.firing ?? null,
        })
      })
    },
    /** A reply that came after the outcome was settled (only the first is kept); nobody waits on it. */
    late(id: string, deviceId: string, at: number, response: string): void {
      writer.enqueue(() => { s.late.run(at, response, id, deviceId) })
    },
    /** Commits what is queued: before reads, so a late reply just received shows. */
    sync(): void {
      writer.flush()
    },
    get: (id: string): CommandRecord | undefined => {
      const r = s.get.get(id)
      return r ? toRecord(r) : undefined
    },
    ofDevice: (deviceId: string, limit: number): CommandRecord[] => s.ofDevice.all(deviceId, limit).map(toRecord),
    ofGroup: (groupId: string): CommandRecord[] => s.ofGroup.all(groupId).map(toRecord),
    /** Retention: deletes commands created before `cutoff`, `chunk` rows per statement. */
    prune: (cutoff: number, chunk = 5000): Promise<number> => deleteInChunks((limit) => s.prune.run(cutoff, limit).changes, chunk),
  }
}

export type CommandStore = ReturnType<typeof createCommandStore>
