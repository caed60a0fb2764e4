import type pg from 'pg'
import { formatTarget } from '../fleet/targets.js'
import { inTransaction, isRetryable } from '../storage/postgres/pool.js'
import type { DueRow, ExecRow, JobRow } from './store.js'
import { runAsync, type AsyncJobOps, type Step } from './tx.js'

/**
 * Jobs on a PostgreSQL shared by several hubs (issue #18), under the same job
 * logic as on SQLite (tx.ts says how one copy of it runs on both). These are
 * the store calls a job transaction makes, on one connection inside one
 * transaction. Where two hubs may work on the same rows at once, the rows
 * are locked as they are read:
 *
 * - a pull locks the device's due executions as it reads them, in the order
 *   it takes them (`FOR UPDATE`), so a second pull of the same device at
 *   another hub (a device pulls once at a time, but a resend may cross)
 *   waits for the first to commit and then finds those leased: each goes out
 *   once. Not SKIP LOCKED: a pull reads more rows than it takes (some are
 *   held back by the pace or were sent on this connection), and skipping
 *   those would leave the second pull short, saying there is no more;
 * - a paced job's pace is read `FOR UPDATE`, in job order, so two hubs
 *   answering pulls of the same rollout take turns on it and the pace holds
 *   across the cluster;
 * - stop notices are taken `FOR UPDATE SKIP LOCKED`, so one goes out once.
 *
 * (Part of the job logic runs on PostgreSQL so far: answering a pull, and
 * making a job. The rest follows; a hub does not start on PostgreSQL yet.)
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
      if (job.scheduleId !== null || job.causeFiring !== null) return false
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
    async getExec(jobId, deviceId) {
      return (await c.query<ExecRow>('SELECT * FROM executions WHERE job_id = $1 AND device_id = $2', [jobId, deviceId])).rows[0]
    },
    async paceOf(jobId) {
      return (await c.query<{ rollout_tat: number | null }>('SELECT rollout_tat FROM jobs WHERE id = $1 FOR UPDATE', [jobId])).rows[0]?.rollout_tat ?? null
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
