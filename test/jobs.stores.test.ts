import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import type { JobsBatch } from '../protocol/messages.js'
import { rolloutRelease } from '../hub/jobs/decisions.js'
import { pullStep } from '../hub/jobs/dispatch.js'
import { cancelStep, insertJobStep, removedStep } from '../hub/jobs/lifecycle.js'
import { createEndings } from '../hub/jobs/endings.js'
import { updateStep } from '../hub/jobs/updates.js'
import { sweepStep } from '../hub/jobs/sweeper.js'
import type { Tally } from '../hub/jobs/context.js'
import type { JobUpdate } from '../protocol/messages.js'
import { inJobTransaction, postgresJobOps, postgresJobsBackend, readJobs } from '../hub/jobs/postgres.js'
import { createJobs } from '../hub/jobs/jobs.js'
import { sqliteJobsBackend } from '../hub/jobs/context.js'
import { createRegistry } from '../hub/fleet/registry.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { systemClock } from '../common/clock.js'
import { topics } from '../protocol/topics.js'
import { executionStep, executionsOfDeviceStep, getStep, listStep } from '../hub/jobs/reads.js'
import { createJobStore, type ExecRow, type JobRow, type NewJob } from '../hub/jobs/store.js'
import { runAsync, runSync, tx, type Step } from '../hub/jobs/tx.js'
import { inTransaction, openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import type pg from 'pg'
import { tempDir, waitFor } from './support/hub.js'
import { SKIP_WITHOUT_POSTGRES, privatePostgres } from './support/postgres.js'

/**
 * Job transactions on the hub's SQLite file and on a PostgreSQL shared by
 * several hubs (issue #18): the same job logic (hub/jobs/tx.ts) run by both,
 * one suite for both, then what only a shared database has: two hubs
 * answering pulls at once. So far the logic that makes a job and answers a
 * pull; the rest of the job logic follows.
 */

const { freshDatabase, closers } = privatePostgres('pg-jobs')

interface Backend {
  /** Runs a job transaction and commits it. */
  run<T>(make: () => Step<T>): Promise<T>
  /** Runs a read for the API, outside any transaction. */
  read<T>(step: Step<T>): Promise<T>
}

function sqlite(): Promise<Backend> {
  const tmp = tempDir('jobs')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  closers.push(() => { db.close(); tmp.remove(); return Promise.resolve() })
  const store = createJobStore(db)
  // A failure rejects, as on PostgreSQL, rather than throwing at the call.
  return Promise.resolve({
    run: (make) => Promise.resolve().then(() => db.transaction(() => runSync(store, make())).immediate()),
    read: (step) => Promise.resolve().then(() => runSync(store, step)),
  })
}

async function postgresUrl(): Promise<string> {
  const url = await freshDatabase()
  const setup = openPostgres(url, silentLogger(), { maxConnections: 1 })
  await migratePostgres(setup, silentLogger())
  await setup.end()
  return url
}

function postgresOn(url: string, name = 'hub') {
  const pool = openPostgres(url, silentLogger(), { maxConnections: 3, applicationName: name })
  closers.push(() => pool.end())
  return { pool, run: <T>(make: () => Step<T>) => inJobTransaction(pool, make), read: <T>(step: Step<T>) => readJobs(pool, step) }
}

async function postgres(): Promise<Backend> {
  return postgresOn(await postgresUrl())
}

/** Until the hub named `app` waits on a row another transaction holds (its query is blocked, not slow). */
async function waitsOnLock(pool: pg.Pool, app: string): Promise<void> {
  await waitFor(async () => ((await pool.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [app])).rowCount ?? 0) > 0,
    `${app} waiting on a lock`)
}

const T0 = 1_700_000_000_000
const OPTIONS = { leaseGraceMs: 30_000, redeliverAfterMs: 300_000 }
const ENV = {
  options: { ...OPTIONS, sweepIntervalMs: 1000, defaultTimeoutMs: 60_000, defaultMaxAttempts: 3, backoffBaseMs: 1000, backoffMaxMs: 60_000 },
  logger: silentLogger(),
  // No jitter: a retry's wait is its base.
  random: () => 0.5,
}
const endings = createEndings(ENV)
/** A device's update of its execution of `jobId` (attempt and version as delivered). */
const upd = (id: number, jobId: string, deviceId: string, status: JobUpdate['status'], over: Partial<JobUpdate> = {}): JobUpdate =>
  ({ id, execId: `${jobId}.${deviceId}`, attempt: 1, version: 1, status, ...over })
