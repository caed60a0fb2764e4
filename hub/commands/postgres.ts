import type pg from 'pg'
import type { Logger } from '../../common/logger.js'
import { inTransaction, isRetryable, pgBlameOf, withoutNul } from '../storage/postgres/pool.js'
import { ABANDONED_AFTER_MS, HUB_RESTART_ERROR, toRecord, type CommandEnd, type CommandRow, type CommandStore, type NewCommand } from './store.js'

/**
 * The command record on a PostgreSQL shared by several hubs (issue #18;
 * store.ts says what it keeps). Each row names the hub that sent it
 * (`sent_by`: its broker client id, the same across its restarts), so a hub
 * that starts again settles only the commands it left in flight, not those
 * another hub is waiting on. A hub that never comes back leaves rows `sent`
 * past their deadline; any hub settles those, at its start and at each
 * retention pass.
 *
 * Writes made in one turn of the event loop are written together, in one
 * transaction, one statement per kind over arrays; each write's promise
 * resolves once that transaction committed, as on SQLite. A group the
 * database refuses for one write's content (SQLSTATE 22 or 23) is written
 * again one write at a time, so only that write fails; anything else fails
 * the group's writes, whose callers hear of it (a command not recorded is
 * not sent).
 */

export interface PostgresCommandOptions {
  /** The name this hub writes in `sent_by`. */
  readonly hubId: string
}

type Write =
  | { readonly kind: 'add'; readonly c: NewCommand }
  | { readonly kind: 'finish'; readonly c: NewCommand; readonly status: CommandEnd; readonly at: number; readonly result: string | null; readonly error: { code: string; message: string } | null }
  | { readonly kind: 'late'; readonly id: string; readonly deviceId: string; readonly at: number; readonly response: string }

interface Queued {
  readonly write: Write
  readonly resolve: (kept: boolean) => void
  readonly reject: (err: Error) => void
}

const idOf = (w: Write): string => (w.kind === 'late' ? w.id : w.c.id)
const byId = (x: Queued, y: Queued) => (idOf(x.write) < idOf(y.write) ? -1 : idOf(x.write) > idOf(y.write) ? 1 : 0)

/** Writes in queue order, cut where an id comes again: one statement may touch a row only once, and a row's writes keep their order. */
function rounds(group: readonly Queued[]): Queued[][] {
  const out: Queued[][] = []
  let round: Queued[] = []
  let ids = new Set<string>()
  for (const q of group) {
    const id = idOf(q.write)
    if (ids.has(id)) {
      out.push(round)
      round = []
      ids = new Set()
    }
    ids.add(id)
    round.push(q)
  }
  if (round.length > 0) out.push(round)
  return out
}

const ROW_COLS = 'id, device_id, name, args, group_id, status, created_at, sent_at, expires_at, finished_at, result, error_code, error_message, job_id, cause_rule, cause_firing, sent_by'
const ROW_TYPES = 'text[], text[], text[], text[], text[], text[], int8[], int8[], int8[], int8[], text[], text[], text[], text[], text[], text[], text[]'
const unnestRows = `SELECT * FROM unnest(${ROW_TYPES.split(', ').map((t, i) => `$${i + 1}::${t}`).join(', ')}) AS u(${ROW_COLS})`

/** A command row's columns, as arrays for unnest: `rows` in id order. */
function columns(rows: ReadonlyArray<Omit<CommandRow, 'late_at' | 'late_response' | 'first_sent_at' | 'resent'> & { sent_by: string | null }>): unknown[] {
  const cols = ROW_COLS.split(', ') as Array<keyof (typeof rows)[number]>
  return cols.map((k) => rows.map((r) => r[k]))
}

