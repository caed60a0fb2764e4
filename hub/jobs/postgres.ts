import type pg from 'pg'
import { formatTarget } from '../fleet/targets.js'
import type { Logger } from '../../common/logger.js'
import { inTransaction, isRetryable, pgBlameOf, withClient } from '../storage/postgres/pool.js'
import type { JobsBackend } from './context.js'
import { emptyCounts, nextRow, type DueRow, type ExecRow, type FailedExecRow, type HistoryView, type JobRow } from './store.js'
import type { ExecState } from './decisions.js'
import { runAsync, type AsyncJobOps, type Step } from './tx.js'

/**
 * Jobs on a PostgreSQL shared by several hubs (issue #18), under the same job
 * logic as on SQLite (tx.ts says how one copy of it runs on both). These are
 * the store calls a job transaction makes, on one connection inside one
 * transaction. Where two hubs may work on the same rows at once, a row is
 * locked as it is read to be changed, so the second hub waits for the first
 * to commit and then decides on what it committed:
 *
 * - a pull locks the pace of the paced jobs it may release from (in job
 *   order), then the device's due executions in the order it takes them, so
 *   two hubs answering pulls of one rollout keep its rate between them, and
 *   two pulls of one device (a resend may cross) lease each execution once.
 *   Not SKIP LOCKED: a pull reads more rows than it takes (some are held back
 *   by the pace, or were sent on this connection), and skipping those would
 *   leave a crossing pull short, saying there is no more;
 * - an update locks the execution it applies to; ending a job (its last
 *   execution ended, or its failure rate passed the threshold) locks the
 *   job, so two hubs ending its last two executions at once take turns and
 *   the second sees nothing left open;
 * - the sweeper, at every hub, takes lapsed and expired executions
 *   `SKIP LOCKED`: each sweep takes rows no other holds;
 * - stop notices are taken `SKIP LOCKED`, so each goes out once.
 *
 * Jobs are locked before executions where a transaction can (a pull, a
 * cancel). An update or a sweep locks executions first and their job last:
 * the other order would make every update of a job wait for the others. When
 * such a transaction meets a cancel of the same job, PostgreSQL finds the
 * deadlock and ends one of the two, which inJobTransaction runs again.
 */

