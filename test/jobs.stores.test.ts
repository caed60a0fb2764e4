import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import type { JobsBatch } from '../protocol/messages.js'
import { rolloutRelease } from '../hub/jobs/decisions.js'
import { pullStep } from '../hub/jobs/dispatch.js'
import { insertJobStep } from '../hub/jobs/lifecycle.js'
import { inJobTransaction, postgresJobOps } from '../hub/jobs/postgres.js'
import { createJobStore, type ExecRow, type JobRow, type NewJob } from '../hub/jobs/store.js'
import { runAsync, runSync, tx, type Step } from '../hub/jobs/tx.js'
import { inTransaction, openPostgres } from '../hub/storage/postgres/pool.js'
import { migratePostgres } from '../hub/storage/postgres/schema.js'
import { openHubDb } from '../hub/storage/schema.js'
import { tempDir } from './support/hub.js'
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
}

function sqlite(): Promise<Backend> {
  const tmp = tempDir('jobs')
  const db = openHubDb(join(tmp.dir, 'hub.db'))
  closers.push(() => { db.close(); tmp.remove(); return Promise.resolve() })
  const store = createJobStore(db)
  // A failure rejects, as on PostgreSQL, rather than throwing at the call.
  return Promise.resolve({ run: (make) => Promise.resolve().then(() => db.transaction(() => runSync(store, make())).immediate()) })
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
  return { pool, run: <T>(make: () => Step<T>) => inJobTransaction(pool, make) }
}

async function postgres(): Promise<Backend> {
  return postgresOn(await postgresUrl())
}

const T0 = 1_700_000_000_000
const OPTIONS = { leaseGraceMs: 30_000, redeliverAfterMs: 300_000 }

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
      await new Promise((resolve) => setTimeout(resolve, 300))
      // Still waiting: it may not answer before hub-a's lease is committed.
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
    let atB = 0
    const atA = await inTransaction(a.pool, async (c) => {
      let n = 0
      for (const d of devices.slice(0, 3)) n += (await runAsync(postgresJobOps(c), pullStep(OPTIONS, d, 10, T0, T0))).executions.length
      const others = Promise.all(devices.slice(3).map((d) => b.run(() => pullStep(OPTIONS, d, 10, T0, T0))))
      // hub-b waits on the rollout's pace until hub-a commits; give it time to get there.
      await new Promise((resolve) => setTimeout(resolve, 300))
      void others.then((batches) => { atB = batches.reduce((sum, x) => sum + x.executions.length, 0) })
      return { n, others }
    })
    await atA.others
    expect(atA.n).toBe(burst)
    expect(atB).toBe(0)
  })
})