export function createPostgresCommandStore(pool: pg.Pool, opts: PostgresCommandOptions, logger: Logger): CommandStore & { stats(): PostgresCommandStats } {
  let queue: Queued[] = []
  let scheduled = false
  let writing: Promise<void> | undefined
  const stats = { groups: 0, failedGroups: 0, isolatedGroups: 0, writesFailed: 0, outcomesNotRecorded: 0 }

  function push(write: Write): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      queue.push({ write, resolve, reject })
      schedule()
    })
  }

  // At the end of the turn, as the SQLite writer commits: what one turn writes goes in one transaction.
  function schedule(): void {
    if (scheduled || writing) return
    scheduled = true
    setImmediate(() => {
      scheduled = false
      void write()
    })
  }

  async function writeRound(c: pg.PoolClient, round: readonly Queued[]): Promise<Map<Queued, boolean>> {
    const kept = new Map<Queued, boolean>()
    const adds = round.filter((q) => q.write.kind === 'add').sort(byId)
    const finishes = round.filter((q) => q.write.kind === 'finish').sort(byId)
    const lates = round.filter((q) => q.write.kind === 'late').sort(byId)
    if (adds.length > 0) {
      const rows = adds.map(({ write: w }) => {
        const a = (w as Extract<Write, { kind: 'add' }>).c
        const settled = a.status !== 'sent'
        return {
          id: a.id, device_id: a.deviceId, name: a.name, args: a.args, group_id: a.groupId, status: a.status, created_at: a.createdAt,
          sent_at: settled ? null : a.createdAt, expires_at: a.expiresAt, finished_at: settled ? a.createdAt : null, result: null,
          error_code: a.error?.code ?? null, error_message: a.error ? withoutNul(a.error.message) : null, job_id: a.jobId ?? null,
          cause_rule: a.cause?.rule ?? null, cause_firing: a.cause?.firing ?? null, sent_by: settled ? null : opts.hubId,
        }
      })
      // A conflict is a command sent again under its own id (a rule's action carried out again after a
      // restart): the row starts over from this attempt; its cause and creation stay.
      await c.query(`INSERT INTO commands (${ROW_COLS}) ${unnestRows}
        ON CONFLICT (id) DO UPDATE SET status = excluded.status, sent_at = excluded.sent_at, expires_at = excluded.expires_at, finished_at = excluded.finished_at,
          result = NULL, error_code = excluded.error_code, error_message = excluded.error_message, job_id = excluded.job_id, sent_by = excluded.sent_by,
          first_sent_at = COALESCE(commands.first_sent_at, commands.sent_at), resent = commands.resent + (excluded.sent_at IS NOT NULL)::int
        WHERE commands.status = 'sent' OR (commands.status = 'disconnected' AND commands.error_code IN ('HUB_RESTART', 'HUB_STOPPING'))`, columns(rows))
      for (const q of adds) kept.set(q, true)
    }
    if (finishes.length > 0) {
      const rows = finishes.map(({ write: w }) => {
        const f = w as Extract<Write, { kind: 'finish' }>
        return {
          id: f.c.id, device_id: f.c.deviceId, name: f.c.name, args: f.c.args, group_id: f.c.groupId, status: f.status, created_at: f.c.createdAt,
          sent_at: f.c.createdAt, expires_at: f.c.expiresAt, finished_at: f.at, result: f.result, error_code: f.error?.code ?? null,
          error_message: f.error ? withoutNul(f.error.message) : null, job_id: null, cause_rule: f.c.cause?.rule ?? null, cause_firing: f.c.cause?.firing ?? null,
          sent_by: opts.hubId,
        }
      })
      // The whole row, so the outcome is recorded even if the row's first write was lost with a failed group.
      const written = new Set((await c.query<{ id: string }>(`INSERT INTO commands (${ROW_COLS}) ${unnestRows}
        ON CONFLICT (id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at, result = excluded.result,
          error_code = excluded.error_code, error_message = excluded.error_message
        WHERE commands.status = 'sent' RETURNING id`, columns(rows))).rows.map((r) => r.id))
      // Settled already: by this hub a moment ago (a second outcome, which changes nothing, as on SQLite), or by
      // another hub that took the command for abandoned (clocks far apart, or two hubs under one name). Said, not hidden.
      const lost = finishes.filter((q) => !written.has(idOf(q.write)))
      if (lost.length > 0) {
        stats.outcomesNotRecorded += lost.length
        logger.info({ ids: lost.map((q) => idOf(q.write)) }, 'command outcomes not recorded: their commands were settled already')
      }
      for (const q of finishes) kept.set(q, written.has(idOf(q.write)))
    }
    if (lates.length > 0) {
      const ls = lates.map((q) => q.write as Extract<Write, { kind: 'late' }>)
      const { rows } = await c.query<{ id: string }>(`UPDATE commands SET late_at = u.at, late_response = u.response
        FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) AS u(id, device_id, at, response)
        WHERE commands.id = u.id AND commands.device_id = u.device_id AND commands.late_at IS NULL AND commands.status IN ('timed_out', 'disconnected')
        RETURNING commands.id`, [ls.map((l) => l.id), ls.map((l) => l.deviceId), ls.map((l) => l.at), ls.map((l) => withoutNul(l.response))])
      const ids = new Set(rows.map((r) => r.id))
      for (const q of lates) kept.set(q, ids.has(idOf(q.write)))
    }
    return kept
  }

  async function writeGroup(group: readonly Queued[]): Promise<Map<Queued, boolean>> {
    // A deadlock or serialization failure is tried again at once.
    for (let attempt = 1; ; attempt++) {
      try {
        return await inTransaction(pool, async (c) => {
          const kept = new Map<Queued, boolean>()
          for (const round of rounds(group)) for (const [q, k] of await writeRound(c, round)) kept.set(q, k)
          return kept
        })
      } catch (err) {
        if (!isRetryable(err) || attempt >= 3) throw err
      }
    }
  }

  async function write(): Promise<void> {
    if (writing || queue.length === 0) return
    const group = queue
    queue = []
    writing = (async () => {
      try {
        const kept = await writeGroup(group)
        stats.groups++
        for (const q of group) q.resolve(kept.get(q) ?? false)
      } catch (err) {
        if (pgBlameOf(err) === 'operation' && group.length > 1) {
          // One write's content (a value out of range): each alone, so only that one fails.
          stats.isolatedGroups++
          for (const q of group) {
            try {
              q.resolve((await writeGroup([q])).get(q) ?? false)
            } catch (one) {
              stats.writesFailed++
              q.reject(one as Error)
            }
          }
          return
        }
        stats.failedGroups++
        stats.writesFailed += group.length
        logger.warn({ err: (err as Error).message, writes: group.length }, 'command records not written')
        for (const q of group) q.reject(err as Error)
      }
    })()
    await writing
    writing = undefined
    if (queue.length > 0) schedule()
  }

  /** Writes what is queued now, and waits for a group being written. */
  async function flush(): Promise<void> {
    for (let w = writing; w !== undefined; w = writing) await w
    await write()
  }

  async function rowsOf(sql: string, params: unknown[]): Promise<CommandRow[]> {
    // Read your writes, as on SQLite.
    await flush()
    return (await pool.query<CommandRow>(sql, params)).rows
  }

  /**
   * Commands still `sent` whose sender is this hub (its last run), or any hub
   * when `ABANDONED_AFTER_MS` past their deadline by the database's clock, the
   * one clock all hubs share.
   */
  async function settle(at: number, ownToo: boolean): Promise<number> {
    const { rowCount } = await pool.query(`UPDATE commands SET status = 'disconnected', finished_at = $1, error_code = $2, error_message = $3
      WHERE status = 'sent' AND (${ownToo ? 'sent_by = $5 OR ' : ''}expires_at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $4)`,
    [at, HUB_RESTART_ERROR.code, HUB_RESTART_ERROR.message, ABANDONED_AFTER_MS, ...(ownToo ? [opts.hubId] : [])])
    return rowCount ?? 0
  }

  return {
    settleOrphans: (at) => settle(at, true),
    add: async (c) => { await push({ kind: 'add', c }) },
    finish: async (c, status, at, result, error) => { await push({ kind: 'finish', c, status, at, result, error }) },
    late: (id, deviceId, at, response) => push({ kind: 'late', id, deviceId, at, response }),
    async get(id) {
      const [r] = await rowsOf('SELECT * FROM commands WHERE id = $1', [id])
      return r ? toRecord(r) : undefined
    },
    ofDevice: async (deviceId, limit) => (await rowsOf('SELECT * FROM commands WHERE device_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2', [deviceId, limit])).map(toRecord),
    ofGroup: async (groupId) => (await rowsOf('SELECT * FROM commands WHERE group_id = $1 ORDER BY device_id', [groupId])).map(toRecord),
    async prune(cutoff) {
      const abandoned = await settle(Date.now(), false)
      if (abandoned > 0) logger.warn({ commands: abandoned }, 'commands still in flight long past their deadline (their hub is gone) recorded as disconnected (HUB_RESTART)')
      let total = 0
      for (let n = 5000; n === 5000;) {
        n = (await pool.query('DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE created_at < $1 LIMIT 5000)', [cutoff])).rowCount ?? 0
        total += n
      }
      return total
    },
    flush,
    stats: () => ({ ...stats, queued: queue.length }),
  }
}

export interface PostgresCommandStats {
  readonly groups: number
  readonly failedGroups: number
  /** Groups refused for one write's content and written again one write at a time. */
  readonly isolatedGroups: number
  readonly writesFailed: number
  /** Outcomes not written because their command was settled already (logged). */
  readonly outcomesNotRecorded: number
  readonly queued: number
}