export function postgresJobOps(c: pg.PoolClient): AsyncJobOps {
  return {
    async insertJob(job) {
      const r = await c.query(`INSERT INTO jobs (id, name, payload, target, priority, timeout_ms, expires_at, max_attempts, backoff_base_ms, backoff_max_ms,
          rate_per_min, rollout_tat, abort_min_finished, abort_failure_pct, continuous, status, status_reason, created_at, finished_at, schedule_id, schedule_tick, cause_rule, cause_firing)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13, $14, 'active', NULL, $15, NULL, $16, $17, $18, $19)
        ON CONFLICT DO NOTHING`, [
        job.id, job.name, job.payload, formatTarget(job.target), job.priority, job.timeoutMs, job.expiresAt, job.maxAttempts, job.backoffBaseMs, job.backoffMaxMs,
        job.ratePerMinute, job.abortMinFinished, job.abortFailurePct, job.continuous ? 1 : 0, job.createdAt, job.scheduleId, job.scheduleTick, job.causeRule, job.causeFiring,
      ])
      if (r.rowCount === 1) return true
      // A schedule's tick, or a rule's action, that made its job already (another hub's clock, a restart); any other clash is a bug.
      const { rows } = await c.query<{ id: string; schedule_id: number | null; schedule_tick: number | null }>(
        'SELECT id, schedule_id, schedule_tick FROM jobs WHERE id = $1 OR (schedule_id = $2 AND schedule_tick = $3)', [job.id, job.scheduleId, job.scheduleTick])
      if (job.scheduleId !== null && rows.some((x) => x.schedule_id === job.scheduleId && x.schedule_tick === job.scheduleTick)) return false
      if (job.causeFiring !== null && rows.some((x) => x.id === job.id)) return false
      throw new Error(`job id ${job.id} exists already`)
    },
    async addExecutions(jobId, deviceIds, priority, now) {
      if (deviceIds.length === 0) return []
      const { rows } = await c.query<{ key: number; device_id: string }>(`INSERT INTO executions
          (job_id, device_id, priority, state, attempt, version, base_version, run_after, created_at, updated_at)
        SELECT $1, d, $2, 'queued', 1, 1, 1, $3, $3, $3 FROM unnest($4::text[]) AS d
        ON CONFLICT (job_id, device_id) DO NOTHING RETURNING key, device_id`, [jobId, priority, now, deviceIds])
      if (rows.length > 0) {
        await c.query(`INSERT INTO execution_history (exec_key, version, attempt, state, at, source, detail)
          SELECT k, 1, 1, 'queued', $2, 'hub', NULL FROM unnest($1::int8[]) AS k`, [rows.map((r) => r.key), now])
      }
      // In the order given, as on SQLite.
      const added = new Set(rows.map((r) => r.device_id))
      return deviceIds.filter((d) => added.has(d))
    },
    async due(deviceId, now, limit) {
      return (await c.query<DueRow>(`SELECT e.*, j.name, j.payload, j.timeout_ms, j.expires_at, j.rate_per_min
        FROM executions e JOIN jobs j ON j.id = e.job_id
        WHERE e.device_id = $1 AND e.state = 'queued' AND e.run_after <= $2 AND j.status = 'active'
        ORDER BY e.priority DESC, e.key LIMIT $3
        FOR UPDATE OF e`, [deviceId, now, limit])).rows
    },
    async getJob(id) {
      return (await c.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id])).rows[0]
    },
    // Read to change it (an update, a device added again): locked, so a change by another hub is waited for, then seen.
    async getExec(jobId, deviceId) {
      return (await c.query<ExecRow>('SELECT * FROM executions WHERE job_id = $1 AND device_id = $2 FOR UPDATE', [jobId, deviceId])).rows[0]
    },
    async lockJob(id) {
      return (await c.query<JobRow>('SELECT * FROM jobs WHERE id = $1 FOR NO KEY UPDATE', [id])).rows[0]
    },
    async execsIn(jobId, a, b) {
      return (await c.query<ExecRow>('SELECT * FROM executions WHERE job_id = $1 AND state IN ($2, $3) ORDER BY key FOR UPDATE', [jobId, a, b])).rows
    },
    async transition(row, to, now, source, detail, f = {}) {
      const next = nextRow(row, to, now, f)
      const r = await c.query(`UPDATE executions SET state = $1, version = $2, attempt = $3, base_version = $4, device_version = $5, run_after = $6,
          delivered_at = $7, lease_until = $8, cancel_notify = $9, started_at = $10, finished_at = $11, result = $12, error_code = $13, error_message = $14, updated_at = $15
        WHERE key = $16 AND version = $17`, [
        next.state, next.version, next.attempt, next.base_version, next.device_version, next.run_after, next.delivered_at, next.lease_until,
        next.cancel_notify, next.started_at, next.finished_at, next.result, next.error_code, next.error_message, now, row.key, row.version,
      ])
      // Rows are locked as they are read to be changed, so this is a bug, as on SQLite.
      if (r.rowCount !== 1) throw new Error(`execution ${row.key} changed under a transition (expected version ${row.version})`)
      await c.query('INSERT INTO execution_history (exec_key, version, attempt, state, at, source, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)',
        [row.key, next.version, next.attempt, to, now, source, detail])
      return next
    },
    async countsOf(jobId) {
      const counts = emptyCounts()
      for (const r of (await c.query<{ state: ExecState; n: number }>('SELECT state, count(*) AS n FROM executions WHERE job_id = $1 GROUP BY state', [jobId])).rows) counts[r.state] = r.n
      return counts
    },
    async setJobStatus(id, status, reason, finishedAt) {
      await c.query('UPDATE jobs SET status = $1, status_reason = $2, finished_at = $3 WHERE id = $4', [status, reason, finishedAt, id])
    },
    async hasOpen(jobId) {
      return (await c.query("SELECT 1 FROM executions WHERE job_id = $1 AND state IN ('queued', 'in_progress') LIMIT 1", [jobId])).rowCount === 1
    },
    // The sweeper runs at every hub: each takes rows no other sweep holds now.
    async lapsed(now, limit) {
      return (await c.query<ExecRow>(`SELECT * FROM executions WHERE state IN ('queued', 'in_progress') AND lease_until IS NOT NULL AND lease_until < $1
        ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED`, [now, limit])).rows
    },
    async expiredUndelivered(now, limit) {
      return (await c.query<ExecRow>(`SELECT e.* FROM jobs j JOIN executions e ON e.job_id = j.id
        WHERE j.status = 'active' AND j.expires_at IS NOT NULL AND j.expires_at < $1 AND e.state = 'queued' AND e.delivered_at IS NULL
        ORDER BY e.key LIMIT $2 FOR UPDATE OF e SKIP LOCKED`, [now, limit])).rows
    },
    async becameDue(since, now) {
      return (await c.query<{ device_id: string }>(`SELECT DISTINCT device_id FROM executions WHERE state = 'queued' AND delivered_at IS NULL
        AND run_after > $1 AND run_after <= $2`, [since, now])).rows.map((r) => r.device_id)
    },
    async activePaced() {
      return (await c.query<JobRow>("SELECT * FROM jobs WHERE status = 'active' AND rate_per_min IS NOT NULL")).rows
    },
    async activeContinuous() {
      return (await c.query<JobRow>("SELECT * FROM jobs WHERE status = 'active' AND continuous = 1")).rows
    },
    // Reads for the API (reads.ts): no locks.
    async listJobs(status, limit, before) {
      return (await c.query<JobRow>(`SELECT * FROM jobs WHERE ($1::text IS NULL OR status = $1) AND (created_at, id) < ($2, $3)
        ORDER BY created_at DESC, id DESC LIMIT $4`, [status, before?.createdAt ?? Number.MAX_SAFE_INTEGER, before?.id ?? '', limit])).rows
    },
    async listExecs(jobId, state, afterDevice, limit) {
      return (await c.query<ExecRow>(`SELECT * FROM executions WHERE job_id = $1 AND ($2::text IS NULL OR state = $2) AND device_id > $3
        ORDER BY device_id LIMIT $4`, [jobId, state, afterDevice, limit])).rows
    },
    async readExec(jobId, deviceId) {
      return (await c.query<ExecRow>('SELECT * FROM executions WHERE job_id = $1 AND device_id = $2', [jobId, deviceId])).rows[0]
    },
    async history(execKey) {
      return (await c.query<HistoryView>('SELECT version, attempt, state, at, source, detail FROM execution_history WHERE exec_key = $1 ORDER BY version', [execKey])).rows
    },
    async recentOfDevice(deviceId, limit) {
      return (await c.query<ExecRow & { job_name: string }>(`SELECT e.*, j.name AS job_name FROM executions e JOIN jobs j ON j.id = e.job_id
        WHERE e.device_id = $1 ORDER BY e.key DESC LIMIT $2`, [deviceId, limit])).rows
    },
    async failedOfDevice(deviceId, sinceMs, untilMs, limit) {
      return (await c.query<FailedExecRow>(`SELECT e.job_id, j.name AS job_name, e.state, e.attempt, e.finished_at, e.error_code, e.error_message, j.cause_rule
        FROM executions e JOIN jobs j ON j.id = e.job_id
        WHERE e.device_id = $1 AND e.state IN ('failed', 'timed_out') AND e.finished_at >= $2 AND e.finished_at < $3 ORDER BY e.finished_at LIMIT $4`,
      [deviceId, sinceMs, untilMs, limit])).rows
    },
    async activeStateCounts() {
      const counts = emptyCounts()
      for (const r of (await c.query<{ state: ExecState; n: number }>(`SELECT e.state, count(*) AS n FROM jobs j JOIN executions e ON e.job_id = j.id
        WHERE j.status = 'active' GROUP BY e.state`)).rows) counts[r.state] = r.n
      return counts
    },
    async hasDue(deviceId, now) {
      return (await c.query(`SELECT 1 FROM executions e JOIN jobs j ON j.id = e.job_id
        WHERE e.device_id = $1 AND e.state = 'queued' AND e.run_after <= $2 AND j.status = 'active' LIMIT 1`, [deviceId, now])).rowCount === 1
    },
    async undeliveredAfter(jobId, now, afterKey, limit) {
      return (await c.query<{ key: number; device_id: string }>(`SELECT key, device_id FROM executions
        WHERE job_id = $1 AND state = 'queued' AND delivered_at IS NULL AND run_after <= $2 AND key > $3 ORDER BY key LIMIT $4`, [jobId, now, afterKey, limit])).rows
    },
    // Executions and their history go with the job (ON DELETE CASCADE).
    async pruneFinished(cutoff, limit) {
      return (await c.query(`DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status <> 'active' AND finished_at < $1 ORDER BY finished_at LIMIT $2)`,
        [cutoff, limit])).rowCount ?? 0
    },
    async openOfDevice(deviceId) {
      return (await c.query<ExecRow>("SELECT * FROM executions WHERE device_id = $1 AND state IN ('queued', 'in_progress') ORDER BY key FOR UPDATE", [deviceId])).rows
    },
    async paceOf(jobId) {
      return (await c.query<{ rollout_tat: number | null }>('SELECT rollout_tat FROM jobs WHERE id = $1 FOR NO KEY UPDATE', [jobId])).rows[0]?.rollout_tat ?? null
    },
    async pacedDue(deviceId, now) {
      return (await c.query<{ job_id: string }>(`SELECT DISTINCT e.job_id FROM executions e JOIN jobs j ON j.id = e.job_id
        WHERE e.device_id = $1 AND e.state = 'queued' AND e.run_after <= $2 AND j.status = 'active' AND j.rate_per_min IS NOT NULL AND e.first_delivered_at IS NULL
        ORDER BY e.job_id`, [deviceId, now])).rows.map((r) => r.job_id)
    },
    async markDelivered(key, now, leaseUntil) {
      await c.query('UPDATE executions SET delivered_at = $1, first_delivered_at = coalesce(first_delivered_at, $1), lease_until = $2, updated_at = $1 WHERE key = $3',
        [now, leaseUntil, key])
    },
    async setTat(jobId, tat) {
      await c.query('UPDATE jobs SET rollout_tat = $1 WHERE id = $2', [tat, jobId])
    },
    async pendingCancels(deviceId, limit) {
      return (await c.query<{ key: number; job_id: string; attempt: number }>(
        'SELECT key, job_id, cancel_notify AS attempt FROM executions WHERE device_id = $1 AND cancel_notify > 0 LIMIT $2 FOR UPDATE SKIP LOCKED', [deviceId, limit])).rows
    },
    async clearCancel(key) {
      await c.query('UPDATE executions SET cancel_notify = 0 WHERE key = $1', [key])
    },
  }
}

