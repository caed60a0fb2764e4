import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { encode, topics, type JobsAck, type JobsBatch, type JobsNotify, type JobUpdate } from '../protocol/index.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'
import type { HubConfig } from '../hub/config.js'
import { manualClock, type ManualClock } from '../common/clock.js'

/**
 * The hub's half of jobs, spoken to over the wire by hand-driven devices (a
 * real MQTT.js client per device): doorbells, leases, updates by version,
 * retries, the sweeper, cancel notices, abort, pacing and schedules.
 */

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000002'

interface WireDevice {
  readonly id: string
  readonly client: MqttClient
  readonly notices: JobsNotify[]
  readonly batches: JobsBatch[]
  readonly acks: JobsAck[]
  pull(max: number): Promise<JobsBatch>
  update(updates: Array<Omit<JobUpdate, 'id'>>): Promise<JobsAck>
}

describe('hub jobs over the wire', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function hubWith(overrides: Partial<HubConfig> = {}, clock?: ManualClock): Promise<TestHub> {
    const hub = await startTestHub({ flushDelayMs: 2, ...overrides }, undefined, undefined, clock)
    cleanups.push(() => hub.stop())
    return hub
  }

  let nextUpdateId = 1
  async function device(hub: TestHub, id: string, token?: string): Promise<WireDevice> {
    const t = token ?? await hub.addDevice(id)
    const client = await connectDevice(hub.mqttUrl, id, t)
    cleanups.push(() => client.endAsync())
    const notices: JobsNotify[] = []
    const batches: JobsBatch[] = []
    const acks: JobsAck[] = []
    client.on('message', (topic, payload) => {
      const m = JSON.parse(payload.toString()) as { type: string }
      if (m.type === 'jobs.notify') notices.push(m as JobsNotify)
      if (m.type === 'jobs.batch') batches.push(m as JobsBatch)
      if (m.type === 'jobs.ack') acks.push(m as JobsAck)
    })
    await client.subscribeAsync([topics.jobsNotify(id), topics.jobsBatch(id), topics.jobsAck(id)], { qos: 1 })
    await client.publishAsync(topics.state(id), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: 't', storeId, capabilities: ['jobs'] }), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable(id), `${id} reachable`)
    return {
      id, client, notices, batches, acks,
      async pull(max) {
        const before = batches.length
        await client.publishAsync(topics.jobsPull(id), encode({ type: 'jobs.pull', v: 1, max }), { qos: 1 })
        return waitFor(() => batches[before], `${id} batch`)
      },
      async update(updates) {
        const withIds = updates.map((u) => ({ ...u, id: nextUpdateId++ }))
        await client.publishAsync(topics.jobsUpdate(id), encode({ type: 'jobs.update', v: 1, storeId, updates: withIds }), { qos: 1 })
        const last = withIds[withIds.length - 1]!.id
        return waitFor(() => acks.find((a) => a.ids.includes(last)), `${id} ack of ${last}`)
      },
    }
  }

  it('rings the doorbell, leases on pull, applies updates by version and acks them after the commit', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    const d = await device(hub, 'dev-1')
    const job = (await jobs.create({ name: 'echo', target: 'device:dev-1', payload: { hello: 1 } }))!
    await waitFor(() => d.notices.length > 0, 'doorbell')
    const batch = await d.pull(10)
    expect(batch.more).toBe(false)
    expect(batch.executions).toHaveLength(1)
    const e = batch.executions[0]!
    expect(e).toMatchObject({ execId: `${job.id}.dev-1`, jobId: job.id, name: 'echo', payload: { hello: 1 }, attempt: 1, version: 1 })

    const ack1 = await d.update([{ execId: e.execId, attempt: 1, version: 1, status: 'in_progress', startedAt: 1 }])
    expect(ack1.refused).toBeUndefined()
    expect((await jobs.get(job.id)).executions[0]!.state).toBe('in_progress')
    const ack2 = await d.update([
      { execId: e.execId, attempt: 1, version: 1, status: 'in_progress', startedAt: 1 }, // a replay
      { execId: e.execId, attempt: 1, version: 1, status: 'succeeded', startedAt: 1, finishedAt: 2, result: { hello: 1 } },
    ])
    expect(ack2.ids).toHaveLength(2)
    expect(ack2.refused).toBeUndefined()
    const shown = await jobs.get(job.id)
    expect(shown.status).toBe('completed')
    expect(shown.counts.succeeded).toBe(1)
    expect(shown.executions[0]).toMatchObject({ state: 'succeeded', result: { hello: 1 } })
    // One history row per change: queued, in_progress, succeeded; the replay changed nothing.
    expect((await jobs.execution(e.execId)).history.map((h) => h.state)).toEqual(['queued', 'in_progress', 'succeeded'])
    // A pull now finds nothing.
    expect((await d.pull(10)).executions).toHaveLength(0)
  })

  it('refuses updates for another device\'s execution, unknown executions and stale versions, and acks them all', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    const a = await device(hub, 'dev-a')
    await hub.addDevice('dev-b')
    const job = (await jobs.create({ name: 'echo', target: 'device:dev-a,dev-b' }))!
    const [e] = (await a.pull(10)).executions
    await jobs.cancel(job.id)
    const ack = await a.update([
      { execId: `${job.id}.dev-b`, attempt: 1, version: 1, status: 'succeeded' },
      { execId: 'jzzzzzzzz.dev-a', attempt: 1, version: 1, status: 'succeeded' },
      { execId: e!.execId, attempt: 1, version: 1, status: 'succeeded' },
    ])
    expect(ack.ids).toHaveLength(3)
    expect(ack.refused?.map((r) => r.code)).toEqual(['NOT_YOURS', 'UNKNOWN_EXECUTION', 'STALE_VERSION'])
    expect((await jobs.get(job.id)).counts).toMatchObject({ canceled: 2, succeeded: 0 })
  })

  it('retries a failed attempt after its backoff, as a new attempt with a new version', async () => {
    const clock = manualClock(Date.now())
    const hub = await hubWith({}, clock)
    const jobs = hub.running.services.jobs
    const d = await device(hub, 'dev-r')
    const job = (await jobs.create({ name: 'flaky', target: 'device:dev-r', maxAttempts: 2, backoffBaseMs: 200, backoffMaxMs: 200 }))!
    const [e] = (await d.pull(5)).executions
    await d.update([{ execId: e!.execId, attempt: 1, version: 1, status: 'failed', error: { code: 'BOOM', message: 'no' } }])
    const queued = (await jobs.get(job.id)).executions[0]!
    expect(queued).toMatchObject({ state: 'queued', attempt: 2 })
    // Not before its backoff: the sweeper rings the device when it is due (its next sweep is a second on).
    const notices = d.notices.length
    clock.advance(1000)
    await waitFor(() => d.notices.length > notices, 'doorbell for the retry', 5000)
    const [e2] = (await d.pull(5)).executions
    expect(e2).toMatchObject({ attempt: 2, version: queued.version })
    await d.update([{ execId: e2!.execId, attempt: 2, version: e2!.version, status: 'failed', error: { code: 'BOOM', message: 'again' } }])
    const done = await jobs.get(job.id)
    expect(done.status).toBe('completed')
    expect(done.executions[0]).toMatchObject({ state: 'failed', attempt: 2, error: { code: 'BOOM', message: 'again' } })
    expect((await jobs.execution(e!.execId)).history.map((h) => `${h.attempt}:${h.state}`)).toEqual(['1:queued', '1:failed', '2:queued', '2:failed'])
  })

  /**
   * A job of one attempt whose execution on `id` started and then went silent: the sweeper
   * times it out once the test moves the hub's clock 300 ms on.
   */
  async function silentExecution(id: string) {
    const clock = manualClock(Date.now())
    const hub = await hubWith({ jobSweepIntervalMs: 100, jobLeaseGraceMs: 0 }, clock)
    const jobs = hub.running.services.jobs
    const d = await device(hub, id)
    const job = (await jobs.create({ name: 'slow', target: `device:${id}`, timeoutMs: 300, maxAttempts: 1 }))!
    const [e] = (await d.pull(1)).executions
    await d.update([{ execId: e!.execId, attempt: 1, version: 1, status: 'in_progress' }])
    return { hub, clock, jobs, d, job, e }
  }

  it('the sweeper times out a silent execution, tells the device to stop, and refuses its late result', async () => {
    const { clock, jobs, d, job, e } = await silentExecution('dev-s')
    clock.advance(400)
    await waitFor(async () => (await jobs.get(job.id)).executions[0]!.state === 'timed_out', 'timed out', 5000)
    await waitFor(() => d.notices.some((n) => n.cancel?.some((c) => c.execId === e!.execId)), 'cancel notice')
    const late = await d.update([{ execId: e!.execId, attempt: 1, version: 1, status: 'succeeded' }])
    expect(late.refused?.[0]?.code).toBe('STALE_VERSION')
    expect((await jobs.get(job.id))).toMatchObject({ status: 'completed', counts: { timed_out: 1, succeeded: 0 } })
  })

  it('a timed-out attempt that is retried: the stop notice names the old attempt, the retry is a new one', async () => {
    const clock = manualClock(Date.now())
    const hub = await hubWith({ jobSweepIntervalMs: 100, jobLeaseGraceMs: 0 }, clock)
    const jobs = hub.running.services.jobs
    const d = await device(hub, 'dev-t2')
    const job = (await jobs.create({ name: 'slow', target: 'device:dev-t2', timeoutMs: 300, maxAttempts: 2, backoffBaseMs: 0, backoffMaxMs: 0 }))!
    const [e] = (await d.pull(1)).executions
    await d.update([{ execId: e!.execId, attempt: 1, version: 1, status: 'in_progress' }])
    clock.advance(400)
    await waitFor(async () => (await jobs.get(job.id)).executions[0]!.attempt === 2, 'retried as attempt 2', 5000)
    const stop = await waitFor(() => d.notices.find((n) => n.cancel?.some((c) => c.execId === e!.execId)), 'stop notice')
    expect(stop.cancel).toEqual([{ execId: e!.execId, attempt: 1 }])
    const [e2] = (await d.pull(1)).executions
    expect(e2).toMatchObject({ execId: e!.execId, attempt: 2 })
    expect((await jobs.execution(e!.execId)).history.map((h) => `${h.attempt}:${h.state}`)).toEqual(['1:queued', '1:in_progress', '1:timed_out', '2:queued'])
  })

  it('expires executions not started by expiresAt, delivered or not', async () => {
    const clock = manualClock(Date.now())
    const hub = await hubWith({ jobSweepIntervalMs: 100, jobLeaseGraceMs: 0 }, clock)
    const jobs = hub.running.services.jobs
    const d = await device(hub, 'dev-x')
    await hub.addDevice('dev-offline')
    const job = (await jobs.create({ name: 'echo', target: 'device:dev-x,dev-offline', expiresAt: clock.now() + 400, timeoutMs: 100 }))!
    expect((await d.pull(5)).executions).toHaveLength(1)
    // Past expiresAt and, for the delivered one, a full run after it.
    clock.advance(600)
    await waitFor(async () => (await jobs.get(job.id)).status === 'completed', 'job completed by expiry', 5000)
    expect((await jobs.get(job.id)).counts.expired).toBe(2)
  })

  it('cancels: running executions get a cancel notice now, an offline device hears at its next birth', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    const on = await device(hub, 'dev-on')
    const offToken = await hub.addDevice('dev-off')
    let off = await device(hub, 'dev-off', offToken)
    const job = (await jobs.create({ name: 'sleep', target: 'device:dev-on,dev-off' }))!
    const [eOn] = (await on.pull(1)).executions
    const [eOff] = (await off.pull(1)).executions
    await off.client.endAsync()
    await waitFor(() => !hub.running.services.presence.isReachable('dev-off'), 'dev-off offline')
    await on.update([{ execId: eOn!.execId, attempt: 1, version: 1, status: 'in_progress' }])
    expect((await jobs.cancel(job.id)).status).toBe('canceled')
    await waitFor(() => on.notices.some((n) => n.cancel?.[0]?.execId === eOn!.execId), 'cancel notice to the online device')
    off = await device(hub, 'dev-off', offToken)
    await waitFor(() => off.notices.some((n) => n.cancel?.[0]?.execId === eOff!.execId), 'cancel notice at the next birth')
    expect((await jobs.get(job.id)).counts.canceled).toBe(2)
  })

  it('aborts when the failure rate passes the threshold and cancels what is still queued', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    const devs = await Promise.all(Array.from({ length: 6 }, (_, i) => device(hub, `dev-ab${i}`)))
    const job = (await jobs.create({ name: 'risky', target: `device:${devs.map((d) => d.id).join(',')}`, abortAfter: 3, abortAtPercent: 50, maxAttempts: 1 }))!
    for (const [i, d] of devs.slice(0, 3).entries()) {
      const [e] = (await d.pull(1)).executions
      await d.update([{ execId: e!.execId, attempt: 1, version: 1, status: i === 0 ? 'succeeded' : 'failed', error: i === 0 ? undefined : { code: 'BAD', message: 'x' } }])
    }
    const shown = await jobs.get(job.id)
    expect(shown.status).toBe('aborted')
    expect(shown.statusReason).toMatch(/failure rate 66\.7%/)
    expect(shown.counts).toMatchObject({ succeeded: 1, failed: 2, canceled: 3, queued: 0 })
  })

  it('paces a rollout: a burst of one second\'s worth, then rings the next devices as the pace allows', async () => {
    const hub = await hubWith({ jobSweepIntervalMs: 100 })
    const jobs = hub.running.services.jobs
    const devs = await Promise.all(Array.from({ length: 6 }, (_, i) => device(hub, `dev-p${i}`)))
    // 120/min: one every 500 ms, burst 2.
    const job = (await jobs.create({ name: 'echo', target: `device:${devs.map((d) => d.id).join(',')}`, ratePerMinute: 120 }))!
    const t0 = Date.now()
    const deliveredAt: number[] = []
    await Promise.all(devs.map(async (d) => {
      for (;;) {
        await waitFor(() => d.notices.length > 0, `${d.id} doorbell`, 10_000, 20)
        d.notices.length = 0
        const b = await d.pull(1)
        if (b.executions.length > 0) {
          deliveredAt.push(Date.now() - t0)
          return
        }
      }
    }))
    deliveredAt.sort((a, b) => a - b)
    expect((await jobs.get(job.id)).executions.every((e) => e.deliveredAt !== null)).toBe(true)
    // 6 releases at 2/s with a burst of 2: the last no sooner than 2 s after the start.
    expect(deliveredAt[5]!).toBeGreaterThanOrEqual(1900)
    for (let i = 0; i < deliveredAt.length; i++) {
      const inWindow = deliveredAt.filter((t) => t >= deliveredAt[i]! && t < deliveredAt[i]! + 1000).length
      expect(inWindow).toBeLessThanOrEqual(2 + 2 + 1) // burst + rate * 1 s, plus one for timer skew
    }
  })

  it('a rate whose interval is not whole milliseconds (3/s) paces, and the device keeps getting work', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    const d = await device(hub, 'dev-frac')
    const paced = (await jobs.create({ name: 'echo', target: 'device:dev-frac', ratePerMinute: 180 }))!
    const [e] = (await d.pull(5)).executions
    expect(e?.jobId).toBe(paced.id)
    const next = (await jobs.create({ name: 'echo', target: 'device:dev-frac' }))!
    expect((await d.pull(5)).executions.map((x) => x.jobId)).toEqual([next.id])
    expect(hub.running.services.jobs.stats()).toMatchObject({ delivered: 2 })
    const stats = await hub.api<{ writer: { failedOps: number } }>('GET', '/api/stats')
    expect(stats.body.writer.failedOps).toBe(0)
  })

  it('a paced rollout whose first devices in line are offline still rings the online ones', async () => {
    const hub = await hubWith({ jobSweepIntervalMs: 100 })
    const jobs = hub.running.services.jobs
    // Registered first, so first in rollout order, and never connected.
    for (let i = 0; i < 8; i++) await hub.addDevice(`dev-gone${i}`, 'mixed')
    const online: WireDevice[] = []
    for (let i = 0; i < 3; i++) {
      const id = `dev-here${i}`
      online.push(await device(hub, id, await hub.addDevice(id, 'mixed')))
    }
    const job = (await jobs.create({ name: 'echo', target: 'group:mixed', ratePerMinute: 60 }))!
    // One a second: all three online devices get rung and leased within a few seconds.
    await Promise.all(online.map(async (d) => {
      for (;;) {
        await waitFor(() => d.notices.length > 0, `${d.id} doorbell`, 8000, 20)
        d.notices.length = 0
        if ((await d.pull(1)).executions.length > 0) return
      }
    }))
    expect((await jobs.get(job.id)).executions.filter((e) => e.deliveredAt !== null).map((e) => e.deviceId).sort()).toEqual(['dev-here0', 'dev-here1', 'dev-here2'])
  })

  it('a device removed and added again gets its continuous job back, as a new attempt', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    await hub.addDevice('dev-back', 'lab2')
    const job = (await jobs.create({ name: 'echo', target: 'group:lab2', continuous: true }))!
    await hub.api('DELETE', '/api/devices/dev-back')
    expect((await jobs.get(job.id)).executions[0]).toMatchObject({ state: 'canceled', attempt: 1 })
    const d = await device(hub, 'dev-back', await hub.addDevice('dev-back', 'lab2'))
    expect((await jobs.get(job.id)).executions[0]).toMatchObject({ state: 'queued', attempt: 2 })
    const [e] = (await d.pull(1)).executions
    expect(e).toMatchObject({ attempt: 2 })
  })

  it('an operator cancel after a sweeper timeout still owes the device the stop notice for the timed-out attempt', async () => {
    const clock = manualClock(Date.now())
    const hub = await hubWith({ jobSweepIntervalMs: 100, jobLeaseGraceMs: 0 }, clock)
    const jobs = hub.running.services.jobs
    const token = await hub.addDevice('dev-owed')
    let d = await device(hub, 'dev-owed', token)
    const job = (await jobs.create({ name: 'slow', target: 'device:dev-owed', timeoutMs: 300, maxAttempts: 2, backoffBaseMs: 60_000, backoffMaxMs: 60_000 }))!
    const [e] = (await d.pull(1)).executions
    await d.update([{ execId: e!.execId, attempt: 1, version: 1, status: 'in_progress' }])
    // The device drops off before the sweeper's notice can reach it.
    await d.client.endAsync()
    clock.advance(400)
    await waitFor(async () => (await jobs.get(job.id)).executions[0]!.attempt === 2, 'timed out and queued for a retry', 5000)
    await jobs.cancel(job.id)
    d = await device(hub, 'dev-owed', token)
    const notice = await waitFor(() => d.notices.find((n) => n.cancel), 'stop notice at the next birth')
    expect(notice.cancel).toEqual([{ execId: e!.execId, attempt: 1 }])
  })

  it('a continuous group job reaches devices added later; removing a device cancels its execution', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    await hub.addDevice('dev-g1', 'lab')
    const job = (await jobs.create({ name: 'echo', target: 'group:lab', continuous: true }))!
    expect(job.counts.queued).toBe(1)
    await hub.addDevice('dev-g2', 'lab')
    await hub.addDevice('dev-other')
    expect((await jobs.get(job.id)).executions.map((e) => e.deviceId)).toEqual(['dev-g1', 'dev-g2'])
    await hub.api('DELETE', '/api/devices/dev-g1')
    expect((await jobs.get(job.id)).counts).toMatchObject({ queued: 1, canceled: 1 })
    expect((await jobs.get(job.id)).status).toBe('active')
  })

  it('a schedule tick makes one job however often it fires', async () => {
    const hub = await hubWith()
    const { schedules, jobs } = hub.running.services
    await hub.addDevice('dev-c')
    const s = await schedules.add({ name: 'nightly', cron: '0 3 * * *', job: { name: 'echo', target: 'device:dev-c' } })
    expect(s.nextRunAt).toBeGreaterThan(Date.now())
    const tick = Date.UTC(2026, 10, 28, 3)
    const first = await schedules.fire(s.id, tick)
    expect(first).toBeDefined()
    expect((await schedules.fire(s.id, tick))).toBeUndefined()
    expect((await schedules.fire(s.id, tick + 86_400_000))).toBeDefined()
    expect((await jobs.list()).filter((j) => j.scheduleId === s.id)).toHaveLength(2)
    // A schedule removed and added again is a new schedule: a new id, so its ticks are its own.
    await schedules.remove('nightly')
    const again = await schedules.add({ name: 'nightly', cron: '0 3 * * *', job: { name: 'echo', target: 'device:dev-c' } })
    expect(again.id).not.toBe(s.id)
    expect((await schedules.fire(again.id, tick))).toBeDefined()
  })

  it('retention deletes finished jobs with their executions and history, and keeps active ones', async () => {
    const hub = await hubWith()
    const jobs = hub.running.services.jobs
    await hub.addDevice('dev-old')
    const finished = (await jobs.create({ name: 'echo', target: 'device:dev-old' }))!
    await jobs.cancel(finished.id)
    const active = (await jobs.create({ name: 'echo', target: 'device:dev-old' }))!
    // A cutoff before it finished keeps it; one after deletes it.
    expect(await jobs.prune(Date.now() - 60_000)).toBe(0)
    expect(await jobs.prune(Date.now() + 1)).toBe(1)
    await expect(jobs.get(finished.id)).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' })
    await expect(jobs.execution(`${finished.id}.dev-old`)).rejects.toMatchObject({ code: 'EXECUTION_NOT_FOUND' })
    expect((await jobs.get(active.id)).counts.queued).toBe(1)
    const raw = new Database(join(hub.dataDir, 'hub.db'), { readonly: true })
    try {
      // What is left is the active job's: one execution, one history row (queued).
      expect(raw.prepare('SELECT count(*) FROM executions').pluck().get()).toBe(1)
      expect(raw.prepare('SELECT count(*) FROM execution_history').pluck().get()).toBe(1)
    } finally {
      raw.close()
    }
  })

  it('counts a timeout once, when the sweep commits it: not again for a sweep rolled back while the database was locked (issue #16)', async () => {
    const { hub, clock, jobs, job } = await silentExecution('dev-lock')
    // Another process holds the write lock: the sweeper's writes wait out the busy timeout and roll back.
    const lock = new Database(join(hub.dataDir, 'hub.db'))
    cleanups.push(async () => { if (lock.inTransaction) lock.exec('ROLLBACK'); lock.close() })
    lock.exec('BEGIN IMMEDIATE')
    const failedOps = () => (hub.running.services.stats().writer as { failedOps: number }).failedOps
    const failedBefore = failedOps()
    clock.advance(400)
    await waitFor(() => failedOps() > failedBefore, 'a sweep rolled back under the lock', 60_000)
    expect((await jobs.get(job.id)).executions[0]!.state).toBe('in_progress')
    expect(jobs.stats().timedOut).toBe(0)
    lock.exec('ROLLBACK')
    clock.advance(100)
    await waitFor(async () => (await jobs.get(job.id)).executions[0]!.state === 'timed_out', 'timed out once the lock is gone', 60_000)
    expect(jobs.stats().timedOut).toBe(1)
  })

  it('forgets where the ringing of a paced rollout left off once the job ends (issue #16)', async () => {
    const hub = await hubWith({ jobSweepIntervalMs: 100 })
    const jobs = hub.running.services.jobs
    const d = await device(hub, 'dev-pace')
    const job = (await jobs.create({ name: 'echo', target: 'device:dev-pace', ratePerMinute: 60 }))!
    await waitFor(() => d.notices.length > 0, 'doorbell from the paced rollout', 8000)
    await waitFor(() => jobs.stats().pacedRinging === 1, 'the rollout rung in turn')
    await jobs.cancel(job.id)
    await waitFor(() => jobs.stats().pacedRinging === 0, 'its turn forgotten after the next sweep')
  })
})