const message = (...updates: JobUpdate[]) => ({ type: 'jobs.update' as const, v: 1 as const, storeId: 'store-1', updates })

function job(id: string, over: Partial<NewJob> = {}): NewJob {
  return {
    id, name: 'task', payload: '{"n":1}', target: { kind: 'devices', ids: ['d1'] }, priority: 0, timeoutMs: 60_000, expiresAt: null, maxAttempts: 3,
    backoffBaseMs: 1000, backoffMaxMs: 60_000, ratePerMinute: null, abortMinFinished: null, abortFailurePct: null, continuous: false,
    createdAt: T0, scheduleId: null, scheduleTick: null, causeRule: null, causeFiring: null, ...over,
  }
}

const read = <T>(b: Backend, step: () => Step<T>) => b.run(step)
function* execOf(jobId: string, deviceId: string): Step<ExecRow | undefined> { return yield* tx.getExec(jobId, deviceId) }
function* jobOf(jobId: string): Step<JobRow | undefined> { return yield* tx.getJob(jobId) }
const ids = (b: JobsBatch) => b.executions.map((e) => e.execId)

describe.each([['SQLite', sqlite], ['PostgreSQL', postgres]] as const)('job transactions on %s', (name, make) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('makes a job with one queued execution per device, once per schedule tick and per rule action', async () => {
    const b = await make()
    expect(await b.run(() => insertJobStep(job('j1'), ['d1', 'd2']))).toBe(true)
    expect(await read(b, () => execOf('j1', 'd2'))).toMatchObject({ state: 'queued', attempt: 1, version: 1, run_after: T0, delivered_at: null })
    expect(await read(b, () => jobOf('j1'))).toMatchObject({ status: 'active', target: 'device:d1', continuous: 0, rollout_tat: null })

    // Another tick of a schedule, and the same tick again (another hub's clock, a restart): one job.
    expect(await b.run(() => insertJobStep(job('j-s1', { scheduleId: 7, scheduleTick: T0 }), ['d1']))).toBe(true)
    expect(await b.run(() => insertJobStep(job('j-s2', { scheduleId: 7, scheduleTick: T0 }), ['d1']))).toBe(false)
    expect(await read(b, () => jobOf('j-s2'))).toBeUndefined()
    // A rule's action carried out again makes no second job under its id.
    expect(await b.run(() => insertJobStep(job('j-f', { causeRule: 'r', causeFiring: 'f1' }), ['d1']))).toBe(true)
    expect(await b.run(() => insertJobStep(job('j-f', { causeRule: 'r', causeFiring: 'f1' }), ['d1', 'd2']))).toBe(false)
    expect(await read(b, () => execOf('j-f', 'd2'))).toBeUndefined()
    // Any other clash of ids is a bug, and says so.
    await expect(b.run(() => insertJobStep(job('j1'), ['d1']))).rejects.toThrow(/jobs\.id|j1 exists/)
  })

  it.skipIf(skip)('answers a pull with the due executions by priority, leased, and sends them again only on a later connection', async () => {
    const b = await make()
    await b.run(() => insertJobStep(job('j-low'), ['d1']))
    await b.run(() => insertJobStep(job('j-high', { priority: 5, expiresAt: T0 + 600_000 }), ['d1']))
    await b.run(() => insertJobStep(job('j-other'), ['d2']))
    const first = await b.run(() => pullStep(OPTIONS, 'd1', 10, T0 + 10, T0))
    expect(ids(first)).toEqual(['j-high.d1', 'j-low.d1'])
    expect(first).toMatchObject({ type: 'jobs.batch', more: false })
    expect(first.executions[0]).toMatchObject({ jobId: 'j-high', name: 'task', payload: { n: 1 }, attempt: 1, version: 1, timeoutMs: 60_000, priority: 5, expiresAt: T0 + 600_000 })
    // Leased: one with a job expiry until it plus the timeout and grace; one without, held until a retry.
    expect(await read(b, () => execOf('j-high', 'd1'))).toMatchObject({ delivered_at: T0 + 10, first_delivered_at: T0 + 10, lease_until: T0 + 600_000 + 60_000 + 30_000 })
    expect(await read(b, () => execOf('j-low', 'd1'))).toMatchObject({ delivered_at: T0 + 10, lease_until: null })

    // The same connection pulls again: nothing new. A later connection gets them again (the last batch may have been lost with it).
    expect(ids(await b.run(() => pullStep(OPTIONS, 'd1', 10, T0 + 20, T0)))).toEqual([])
    expect(ids(await b.run(() => pullStep(OPTIONS, 'd1', 10, T0 + 30, T0 + 25)))).toEqual(['j-high.d1', 'j-low.d1'])
    expect(await read(b, () => execOf('j-high', 'd1'))).toMatchObject({ delivered_at: T0 + 30, first_delivered_at: T0 + 10 })
    // At most `max`, and `more` says there is more.
    const one = await b.run(() => pullStep(OPTIONS, 'd2', 0, T0 + 40, T0))
    expect(one).toMatchObject({ executions: [], more: true })
  })

  it.skipIf(skip)('releases a paced rollout\'s executions at its rate, and keeps the pace between pulls', async () => {
    const b = await make()
    const devices = Array.from({ length: 10 }, (_, i) => `p${i}`)
    await b.run(() => insertJobStep(job('j-paced', { ratePerMinute: 6, target: { kind: 'all' } }), devices))
    const burst = rolloutRelease(6, null, T0, 100).granted
    let delivered = 0
    for (const d of devices) delivered += (await b.run(() => pullStep(OPTIONS, d, 10, T0, T0))).executions.length
    expect(delivered).toBe(burst)
    expect((await read(b, () => jobOf('j-paced')))!.rollout_tat).toBeGreaterThan(T0)
    // Ten seconds later (6 a minute), one more.
    let later = 0
    for (const d of devices) later += (await b.run(() => pullStep(OPTIONS, d, 10, T0 + 10_000, T0))).executions.length
    expect(later).toBe(1)
  })
})