/**
 * Runs a job transaction on PostgreSQL: `make` gives it afresh for each try,
 * since one that meets a deadlock or a serialization failure is run again
 * from the start (a generator cannot be rewound).
 */
export async function inJobTransaction<T>(pool: pg.Pool, make: () => Step<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await inTransaction(pool, (c) => runAsync(postgresJobOps(c), make()))
    } catch (err) {
      if (!isRetryable(err) || attempt >= 3) throw err
    }
  }
}

/** Runs a read (reads.ts) on PostgreSQL, on one connection, outside any transaction. */
export function readJobs<T>(pool: pg.Pool, step: Step<T>): Promise<T> {
  return withClient(pool, (c) => runAsync(postgresJobOps(c), step))
}

/**
 * Job transactions on PostgreSQL, each in its own transaction on a pooled
 * connection, for the job logic in jobs.ts. Queued ones with the same key (a
 * device's pulls and updates) run one after another in the order they came,
 * as they do in the SQLite writer; others run side by side, up to the pool.
 * What one commits is sent after its commit. The rules do not react to
 * failed jobs here yet (they need their store on PostgreSQL).
 */
/**
 * Whether a failed job transaction failed on what it carried (a data error, a
 * broken constraint, or the job logic refusing it, which has no SQLSTATE)
 * rather than on the database's condition (a lost connection, a timeout): only
 * then does its sender hear of it and get a strike.
 */
