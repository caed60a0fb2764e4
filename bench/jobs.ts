import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { LEDGER_MIGRATIONS, Ledger } from '../agent/ledger.js'
import { JobQueue, type JobInput } from '../agent/job-queue.js'
import { percentiles } from '../common/latency.js'
import { migrate, openDatabase } from '../common/sqlite.js'
import { provision, startIdleFleets, type Fleet } from './fleet.js'
import { startHubProcess } from './hub-process.js'
import { cpuMs, mb, rssBytes } from './proc-stats.js'
import { table } from '../cli/output.js'

/**
 * `npm run bench -- jobs`: in one run,
 * 1. the agent's local job queue (the real JobQueue on a real ledger file):
 *    enqueue a batch, claim it, complete it with a no-op result, and delete
 *    the acked updates, as the agent does, batch after batch;
 * 2. the ceiling: a raw better-sqlite3 loop doing the same shape of work on
 *    a bare table (batched insert, claim by update, complete by update), with
 *    the same pragmas;
 * 3. end to end: one job to N connected agents (real agents in fleet
 *    processes, a hub process), from the POST to all executions succeeded.
 */
export interface JobsBenchOptions {
  readonly jobs: number
  readonly batch: number
  readonly agents: number
  readonly rounds: number
}

interface Throughput {
  readonly jobsPerS: number
  readonly ms: number
}

/**
 * Times `n` jobs put through `runBatch` `batch` at a time; each call gets the
 * numbers of its jobs (k = first … first + batch - 1) and the `now` of the run.
 */
function timedBatches(n: number, batch: number, runBatch: (ks: number[], now: number) => void): Throughput {
  const now = Date.now()
  const t0 = performance.now()
  for (let i = 0; i < n; i += batch) runBatch(Array.from({ length: batch }, (_, j) => i + j), now)
  const ms = performance.now() - t0
  return { jobsPerS: (n / ms) * 1000, ms }
}

function localQueue(dir: string, n: number, batch: number): Throughput {
  const ledger = new Ledger({ dataDir: dir })
  try {
    const q = new JobQueue(ledger, { capacity: batch * 2 })
    return timedBatches(n, batch, (ks, now) => {
      const items: JobInput[] = ks.map((k) => ({ execId: `jbench${k}.bench-device`, jobId: `jbench${k}`, name: 'noop', payload: { n: k }, attempt: 1, version: 1, timeoutMs: 60_000, priority: 0 }))
      q.enqueue(items, now)
      const claimed = q.claim(batch, now)
      q.complete(claimed.map((c) => ({ execId: c.execId, attempt: c.attempt, outcome: 'succeeded' as const, result: null })), now)
      const updates = q.readUpdatesAfter(0, batch * 2)
      q.ackUpdates(updates.map((u) => u.id))
    })
  } finally {
    ledger.close()
  }
}

/** The same work on a bare table: the most better-sqlite3 can do in this shape. */
function rawSqlite(dir: string, n: number, batch: number): Throughput {
  const db = openDatabase(join(dir, 'raw.db'), { synchronous: 'NORMAL' })
  try {
    db.exec('CREATE TABLE q (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, state INTEGER NOT NULL, started INTEGER, finished INTEGER)')
    db.exec('CREATE INDEX q_ready ON q(state) WHERE state = 0')
    const insert = db.prepare<[string]>('INSERT INTO q (payload, state) VALUES (?, 0)')
    const claim = db.prepare<[number, number], { id: number }>('UPDATE q SET state = 1, started = ? WHERE id IN (SELECT id FROM q WHERE state = 0 ORDER BY id LIMIT ?) RETURNING id')
    const finish = db.prepare<[number, number]>('UPDATE q SET state = 2, finished = ? WHERE id = ?')
    const enqueueTx = db.transaction((items: string[]) => { for (const p of items) insert.run(p) })
    const claimTx = db.transaction((max: number, now: number) => claim.all(now, max))
    const finishTx = db.transaction((ids: number[], now: number) => { for (const id of ids) finish.run(now, id) })
    return timedBatches(n, batch, (ks, now) => {
      enqueueTx(ks.map((k) => JSON.stringify({ n: k })))
      const ids = claimTx(batch, now).map((r) => r.id)
      finishTx(ids, now)
    })
  } finally {
    db.close()
  }
}