describe.each([['SQLite', sqlite], ['PostgreSQL', postgres]] as const)('job transactions on %s, after delivery', (name, make) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  it.skipIf(skip)('applies a device\'s updates by version, drops a replay, refuses another device\'s, and completes the job when nothing is open', async () => {
    const b = await make()
    await b.run(() => insertJobStep(job('jdone'), ['dev1', 'dev2']))
    await b.run(() => pullStep(OPTIONS, 'dev1', 10, T0 + 10, T0))
    const started = await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(1, 'jdone', 'dev1', 'in_progress', { startedAt: T0 + 20 })), T0 + 20))
    expect(started).toMatchObject({ ids: [1], refused: [], notify: [], tally: { updatesApplied: 1 } })
    expect(await read(b, () => execOf('jdone', 'dev1'))).toMatchObject({ state: 'in_progress', version: 2, device_version: 2, started_at: T0 + 20, lease_until: T0 + 20 + 60_000 + 30_000 })
    const ended = await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(2, 'jdone', 'dev1', 'succeeded', { result: { ok: 1 } }), upd(3, 'jdone', 'dev1', 'in_progress'), upd(4, 'jdone', 'dev2', 'succeeded')), T0 + 30))
    expect(ended).toMatchObject({ ids: [2, 3, 4], refused: [{ id: 4, code: 'NOT_YOURS' }], tally: { updatesApplied: 1, updatesDuplicate: 1, updatesRefused: 1 } })
    expect(await read(b, () => execOf('jdone', 'dev1'))).toMatchObject({ state: 'succeeded', result: '{"ok":1}', finished_at: T0 + 30, lease_until: null })
    expect(await read(b, () => jobOf('jdone'))).toMatchObject({ status: 'active' })
    await b.run(() => updateStep(ENV, endings, 'dev2', message(upd(1, 'jdone', 'dev2', 'succeeded')), T0 + 40))
    expect(await read(b, () => jobOf('jdone'))).toMatchObject({ status: 'completed', finished_at: T0 + 40 })
  })

  it.skipIf(skip)('retries a failed attempt after its backoff, and hands a failure with no attempt left to the rules', async () => {
    const b = await make()
    await b.run(() => insertJobStep(job('jretry', { maxAttempts: 2 }), ['dev1']))
    const first = await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(1, 'jretry', 'dev1', 'failed', { error: { code: 'E', message: 'boom' } })), T0 + 10))
    expect(first.failed).toEqual([])
    expect(first.tally).toMatchObject({ retries: 1 })
    const retry = await read(b, () => execOf('jretry', 'dev1'))
    expect(retry).toMatchObject({ state: 'queued', attempt: 2, base_version: 3, error_code: 'E', delivered_at: null })
    expect(retry!.run_after).toBeGreaterThan(T0 + 10)
    const last = await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(2, 'jretry', 'dev1', 'failed', { attempt: 2, version: 3, error: { code: 'E', message: 'again' } })), T0 + 20))
    expect(last.failed).toEqual([{ deviceId: 'dev1', jobId: 'jretry', name: 'task', outcome: 'failed', attempt: 2, error: 'E: again', causeRule: null }])
    expect(await read(b, () => jobOf('jretry'))).toMatchObject({ status: 'completed' })
  })

  it.skipIf(skip)('sweeps: a lapsed lease times out (and the device is told to stop), a job past its expiry expires what was never delivered', async () => {
    const b = await make()
    await b.run(() => insertJobStep(job('jtimeout', { maxAttempts: 1, timeoutMs: 1000 }), ['dev1']))
    await b.run(() => insertJobStep(job('jexpiry', { expiresAt: T0 + 5000 }), ['dev2']))
    await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(1, 'jtimeout', 'dev1', 'in_progress')), T0))
    // Nothing due yet.
    expect((await b.run(() => sweepStep(ENV, endings, T0 + 1000, T0))).tally).toEqual({})
    const swept = await b.run(() => sweepStep(ENV, endings, T0 + 1000 + 30_001, T0))
    expect(swept.tally).toEqual({ timedOut: 1, expired: 1 })
    expect(swept.notify).toEqual(['dev1'])
    expect(swept.failed).toMatchObject([{ jobId: 'jtimeout', outcome: 'timed_out' }])
    expect(await read(b, () => execOf('jtimeout', 'dev1'))).toMatchObject({ state: 'timed_out', cancel_notify: 1, error_code: 'TIMEOUT' })
    expect(await read(b, () => execOf('jexpiry', 'dev2'))).toMatchObject({ state: 'expired' })
    expect(await read(b, () => jobOf('jtimeout'))).toMatchObject({ status: 'completed' })
    // The stop notice goes out once, with the device's next batch.
    expect((await b.run(() => pullStep(OPTIONS, 'dev1', 10, T0 + 40_000, T0))).cancel).toEqual([{ execId: 'jtimeout.dev1', attempt: 1 }])
    expect((await b.run(() => pullStep(OPTIONS, 'dev1', 10, T0 + 40_001, T0))).cancel).toBeUndefined()
  })

  it.skipIf(skip)('shows jobs newest first by pages, a job\'s executions by device, an execution\'s history, a device\'s executions and failures', async () => {
    const b = await make()
    await b.run(() => insertJobStep(job('jread1', { createdAt: T0 }), ['dev1', 'dev2']))
    await b.run(() => insertJobStep(job('jread2', { createdAt: T0 + 1, maxAttempts: 1 }), ['dev1']))
    await b.run(() => insertJobStep(job('jread3', { createdAt: T0 + 1 }), ['dev3']))
    await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(1, 'jread2', 'dev1', 'failed', { error: { code: 'E', message: 'no' } })), T0 + 50))
    await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(2, 'jread1', 'dev1', 'succeeded', { result: [1] })), T0 + 60))

    // Jobs made in the same millisecond are not skipped across pages.
    const first = await b.read(listStep({ limit: 2 }))
    expect(first.map((j) => j.id)).toEqual(['jread3', 'jread2'])
    expect(first[1]).toMatchObject({ status: 'completed', counts: { failed: 1, queued: 0 }, target: 'device:d1', maxAttempts: 1 })
    expect((await b.read(listStep({ limit: 2, before: 'jread2' }))).map((j) => j.id)).toEqual(['jread1'])
    expect((await b.read(listStep({ status: 'completed' }))).map((j) => j.id)).toEqual(['jread2'])
    await expect(b.read(listStep({ before: 'jnope' }))).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' })

    const detail = await b.read(getStep('jread1', {}))
    expect(detail).toMatchObject({ id: 'jread1', payload: { n: 1 }, counts: { succeeded: 1, queued: 1 } })
    expect(detail.executions.map((e) => [e.execId, e.state])).toEqual([['jread1.dev1', 'succeeded'], ['jread1.dev2', 'queued']])
    expect((await b.read(getStep('jread1', { state: 'queued' }))).executions.map((e) => e.deviceId)).toEqual(['dev2'])
    expect((await b.read(getStep('jread1', { after: 'dev1' }))).executions.map((e) => e.deviceId)).toEqual(['dev2'])

    const exec = await b.read(executionStep('jread1.dev1'))
    expect(exec).toMatchObject({ state: 'succeeded', result: [1], version: 2 })
    expect(exec.history.map((h) => [h.version, h.state, h.source])).toEqual([[1, 'queued', 'hub'], [2, 'succeeded', 'device']])
    await expect(b.read(executionStep('jread1.dev9'))).rejects.toMatchObject({ code: 'EXECUTION_NOT_FOUND' })

    expect((await b.read(executionsOfDeviceStep('dev1', 10))).map((e) => [e.jobName, e.jobId, e.state])).toEqual([['task', 'jread2', 'failed'], ['task', 'jread1', 'succeeded']])
    const failures = await b.read((function* () { return yield* tx.failedOfDevice('dev1', T0, T0 + 1000, 10) })())
    expect(failures).toEqual([{ job_id: 'jread2', job_name: 'task', state: 'failed', attempt: 1, finished_at: T0 + 50, error_code: 'E', error_message: 'no', cause_rule: null }])
    expect(await b.read((function* () { return yield* tx.activeStateCounts() })())).toMatchObject({ queued: 2, succeeded: 1, failed: 0 })
  })

  it.skipIf(skip)('cancels a job\'s open executions, telling the devices that hold one; a removed device\'s executions end so its job can complete', async () => {
    const b = await make()
    await b.run(() => insertJobStep(job('jcancel'), ['dev1', 'dev2']))
    await b.run(() => pullStep(OPTIONS, 'dev1', 10, T0 + 10, T0))
    const notify = await b.run(() => cancelStep(endings, 'jcancel', T0 + 20, 'no longer needed'))
    expect([...notify]).toEqual(['dev1'])
    expect(await read(b, () => jobOf('jcancel'))).toMatchObject({ status: 'canceled', status_reason: 'no longer needed' })
    expect(await read(b, () => execOf('jcancel', 'dev2'))).toMatchObject({ state: 'canceled', cancel_notify: 0 })
    await expect(b.run(() => cancelStep(endings, 'jcancel', T0 + 30, 'again'))).rejects.toMatchObject({ code: 'JOB_FINISHED' })
    await expect(b.run(() => cancelStep(endings, 'nope', T0 + 30, 'x'))).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' })

    await b.run(() => insertJobStep(job('jremove'), ['dev1', 'dev3']))
    await b.run(() => updateStep(ENV, endings, 'dev1', message(upd(1, 'jremove', 'dev1', 'succeeded')), T0 + 40))
    const tally: Tally = await b.run(() => removedStep(endings, 'dev3', T0 + 50))
    expect(tally).toEqual({})
    expect(await read(b, () => execOf('jremove', 'dev3'))).toMatchObject({ state: 'canceled' })
    expect(await read(b, () => jobOf('jremove'))).toMatchObject({ status: 'completed' })
  })
})

