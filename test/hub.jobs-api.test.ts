import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestHub, type TestHub } from './support/hub.js'
import type { JobView } from '../hub/jobs/store.js'
import type { ExecutionDetail, JobDetail } from '../hub/jobs/jobs.js'
import type { ScheduleView } from '../hub/jobs/schedules.js'

/** Jobs and schedules over HTTP (issue #3): fields as people write them, and errors that say what to fix. */
type Err = { error: { code: string; message: string } }

describe('jobs HTTP API', () => {
  let hub: TestHub
  beforeAll(async () => {
    hub = await startTestHub()
    for (const id of ['jobs-a1', 'jobs-a2', 'jobs-a3']) await hub.addDevice(id, 'jobs-lab')
    await hub.addDevice('jobs-solo')
  })
  afterAll(async () => { await hub.stop() })

  const post = <T>(path: string, body?: unknown) => hub.api<T>('POST', path, body)
  const get = <T>(path: string) => hub.api<T>('GET', path)

  it('creates a job for a group with one queued execution per device, and maps the written fields', async () => {
    const before = Date.now()
    const r = await post<JobView>('/api/jobs', {
      name: 'firmware.update', target: 'group:jobs-lab', payload: { url: 'https://example.com/fw.bin' }, priority: 5,
      timeout: '30s', expiresIn: '1h', maxAttempts: 3, backoffBase: '10s', backoffMax: '5m', rate: '5/s', abortAfter: 10, abortAt: '20%',
    })
    expect(r.status).toBe(201)
    expect(r.body).toMatchObject({
      name: 'firmware.update', target: 'group:jobs-lab', payload: { url: 'https://example.com/fw.bin' }, priority: 5, timeoutMs: 30_000,
      maxAttempts: 3, backoffBaseMs: 10_000, backoffMaxMs: 300_000, ratePerMinute: 300, abort: { afterFinished: 10, atPercent: 20 },
      continuous: false, status: 'active', scheduleId: null,
    })
    expect(r.body.id).toMatch(/^j[0-9a-v]{12}$/)
    expect(r.body.counts.queued).toBe(3)
    expect(r.body.expiresAt).toBeGreaterThanOrEqual(before + 3_600_000)
    expect(r.body.expiresAt).toBeLessThan(Date.now() + 3_600_000 + 1000)
  })

  it('accepts timeoutMs, an ISO expiresAt, a plain-number rate (per minute), a numeric abortAt, and a continuous all job', async () => {
    const at = '2099-01-01T00:00:00Z'
    const a = await post<JobView>('/api/jobs', { name: 'echo', target: 'device:jobs-a1,jobs-solo', timeoutMs: 1500, expiresAt: at, rate: 60, abortAfter: 2, abortAt: 50 })
    expect(a.status).toBe(201)
    expect(a.body).toMatchObject({ timeoutMs: 1500, expiresAt: Date.parse(at), ratePerMinute: 60, abort: { afterFinished: 2, atPercent: 50 }, counts: { queued: 2 } })
    const b = await post<JobView>('/api/jobs', { name: 'echo', target: 'all', continuous: true, expiresAt: Date.parse(at) })
    expect(b.body).toMatchObject({ continuous: true, expiresAt: Date.parse(at), counts: { queued: 4 } })
    // A continuous group job may start with no device at all.
    const c = await post<JobView>('/api/jobs', { name: 'echo', target: 'group:nobody-yet', continuous: true })
    expect([c.status, c.body.counts.queued]).toEqual([201, 0])
  })

  it.each<[string, Record<string, unknown>, number, string, RegExp]>([
    ['a bad target', { target: 'everyone' }, 400, 'BAD_REQUEST', /target "everyone" is not understood; write device:ID/],
    ['a bad device id in the target', { target: 'device:Bad Id' }, 400, 'INVALID_DEVICE_ID', /"Bad Id" is not a device id/],
    ['an unknown device', { target: 'device:jobs-a1,ghost-1' }, 404, 'DEVICE_NOT_FOUND', /no device "ghost-1".*rollcall device add/],
    ['an empty group', { target: 'group:empty' }, 400, 'TARGET_EMPTY', /matches no registered device.*continuous/],
    ['a bad task name', { name: 'Do It' }, 400, 'BAD_REQUEST', /task name.*e\.g\. "echo"/],
    ['a bad rate', { rate: '5/fortnight' }, 400, 'BAD_REQUEST', /^rate="5\/fortnight" is not a rate: write 60\/min, 5\/s, 100\/h/],
    ['a zero rate', { rate: 0 }, 400, 'BAD_REQUEST', /^rate=0 is not a rate/],
    ['a rate that is neither text nor a number', { rate: true }, 400, 'BAD_REQUEST', /^rate=true is not a rate/],
    ['a bad abortAt', { abortAfter: 10, abortAt: '120%' }, 400, 'BAD_REQUEST', /^abortAt="120%" is not a failure percentage: write "20%" or 20/],
    ['abortAt without abortAfter', { abortAt: '20%' }, 400, 'BAD_REQUEST', /abortAfter and abortAt go together.*"abortAfter": 10, "abortAt": "20%"/],
    ['a zero abortAfter', { abortAfter: 0, abortAt: 20 }, 400, 'BAD_REQUEST', /abortAfter must be an integer from 1/],
    ['a timeout without a unit', { timeout: '30' }, 400, 'BAD_REQUEST', /^timeout="30" is not a duration: .*e\.g\. "30s"/],
    ['both timeout and timeoutMs', { timeout: '30s', timeoutMs: 30_000 }, 400, 'BAD_REQUEST', /timeout \("30s"\) or timeoutMs \(30000\), not both/],
    ['a bad backoffBase', { backoffBase: 'soon' }, 400, 'BAD_REQUEST', /^backoffBase="soon" is not a duration/],
    ['a bad expiresIn', { expiresIn: 'later' }, 400, 'BAD_REQUEST', /^expiresIn="later" is not a duration.*"1h"/],
    ['a bad expiresAt', { expiresAt: 'tomorrow' }, 400, 'BAD_REQUEST', /^expiresAt="tomorrow" is not a time: use an ISO date/],
    ['an expiresAt that is neither text nor a number', { expiresAt: { in: '1h' } }, 400, 'BAD_REQUEST', /^expiresAt=\{"in":"1h"\} is not a time/],
    ['a small-number expiresAt', { expiresAt: 3600 }, 400, 'BAD_REQUEST', /a bare number must be epoch milliseconds/],
    ['a past expiresAt', { expiresAt: '2020-01-01T00:00:00Z' }, 400, 'BAD_REQUEST', /expiresAt must be a time in the future/],
    ['both expiresAt and expiresIn', { expiresAt: '2099-01-01T00:00:00Z', expiresIn: '1h' }, 400, 'BAD_REQUEST', /expiresAt.*or expiresIn.*not both/],
    ['an out-of-range priority', { priority: 5000 }, 400, 'BAD_REQUEST', /priority must be an integer from -1000 to 1000/],
    ['a fractional maxAttempts', { maxAttempts: 1.5 }, 400, 'BAD_REQUEST', /body\.maxAttempts/],
    ['a continuous device job', { continuous: true }, 400, 'BAD_REQUEST', /only group:NAME and all targets can be continuous/],
    ['an unknown field', { retries: 3 }, 400, 'BAD_REQUEST', /unknown field "retries"/],
    ['a payload over 32 KiB', { payload: { blob: 'x'.repeat(40_000) } }, 413, 'PAYLOAD_TOO_LARGE', /job payload is \d+ bytes of JSON; at most 32768/],
  ])('refuses %s', async (_what, fields, status, code, message) => {
    const r = await post<Err>('/api/jobs', { name: 'echo', target: 'device:jobs-a1', ...fields })
    expect([r.status, r.body.error.code]).toEqual([status, code])
    expect(r.body.error.message).toMatch(message)
  })

  it('refuses a body that is missing or not an object', async () => {
    const missing = await post<Err>('/api/jobs', { name: 'echo' })
    expect([missing.status, missing.body.error.code]).toEqual([400, 'BAD_REQUEST'])
    expect(missing.body.error.message).toMatch(/target/)
    const text = await post<Err>('/api/jobs', 'echo')
    expect(text.body.error.message).toMatch(/JSON object/)
  })

  it('lists jobs newest first, filters by status, pages with before, and says what a bad filter should be', async () => {
    const mine = await post<JobView>('/api/jobs', { name: 'list.me', target: 'device:jobs-solo' })
    const all = await get<{ jobs: JobView[] }>('/api/jobs')
    expect(all.status).toBe(200)
    expect(all.body.jobs[0]!.id).toBe(mine.body.id)
    const created = all.body.jobs.map((j) => j.createdAt)
    expect(created).toEqual([...created].sort((a, b) => b - a))
    const one = await get<{ jobs: JobView[] }>('/api/jobs?limit=1')
    expect(one.body.jobs).toHaveLength(1)
    // Paging by the last job seen: every job exactly once, even those made in the same millisecond.
    const paged: string[] = []
    let cursor: string | undefined
    for (;;) {
      const page = await get<{ jobs: JobView[] }>(`/api/jobs?limit=2${cursor ? `&before=${cursor}` : ''}`)
      paged.push(...page.body.jobs.map((j) => j.id))
      if (page.body.jobs.length < 2) break
      cursor = page.body.jobs[1]!.id
    }
    expect(paged).toEqual(all.body.jobs.map((j) => j.id))
    expect((await get<{ jobs: JobView[] }>('/api/jobs?status=completed')).body.jobs).toEqual([])
    const bad = await get<Err>('/api/jobs?status=done')
    expect([bad.status, bad.body.error.message]).toEqual([400, 'status="done" is not one of active, completed, canceled, aborted'])
    const unknownCursor = await get<Err>('/api/jobs?before=jnothere00000')
    expect([unknownCursor.status, unknownCursor.body.error.code]).toEqual([404, 'JOB_NOT_FOUND'])
    expect((await get<Err>('/api/jobs?limit=0')).body.error.message).toMatch(/querystring\.limit/)
  })

  it('shows a job with per-state counts and its executions, filtered by state and cut at the limit', async () => {
    const job = (await post<JobView>('/api/jobs', { name: 'show.me', target: 'group:jobs-lab' })).body
    const r = await get<JobDetail & { truncated: boolean }>(`/api/jobs/${job.id}`)
    expect(r.status).toBe(200)
    expect(r.body.counts).toEqual({ queued: 3, in_progress: 0, succeeded: 0, failed: 0, timed_out: 0, rejected: 0, canceled: 0, expired: 0 })
    expect(r.body.executions.map((e) => e.deviceId).sort()).toEqual(['jobs-a1', 'jobs-a2', 'jobs-a3'])
    expect(r.body.executions[0]).toMatchObject({ execId: `${job.id}.${r.body.executions[0]!.deviceId}`, jobId: job.id, state: 'queued', attempt: 1, error: null })
    expect(r.body.truncated).toBe(false)
    const cut = await get<JobDetail & { truncated: boolean }>(`/api/jobs/${job.id}?limit=2`)
    expect([cut.body.executions.length, cut.body.truncated]).toEqual([2, true])
    const rest = await get<JobDetail & { truncated: boolean }>(`/api/jobs/${job.id}?limit=2&after=${cut.body.executions[1]!.deviceId}`)
    expect([...cut.body.executions, ...rest.body.executions].map((e) => e.deviceId)).toEqual(['jobs-a1', 'jobs-a2', 'jobs-a3'])
    expect(rest.body.truncated).toBe(false)
    expect((await get<JobDetail>(`/api/jobs/${job.id}?state=succeeded`)).body.executions).toEqual([])
    const badState = await get<Err>(`/api/jobs/${job.id}?state=done`)
    expect(badState.body.error.message).toMatch(/^state="done" is not one of queued, in_progress, succeeded/)
    const missing = await get<Err>('/api/jobs/jnothere00000')
    expect([missing.status, missing.body.error.code]).toEqual([404, 'JOB_NOT_FOUND'])
  })

  it('cancels a job with or without a reason; a second cancel is 409 JOB_FINISHED; the execution history shows both states', async () => {
    const job = (await post<JobView>('/api/jobs', { name: 'cancel.me', target: 'device:jobs-a2,jobs-a3' })).body
    const c = await post<JobView>(`/api/jobs/${job.id}/cancel`, { reason: 'wrong firmware' })
    expect(c.status).toBe(200)
    expect(c.body).toMatchObject({ status: 'canceled', statusReason: 'wrong firmware', counts: { queued: 0, canceled: 2 } })
    const again = await post<Err>(`/api/jobs/${job.id}/cancel`)
    expect([again.status, again.body.error.code]).toEqual([409, 'JOB_FINISHED'])
    expect(again.body.error.message).toMatch(/already canceled/)

    const ex = await get<ExecutionDetail>(`/api/executions/${job.id}.jobs-a2`)
    expect(ex.status).toBe(200)
    expect(ex.body).toMatchObject({ execId: `${job.id}.jobs-a2`, deviceId: 'jobs-a2', state: 'canceled' })
    expect(ex.body.history.map((h) => [h.state, h.source, h.detail])).toEqual([['queued', 'hub', null], ['canceled', 'api', 'wrong firmware']])

    const other = (await post<JobView>('/api/jobs', { name: 'cancel.me', target: 'device:jobs-a1' })).body
    const plain = await post<JobView>(`/api/jobs/${other.id}/cancel`)
    expect([plain.status, plain.body.statusReason]).toEqual([200, 'canceled by an operator'])
    expect((await post<Err>(`/api/jobs/${other.id}/cancel`, { because: 'x' })).body.error.message).toMatch(/unknown field "because"/)
    expect((await post<Err>('/api/jobs/jnothere00000/cancel')).body.error.code).toBe('JOB_NOT_FOUND')
  })

  it('an unknown or malformed execution id is 404 EXECUTION_NOT_FOUND with the id format', async () => {
    for (const id of ['jnothere00000.jobs-a1', 'not-an-exec-id']) {
      const r = await get<Err>(`/api/executions/${id}`)
      expect([r.status, r.body.error.code]).toEqual([404, 'EXECUTION_NOT_FOUND'])
      expect(r.body.error.message).toMatch(/JOBID\.DEVICEID/)
    }
  })

  describe('schedules', () => {
    const job = { name: 'nightly.report', target: 'group:jobs-lab', payload: { full: true }, timeout: '5m', expiresIn: '30m', rate: '10/min' }

    it('adds, lists, shows by name or id, and removes a schedule; the job is stored with parsed fields', async () => {
      const r = await post<ScheduleView>('/api/schedules', { name: 'nightly', cron: '0 3 * * *', timezone: 'Europe/Berlin', job })
      expect(r.status).toBe(201)
      expect(r.body).toMatchObject({
        name: 'nightly', cron: '0 3 * * *', timezone: 'Europe/Berlin',
        job: { name: 'nightly.report', target: 'group:jobs-lab', payload: { full: true }, timeoutMs: 300_000, expiresInMs: 1_800_000, ratePerMinute: 10 },
      })
      expect(r.body.nextRunAt).toBeGreaterThan(Date.now())
      const list = await get<{ schedules: ScheduleView[] }>('/api/schedules')
      expect(list.body.schedules.map((x) => x.name)).toContain('nightly')
      expect((await get<ScheduleView>('/api/schedules/nightly')).body.id).toBe(r.body.id)
      expect((await get<ScheduleView>(`/api/schedules/${r.body.id}`)).body.name).toBe('nightly')

      const dup = await post<Err>('/api/schedules', { name: 'nightly', cron: '0 4 * * *', job })
      expect([dup.status, dup.body.error.code]).toEqual([409, 'SCHEDULE_EXISTS'])

      expect((await hub.api('DELETE', '/api/schedules/nightly')).status).toBe(204)
      const gone = await get<Err>('/api/schedules/nightly')
      expect([gone.status, gone.body.error.code]).toEqual([404, 'SCHEDULE_NOT_FOUND'])
      expect((await hub.api<Err>('DELETE', '/api/schedules/nightly')).body.error.code).toBe('SCHEDULE_NOT_FOUND')
    })

    it.each<[string, Record<string, unknown>, number, string, RegExp]>([
      ['a bad cron expression', { cron: 'every night' }, 400, 'BAD_REQUEST', /"every night" is not a cron expression.*"\*\/5 \* \* \* \*"/],
      ['an unknown timezone', { timezone: 'Mars/Olympus' }, 400, 'BAD_REQUEST', /unknown timezone "Mars\/Olympus".*"Europe\/Berlin"/],
      ['a bad schedule name', { name: 'N' }, 400, 'INVALID_NAME', /schedule name/],
      ['a bad job rate', { job: { ...job, rate: 'fast' } }, 400, 'BAD_REQUEST', /^job\.rate="fast" is not a rate/],
      ['a bad job expiresIn', { job: { ...job, expiresIn: 'soon' } }, 400, 'BAD_REQUEST', /^job\.expiresIn="soon" is not a duration/],
      ['an absolute expiresAt in the job', { job: { ...job, expiresAt: '2099-01-01T00:00:00Z' } }, 400, 'BAD_REQUEST', /unknown field "expiresAt"/],
      ['a job for an unknown device', { job: { ...job, target: 'device:ghost-2' } }, 404, 'DEVICE_NOT_FOUND', /ghost-2/],
      ['a bad job target', { job: { ...job, target: 'nobody' } }, 400, 'BAD_REQUEST', /target "nobody" is not understood/],
    ])('refuses %s', async (_what, fields, status, code, message) => {
      const r = await post<Err>('/api/schedules', { name: 'refused', cron: '*/5 * * * *', job, ...fields })
      expect([r.status, r.body.error.code]).toEqual([status, code])
      expect(r.body.error.message).toMatch(message)
    })
  })

  it("lists a device's executions of any job, newest first, with the job's name; an unknown device is 404", async () => {
    const first = await post<JobView>('/api/jobs', { name: 'echo', target: 'device:jobs-solo' })
    const second = await post<JobView>('/api/jobs', { name: 'sensors.sample', target: 'device:jobs-solo' })
    const r = await get<{ deviceId: string; executions: Array<{ execId: string; jobId: string; jobName: string; state: string }> }>('/api/devices/jobs-solo/executions?limit=2')
    expect(r.status).toBe(200)
    expect(r.body.executions.map((x) => [x.jobId, x.jobName, x.state])).toEqual([[second.body.id, 'sensors.sample', 'queued'], [first.body.id, 'echo', 'queued']])
    expect(r.body.executions[0]!.execId).toBe(`${second.body.id}.jobs-solo`)
    const missing = await get<Err>('/api/devices/nobody-here/executions')
    expect(missing.status).toBe(404)
    expect(missing.body.error.code).toBe('DEVICE_NOT_FOUND')
  })

  it('needs the admin token', async () => {
    for (const [method, path] of [['GET', '/api/jobs'], ['POST', '/api/jobs'], ['GET', '/api/executions/x.y'], ['GET', '/api/schedules'], ['DELETE', '/api/schedules/x']] as const) {
      const res = await fetch(`http://127.0.0.1:${hub.running.httpPort}${path}`, { method })
      expect(res.status, `${method} ${path}`).toBe(401)
      expect(((await res.json()) as Err).error.code).toBe('UNAUTHORIZED')
    }
  })
})