/**
 * The same rows the queue writes (the ledger's own tables: a job row, an
 * in_progress update at claim, the terminal update replacing it at
 * completion, the delete at ack), by hand-written statements without the
 * queue's checks, counters and JSON building: what the queue's bookkeeping
 * costs on top of its SQL.
 */
function rawSameRows(dir: string, n: number, batch: number): Throughput {
  const db = openDatabase(join(dir, 'raw-rows.db'), { synchronous: 'NORMAL' })
  try {
    migrate(db, LEDGER_MIGRATIONS)
    const insert = db.prepare<[string, number, string, string, number]>(`INSERT OR IGNORE INTO jobs (exec_id, attempt, job_id, name, payload, version, timeout_ms,
      priority, source, state, received_at) VALUES (?, ?, ?, 'noop', ?, 1, 60000, 0, 'hub', 'queued', ?)`)
    const ready = db.prepare<[number], { exec_id: string; attempt: number }>("SELECT exec_id, attempt FROM jobs WHERE state = 'queued' ORDER BY priority DESC LIMIT ?")
    const start = db.prepare<[number, string, number]>("UPDATE jobs SET state = 'running', started_at = ? WHERE exec_id = ? AND attempt = ?")
    const addUpdate = db.prepare<[string, number, string, string]>('INSERT INTO job_updates (exec_id, attempt, status, body) VALUES (?, ?, ?, ?)')
    const finish = db.prepare<[number, string, number]>("UPDATE jobs SET state = 'done', outcome = 'succeeded', finished_at = ? WHERE exec_id = ? AND attempt = ?")
    const dropProgress = db.prepare<[number]>('DELETE FROM job_updates WHERE id = ?')
    const pending = db.prepare<[number], { id: number }>('SELECT id FROM job_updates ORDER BY id LIMIT ?')
    const ack = db.prepare<[number]>('DELETE FROM job_updates WHERE id = ?')
    const enqueueTx = db.transaction((items: Array<[string, string]>, now: number) => { for (const [e, p] of items) insert.run(e, 1, e.slice(0, e.indexOf('.')), p, now) })
    const claimTx = db.transaction((max: number, now: number) => {
      return ready.all(max).map((r) => {
        start.run(now, r.exec_id, r.attempt)
        const info = addUpdate.run(r.exec_id, r.attempt, 'in_progress', `{"execId":"${r.exec_id}","attempt":1,"version":1,"status":"in_progress","startedAt":${now}}`)
        return { ...r, progressId: Number(info.lastInsertRowid) }
      })
    })
    const completeTx = db.transaction((rows: Array<{ exec_id: string; attempt: number; progressId: number }>, now: number) => {
      for (const r of rows) {
        finish.run(now, r.exec_id, r.attempt)
        dropProgress.run(r.progressId)
        addUpdate.run(r.exec_id, r.attempt, 'succeeded', `{"execId":"${r.exec_id}","attempt":1,"version":1,"status":"succeeded","finishedAt":${now},"result":null}`)
      }
    })
    const ackTx = db.transaction((ids: number[]) => { for (const id of ids) ack.run(id) })
    return timedBatches(n, batch, (ks, now) => {
      enqueueTx(ks.map((k): [string, string] => [`jraw${k}.bench-device`, JSON.stringify({ n: k })]), now)
      completeTx(claimTx(batch, now), now)
      ackTx(pending.all(batch * 2).map((r) => r.id))
    })
  } finally {
    db.close()
  }
}

interface JobDetail {
  counts: Record<string, number>
  status: string
  executions: Array<{ startedAt: number | null; finishedAt: number | null; deliveredAt: number | null }>
}