describe.skipIf(SKIP_WITHOUT_POSTGRES)('job transactions at two hubs at once', () => {
  it('a pull at one hub waits for the same device\'s pull under way at another, then takes what that one left: each sent once', async () => {
    const url = await postgresUrl()
    const a = postgresOn(url, 'hub-a')
    const b = postgresOn(url, 'hub-b')
    for (const j of ['j1', 'j2', 'j3', 'j4']) await a.run(() => insertJobStep(job(j), ['d1']))
    // hub-a's pull is under way (its transaction holds what it read); hub-b gets the same device's pull meanwhile.
    let atB: JobsBatch | undefined
    const { atA, second } = await inTransaction(a.pool, async (c) => {
      const first = await runAsync(postgresJobOps(c), pullStep(OPTIONS, 'd1', 2, T0 + 10, T0))
      const pending = b.run(() => pullStep(OPTIONS, 'd1', 10, T0 + 10, T0)).then((x) => { atB = x })
      // It waits: it may not answer before hub-a's lease is committed.
      await waitsOnLock(a.pool, 'hub-b')
      expect(atB).toBeUndefined()
      return { atA: first, second: pending }
    })
    await second
    expect(ids(atA)).toEqual(['j1.d1', 'j2.d1'])
    expect(ids(atB!)).toEqual(['j3.d1', 'j4.d1'])
    // Both committed: each leased once, and a later pull on the same connection finds nothing left.
    expect(ids(await a.run(() => pullStep(OPTIONS, 'd1', 10, T0 + 20, T0)))).toEqual([])
  })

  it('two hubs releasing one paced rollout at once keep its pace between them', async () => {
    const url = await postgresUrl()
    const a = postgresOn(url, 'hub-a')
    const b = postgresOn(url, 'hub-b')
    const devices = Array.from({ length: 6 }, (_, i) => `p${i}`)
    await a.run(() => insertJobStep(job('j-paced', { ratePerMinute: 1, target: { kind: 'all' } }), devices))
    const burst = rolloutRelease(1, null, T0, 100).granted
    // hub-a releases what the pace allows and holds its transaction open while hub-b answers the other devices.
    const { n, others } = await inTransaction(a.pool, async (c) => {
      let released = 0
      for (const d of devices.slice(0, 3)) released += (await runAsync(postgresJobOps(c), pullStep(OPTIONS, d, 10, T0, T0))).executions.length
      const atB = Promise.all(devices.slice(3).map((d) => b.run(() => pullStep(OPTIONS, d, 10, T0, T0))))
      // hub-b waits on the rollout's pace until hub-a commits, then finds it spent.
      await waitsOnLock(a.pool, 'hub-b')
      return { n: released, others: atB }
    })
    expect(n).toBe(burst)
    expect((await others).reduce((sum, x) => sum + x.executions.length, 0)).toBe(0)
  })

  it('two hubs ending the last two executions of a job at once: the job completes', async () => {
    const url = await postgresUrl()
    const a = postgresOn(url, 'hub-a')
    const b = postgresOn(url, 'hub-b')
    await a.run(() => insertJobStep(job('jlast'), ['dev1', 'dev2']))
    // hub-a ends dev1's and holds its transaction open while hub-b ends dev2's: hub-b waits on the job, then sees nothing left open.
    const { other } = await inTransaction(a.pool, async (c) => {
      await runAsync(postgresJobOps(c), updateStep(ENV, endings, 'dev1', message(upd(1, 'jlast', 'dev1', 'succeeded')), T0 + 10))
      const atB = b.run(() => updateStep(ENV, endings, 'dev2', message(upd(1, 'jlast', 'dev2', 'succeeded')), T0 + 10))
      await waitsOnLock(a.pool, 'hub-b')
      return { other: atB }
    })
    expect((await other).tally).toMatchObject({ updatesApplied: 1 })
    expect(await a.run(() => jobOf('jlast'))).toMatchObject({ status: 'completed' })
  })
})

