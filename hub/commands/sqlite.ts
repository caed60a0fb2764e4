import type { Db } from '../../common/sqlite.js'
import type { Writer } from '../storage/group-commit.js'
import { deleteInChunks } from '../storage/chunked-delete.js'
import { HUB_RESTART_ERROR, toRecord, type CommandRow, type CommandStore } from './store.js'

/**
 * The command record on the hub's SQLite file (store.ts says what it keeps).
 * Every write goes through the group-commit writer: a new command and an
 * outcome commit at the end of the event loop's turn (`writer.commit`), late
 * replies with the ordinary group commit. Reads commit what is queued first.
 */

export function createSqliteCommandStore(db: Db, writer: Writer): CommandStore {
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
    // Only after the command ended unanswered: a copy of the reply that ended it is not late.
    late: db.prepare<[number, string, string, string]>(`UPDATE commands SET late_at = ?, late_response = ?
      WHERE id = ? AND device_id = ? AND late_at IS NULL AND status IN ('timed_out', 'disconnected')`),
    get: db.prepare<[string], CommandRow>('SELECT * FROM commands WHERE id = ?'),
    ofDevice: db.prepare<[string, number], CommandRow>('SELECT * FROM commands WHERE device_id = ? ORDER BY created_at DESC, id DESC LIMIT ?'),
    ofGroup: db.prepare<[string], CommandRow>('SELECT * FROM commands WHERE group_id = ? ORDER BY device_id'),
    prune: db.prepare<[number, number]>('DELETE FROM commands WHERE rowid IN (SELECT rowid FROM commands WHERE created_at < ? LIMIT ?)'),
    // A row still "sent" is a command whose caller got no answer: the hub (the only one on this file) died before the reply, or before it recorded it.
    orphaned: db.prepare<[number, string, string]>(`UPDATE commands SET status = 'disconnected', finished_at = ?, error_code = ?, error_message = ? WHERE status = 'sent'`),
  }

  /** Commits what is queued: before reads, so a late reply just received shows. */
  const sync = () => { writer.flush() }

  return {
    settleOrphans: (now) => Promise.resolve(s.orphaned.run(now, HUB_RESTART_ERROR.code, HUB_RESTART_ERROR.message).changes),
    add(c) {
      const settled = c.status !== 'sent'
      return writer.commit(() => {
        s.insert.run(c.id, c.deviceId, c.name, c.args, c.groupId, c.status, c.createdAt, settled ? null : c.createdAt, c.expiresAt,
          settled ? c.createdAt : null, c.error?.code ?? null, c.error?.message ?? null, c.jobId ?? null, c.cause?.rule ?? null, c.cause?.firing ?? null)
      })
    },
    finish(c, status, at, result, error) {
      return writer.commit(() => {
        s.finish.run({
          id: c.id, deviceId: c.deviceId, name: c.name, args: c.args, groupId: c.groupId, status, createdAt: c.createdAt, expiresAt: c.expiresAt,
          at, result, errorCode: error?.code ?? null, errorMessage: error?.message ?? null, causeRule: c.cause?.rule ?? null, causeFiring: c.cause?.firing ?? null,
        })
      })
    },
    async late(id, deviceId, at, response) {
      let kept = false
      await writer.commitWithGroup(() => { kept = s.late.run(at, response, id, deviceId).changes > 0 })
      return kept
    },
    get(id) {
      sync()
      const r = s.get.get(id)
      return Promise.resolve(r ? toRecord(r) : undefined)
    },
    ofDevice(deviceId, limit) {
      sync()
      return Promise.resolve(s.ofDevice.all(deviceId, limit).map(toRecord))
    },
    ofGroup(groupId) {
      sync()
      return Promise.resolve(s.ofGroup.all(groupId).map(toRecord))
    },
    // 5,000 rows per statement.
    prune: (cutoff) => deleteInChunks((limit) => s.prune.run(cutoff, limit).changes, 5000),
    flush() {
      sync()
      return Promise.resolve()
    },
  }
}