async function endToEnd(work: string, agents: number, rounds: number) {
  const hubDir = join(work, 'hub')
  mkdirSync(hubDir, { recursive: true })
  const hub = await startHubProcess(hubDir)
  const fleets: Fleet[] = []
  try {
    const devices = await provision(hub, agents, 'jobs')
    await startIdleFleets(hub, work, devices, fleets)
    const results: Array<{ totalMs: number; p50Ms: number; p99Ms: number; hubCpuPct: number }> = []
    for (let r = 0; r < rounds; r++) {
      const cpu0 = cpuMs(hub.pid)
      const t0 = Date.now()
      const created = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'all', payload: { round: r } })
      if (created.status !== 201) throw new Error(`job create: ${created.status} ${JSON.stringify(created.body)}`)
      let detail: JobDetail
      for (;;) {
        detail = (await hub.api<JobDetail>('GET', `/api/jobs/${created.body.id}?limit=1`)).body
        if (detail.status !== 'active') break
        if (Date.now() - t0 > 60_000) throw new Error(`job not done after 60 s: ${JSON.stringify(detail.counts)}`)
        await sleep(20)
      }
      const totalMs = Date.now() - t0
      const cpu1 = cpuMs(hub.pid)
      if (detail.counts.succeeded !== agents) throw new Error(`round ${r}: ${JSON.stringify(detail.counts)}`)
      const all = (await hub.api<JobDetail>('GET', `/api/jobs/${created.body.id}?limit=${agents}`)).body.executions
      const done = percentiles(all.map((e) => (e.finishedAt ?? t0) - t0))
      results.push({ totalMs, p50Ms: done.p50, p99Ms: done.p99, hubCpuPct: ((cpu1 - cpu0) / totalMs) * 100 })
      await sleep(500)
    }
    const best = results.reduce((a, b) => (b.totalMs < a.totalMs ? b : a))
    return { results, best, hubRss: rssBytes(hub.pid), fleetRss: fleets.reduce((s, f) => s + (f.last()?.rssBytes ?? 0), 0) }
  } finally {
    await Promise.allSettled(fleets.map((f) => f.stop()))
    await hub.stop()
  }
}

export async function runJobsBench(o: JobsBenchOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-jobs-'))
  try {
    process.stderr.write(`jobs bench: local queue ${o.jobs} jobs in batches of ${o.batch}; end to end: one job to ${o.agents} agents, ${o.rounds} rounds\n`)
    const dir = (name: string) => { const p = join(work, name); mkdirSync(p); return p }
    // Interleaved and twice each, so no side gets only the warm or the noisy part of the run.
    const best = { queue: 0, rows: 0, raw: 0 }
    for (let round = 0; round < 2; round++) {
      best.queue = Math.max(best.queue, localQueue(dir(`q${round}`), o.jobs, o.batch).jobsPerS)
      best.rows = Math.max(best.rows, rawSameRows(dir(`s${round}`), o.jobs, o.batch).jobsPerS)
      best.raw = Math.max(best.raw, rawSqlite(dir(`r${round}`), o.jobs, o.batch).jobsPerS)
    }
    const { queue, raw } = best
    process.stderr.write('end to end...\n')
    const e2e = await endToEnd(work, o.agents, o.rounds)
    const rows: Array<[string, string, string]> = [
      ['', 'rollcall', 'baseline'],
      [`local queue: enqueue → claim → complete → ack, jobs/s (batches of ${o.batch})`, queue.toFixed(0), 'raw better-sqlite3 loops, jobs/s:'],
      ['  the same rows by hand-written SQL (no checks, no counters)', '', `${best.rows.toFixed(0)} (the queue reaches ${((queue / best.rows) * 100).toFixed(0)}%)`],
      ['  a bare table: insert, claim by update, complete by update', '', `${raw.toFixed(0)} (the queue reaches ${((queue / raw) * 100).toFixed(0)}%)`],
      [`one job to ${o.agents} connected agents, until all succeeded (best of ${o.rounds})`, `${(e2e.best.totalMs / 1000).toFixed(2)} s`, 'target < 5 s'],
      ['  each round', e2e.results.map((r) => `${(r.totalMs / 1000).toFixed(2)} s`).join(', '), ''],
      ['  executions finished: p50 / p99 after the POST (best round)', `${e2e.best.p50Ms.toFixed(0)} / ${e2e.best.p99Ms.toFixed(0)} ms`, ''],
      ['  hub CPU during the best round', `${e2e.best.hubCpuPct.toFixed(0)}%`, ''],
      ['  hub RSS / fleet processes RSS', `${mb(e2e.hubRss)} / ${mb(e2e.fleetRss)}`, ''],
    ]
    process.stdout.write(`${table(rows)}\n`)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