function ownFault(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  if (code === undefined) return !/timeout|connect|terminat/i.test(err instanceof Error ? err.message : String(err))
  return pgBlameOf(err) === 'operation'
}

/** How often the jobs' version moves on its own, for the changes other hubs make (ms). */
const SHARED_VERSION_MS = 2000

export function postgresJobsBackend(pool: pg.Pool, logger: Logger): JobsBackend & { drain(): Promise<void> } {
  let version = 0
  const turns = new Map<string, Promise<void>>()
  // Transactions under way, so the hub's stop waits for them before it ends the pool.
  const running = new Set<Promise<unknown>>()
  const tracked = <T>(p: Promise<T>): Promise<T> => {
    running.add(p)
    // Its outcome is its caller's: here only its end counts.
    void p.then(() => running.delete(p), () => running.delete(p))
    return p
  }
  const committed = <T>(r: T): T => {
    version++
    return r
  }
  return {
    enqueue(make, then) {
      // Never rejects: a device's turns go on whatever one of them met.
      const run = async (): Promise<void> => {
        let result: Parameters<typeof then.after>[0]
        try {
          result = committed(await inJobTransaction(pool, make))
        } catch (err) {
          try {
            logger.warn({ err }, 'a job transaction failed; its device pulls or sends again')
            if (ownFault(err)) then.onFailed?.(err instanceof Error ? err : new Error(String(err)))
          } catch (hearing) {
            logger.error({ err: hearing }, 'could not report a failed job transaction')
          }
          return
        }
        try {
          then.after(result)
        } catch (err) {
          logger.error({ err }, 'a committed job transaction\'s follow-up failed')
        }
      }
      if (then.key === undefined) {
        void tracked(run())
        return
      }
      const key = then.key
      const turn = (turns.get(key) ?? Promise.resolve()).then(run, run)
      turns.set(key, turn)
      const done = () => { if (turns.get(key) === turn) turns.delete(key) }
      void turn.then(done, done)
      void tracked(turn)
    },
    now: async (make) => committed(await tracked(inJobTransaction(pool, make))),
    read: (step) => tracked(readJobs(pool, step)),
    alone: async (step) => committed(await tracked(readJobs(pool, step))),
    // The other hubs change jobs too, unseen here: the version also moves every 2 s, so a
    // reader that follows it (the dashboard's live feed) reads again at least that often.
    version: () => version + Math.floor(Date.now() / SHARED_VERSION_MS),
    reacts: false,
    /** Resolves once every transaction enqueued so far has ended. */
    async drain(): Promise<void> {
      while (running.size > 0) await Promise.allSettled([...running])
    },
  }
}