describe.each([['SQLite', 'sqlite'], ['PostgreSQL', 'postgres']] as const)('the jobs capability on %s', (name, kind) => {
  const skip = name === 'PostgreSQL' && SKIP_WITHOUT_POSTGRES

  /** createJobs on the backend, with every device reachable and what it publishes kept. */
  async function jobsOn() {
    const tmp = tempDir('jobs-capability')
    const db = openHubDb(join(tmp.dir, 'hub.db'))
    const writer = createWriter(db, { flushDelayMs: 2, maxBatchWeight: 10_000 }, silentLogger())
    closers.push(async () => { writer.close(); db.close(); tmp.remove() })
    // The registry is a dependency here, not what is tested: the hub's own file holds it for both.
    const registry = createRegistry(db)
    for (const id of ['dev1', 'dev2']) await registry.addDevice(id, null, T0)
    const backend = kind === 'sqlite' ? sqliteJobsBackend(db, writer) : postgresJobsBackend(postgresOn(await postgresUrl()).pool, silentLogger())
    const sent: Array<{ topic: string; message: Record<string, unknown> }> = []
    const jobs = createJobs(ENV.options, {
      backend, registry, clock: systemClock, random: Math.random, logger: silentLogger(),
      reachableSince: () => 0,
      publish: (topic, payload) => { sent.push({ topic, message: JSON.parse(payload.toString()) as Record<string, unknown> }) },
    })
    closers.push(async () => { jobs.stop() })
    const published = (topic: string) => waitFor(() => sent.find((m) => m.topic === topic)?.message, topic)
    return { jobs, sent, published }
  }

  it.skipIf(skip)('makes a job, rings its devices, answers their pulls and updates, completes it; cancels another; shows them', async () => {
    const { jobs, sent, published } = await jobsOn()
    const version = jobs.version()
    const made = await jobs.create({ name: 'echo', target: 'device:dev1,dev2', payload: { hi: 1 } })
    expect(made).toMatchObject({ name: 'echo', status: 'active', counts: { queued: 2 } })
    expect(sent.filter((m) => m.topic.endsWith('/jobs/notify')).map((m) => m.topic).sort()).toEqual([topics.jobsNotify('dev1'), topics.jobsNotify('dev2')])
    expect(jobs.version()).not.toBe(version)

    jobs.ingress.pull('dev1', 10, Date.now())
    const batch = await published(topics.jobsBatch('dev1'))
    expect(batch).toMatchObject({ type: 'jobs.batch', more: false, executions: [{ execId: `${made!.id}.dev1`, name: 'echo', payload: { hi: 1 }, attempt: 1, version: 1 }] })
    jobs.ingress.update('dev1', message(upd(1, made!.id, 'dev1', 'in_progress'), upd(2, made!.id, 'dev1', 'succeeded', { result: 'ok' })), Date.now())
    expect(await published(topics.jobsAck('dev1'))).toMatchObject({ type: 'jobs.ack', storeId: 'store-1', ids: [1, 2] })
    jobs.ingress.update('dev2', message(upd(7, made!.id, 'dev2', 'failed', { error: { code: 'E', message: 'no' } })), Date.now())
    expect(await published(topics.jobsAck('dev2'))).toMatchObject({ ids: [7] })
    // dev2's failed attempt is retried (3 attempts by default): queued again as attempt 2; dev1 is done.
    const shown = await jobs.get(made!.id)
    expect(shown.executions.map((e) => [e.deviceId, e.state, e.attempt])).toEqual([['dev1', 'succeeded', 1], ['dev2', 'queued', 2]])
    expect((await jobs.execution(`${made!.id}.dev1`)).history.map((h) => h.state)).toEqual(['queued', 'in_progress', 'succeeded'])
    expect(await jobs.executionsOfDevice('dev1', 5)).toMatchObject([{ jobId: made!.id, jobName: 'echo', state: 'succeeded' }])

    const other = await jobs.create({ name: 'sleep', target: 'device:dev1' })
    expect((await jobs.cancel(other!.id, 'not now')).status).toBe('canceled')
    await expect(jobs.cancel(other!.id)).rejects.toMatchObject({ code: 'JOB_FINISHED' })
    expect((await jobs.list()).map((j) => [j.id, j.status])).toEqual([[other!.id, 'canceled'], [made!.id, 'active']])
    expect(await jobs.activeExecutions()).toMatchObject({ succeeded: 1, queued: 1 })
    expect(jobs.stats()).toMatchObject({ pulls: 1, batches: 1, delivered: 1, updatesApplied: 3, retries: 1 })
  })
})
