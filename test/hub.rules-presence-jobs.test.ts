import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../common/clock.js'
import type { Agent } from '../agent/agent.js'
import { JobError } from '../agent/job-handlers.js'
import type { RuleSpec } from '../hub/rules/spec.js'
import { registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'

/**
 * Rules on presence changes and on jobs that failed for good, on a real hub
 * with real agents: a device that goes away and comes back, one that stays
 * away longer than the rule allows, the hub's own restart (which must fire
 * nothing), and executions that fail or time out.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

const note = (name: string, when: RuleSpec['when'], extra: Partial<RuleSpec> = {}): RuleSpec => ({
  name, for: 'all', when, then: [{ event: { level: 'warn', message: name } }], ...extra,
})

async function device(h: TestHub, prefix: string, dir: string, handlers: Parameters<typeof startAgents>[4] = {}): Promise<{ id: string; token: string; agent: Agent }> {
  const [dev] = await registerDevices(h, prefix, 1)
  const [agent] = await startAgents(h.mqttUrl, dir, [dev!], {}, handlers)
  cleanups.push(() => agent!.stop())
  await waitOnline(h, [dev!.id])
  return { ...dev!, agent: agent! }
}

const offline = (h: TestHub, id: string) => waitFor(() => !h.running.services.presence.isReachable(id), `${id} offline`)

/** Until what is queued now is committed and its after-commit steps have run. */
const idleWrites = (h: TestHub) => h.running.services.rules.settled()

describe('rules on presence', () => {
  it('fire once when a device goes offline and once when it comes back, with the change as the trigger', async () => {
    const h = await startTestHub()
    cleanups.push(() => h.stop())
    const dir = tempDir('rules-presence')
    cleanups.push(dir.remove)
    const rules = h.running.services.rules
    const d = await device(h, 'edge', dir.dir)
    await rules.add(note('went.offline', { presence: { status: 'offline' } }))
    await rules.add(note('came.back', { presence: { status: 'online' } }))

    await d.agent.stop()
    await offline(h, d.id)
    await waitFor(() => rules.get('went.offline').counters.fired === 1, 'went.offline fired')
    const [gone] = rules.get('went.offline').recentFirings
    expect(gone).toMatchObject({ deviceId: d.id, trigger: { kind: 'presence', status: 'offline' } })
    expect(rules.get('came.back').counters.fired).toBe(0)

    const [back] = await startAgents(h.mqttUrl, dir.dir, [d], {})
    cleanups.push(() => back!.stop())
    await waitOnline(h, [d.id])
    await waitFor(() => rules.get('came.back').counters.fired === 1, 'came.back fired')
    expect(rules.get('came.back').recentFirings[0]).toMatchObject({ deviceId: d.id, trigger: { kind: 'presence', status: 'online' } })
    await waitFor(() => rules.stats().actions.done === 2, 'both events published')
    // Once per transition: nothing more fired while the device stayed online.
    expect(rules.get('went.offline').counters.fired).toBe(1)
    expect(rules.get('came.back').devices.map((x) => [x.deviceId, x.state.phase])).toEqual([[d.id, 'active']])

    // The dry run of `rollcall rule test` on the presence history says the same.
    const dry = await h.api<{ source: unknown; transitions: Array<{ kind: string; verdict?: string; trigger: { status: string } }> }>('POST', '/api/rules/test', {
      rule: note('went.offline.try', { presence: { status: 'offline' } }), deviceId: d.id,
    })
    expect(dry.status).toBe(200)
    expect(dry.body.source).toEqual({ from: 'presence' })
    expect(dry.body.transitions.map((t) => `${t.kind} ${t.trigger.status}${t.verdict ? ` ${t.verdict}` : ''}`)).toEqual(['fire offline acts', 'clear online'])
  })

  it('"offline for longer than X": a device back in time fires nothing; one that stays away fires once', async () => {
    // The hub's clock is moved by hand: the rule's time passes only when the test says so, however slow the machine.
    const clock = manualClock(Date.now())
    const h = await startTestHub({}, undefined, undefined, clock)
    cleanups.push(() => h.stop())
    const dir = tempDir('rules-presence-for')
    cleanups.push(dir.remove)
    const rules = h.running.services.rules
    const brief = await device(h, 'brief', dir.dir)
    const gone = await device(h, 'gone', dir.dir)
    const retired = await device(h, 'retired', dir.dir)
    await rules.add(note('offline.long', { presence: { status: 'offline', forMs: 1500 } }))

    const wentAt = clock.now()
    await brief.agent.stop()
    await gone.agent.stop()
    await retired.agent.stop()
    await offline(h, brief.id)
    await offline(h, gone.id)
    await offline(h, retired.id)
    // Removed while its time runs: a device the fleet no longer has fires nothing.
    expect((await h.api('DELETE', `/api/devices/${retired.id}`)).status).toBe(204)
    const [again] = await startAgents(h.mqttUrl, dir.dir, [brief], {})
    cleanups.push(() => again!.stop())
    await waitOnline(h, [brief.id])

    clock.advance(1000)
    await idleWrites(h)
    expect(rules.get('offline.long').counters.fired).toBe(0)
    clock.advance(1000)
    await waitFor(() => rules.get('offline.long').counters.fired === 1, 'offline.long fired for the device that stayed away')
    const [f] = rules.get('offline.long').recentFirings
    expect(f).toMatchObject({ deviceId: gone.id, trigger: { kind: 'presence', status: 'offline', since: wentAt, ts: wentAt + 2000 } })
    // Many more ticks: still once, and the brief and the removed device never fired.
    clock.advance(10_000)
    await idleWrites(h)
    expect(rules.get('offline.long').counters.fired).toBe(1)
    expect(rules.get('offline.long').recentFirings.map((x) => x.deviceId)).toEqual([gone.id])
  })

  it('a rule enabled again counts "offline for X" from when it was enabled, not from when the device went', async () => {
    const clock = manualClock(Date.now())
    const h = await startTestHub({}, undefined, undefined, clock)
    cleanups.push(() => h.stop())
    const dir = tempDir('rules-presence-enable')
    cleanups.push(dir.remove)
    const rules = h.running.services.rules
    const d = await device(h, 'away', dir.dir)
    await rules.add(note('offline.long', { presence: { status: 'offline', forMs: 1500 } }))
    await d.agent.stop()
    await offline(h, d.id)
    clock.advance(500)
    await rules.setEnabled('offline.long', false)
    // An hour disabled: nothing fires, and the state is kept.
    clock.advance(3_600_000)
    await idleWrites(h)
    expect(rules.get('offline.long').counters.fired).toBe(0)
    const enabledAt = clock.now()
    await rules.setEnabled('offline.long', true)
    await idleWrites(h)
    clock.advance(1000)
    await idleWrites(h)
    expect(rules.get('offline.long').counters.fired).toBe(0)
    clock.advance(1000)
    await waitFor(() => rules.get('offline.long').counters.fired === 1, 'offline.long fired 1.5 s after it was enabled')
    expect(rules.get('offline.long').recentFirings[0]!.trigger).toMatchObject({ kind: 'presence', since: enabledAt })
  })

  it('a hub restart fires nothing by itself; a device that does not come back after it still counts as offline', async () => {
    const dataDir = tempDir('rules-presence-hub')
    cleanups.push(dataDir.remove)
    const dir = tempDir('rules-presence-restart')
    cleanups.push(dir.remove)
    const first = await startTestHub({}, dataDir.dir)
    let firstStopped = false
    cleanups.push(() => (firstStopped ? undefined : first.stop()))
    const stays = await device(first, 'stays', dir.dir)
    const leaves = await device(first, 'leaves', dir.dir)
    await first.running.services.rules.add(note('came.back', { presence: { status: 'online' } }))
    await first.running.services.rules.add(note('went.offline', { presence: { status: 'offline' } }))
    await first.running.services.rules.add(note('offline.long', { presence: { status: 'offline', forMs: 1500 } }))
    const port = first.running.mqttPort

    await leaves.agent.stop()
    await offline(first, leaves.id)
    await first.running.services.rules.settled()
    await first.stop()
    firstStopped = true
    const restartedAt = Date.now()
    const h = await startTestHub({ mqttPort: port }, dataDir.dir)
    cleanups.push(() => h.stop())
    // The agent that stayed reconnects by itself to the hub on its old port.
    await waitOnline(h, [stays.id])
    const rules = h.running.services.rules
    await waitFor(() => rules.get('offline.long').counters.fired === 1, 'offline.long fired for the device that left')
    expect(rules.get('offline.long').recentFirings[0]).toMatchObject({ deviceId: leaves.id })
    // `leaves` went offline under the first hub (it fired went.offline there, once); the hub's stop, and `stays`
    // coming back after it, fired nothing.
    await new Promise((r) => setTimeout(r, 2000))
    expect(rules.get('came.back').counters.fired).toBe(0)
    expect(rules.get('went.offline').counters.fired).toBe(1)
    expect(rules.get('went.offline').recentFirings.map((f) => f.deviceId)).toEqual([leaves.id])
    expect(rules.get('offline.long').counters.fired).toBe(1)
    // `leaves` was offline before the restart: its forMs counted from then, not from the restart.
    const t = rules.get('offline.long').recentFirings[0]!.trigger as { since: number }
    expect(t.since).toBeLessThan(restartedAt)
  })
})

describe('rules on jobs', () => {
  it('fire once per execution that failed for good, not per attempt; never on a job their own firing made', async () => {
    const h = await startTestHub({ jobBackoffBaseMs: 10, jobBackoffMaxMs: 20 })
    cleanups.push(() => h.stop())
    const dir = tempDir('rules-jobs')
    cleanups.push(dir.remove)
    const runs = { flaky: 0, diag: 0 }
    const d = await device(h, 'worker', dir.dir, {
      handlers: {
        'flaky.task': () => {
          runs.flaky++
          throw new JobError('DISK_FULL', 'no space left on /data')
        },
        'ok.task': () => ({ ok: true }),
        // The rule's own follow-up fails too: it must not make the rule fire again.
        'diag.collect': () => {
          runs.diag++
          throw new JobError('DIAG_FAILED', 'diagnostics failed')
        },
      },
    })
    const rules = h.running.services.rules
    await rules.add(note('job.failed', { job: { outcome: 'failed' } }, {
      then: [{ event: { level: 'error', message: 'a job failed' } }, { job: { name: 'diag.collect' } }],
    }))
    await rules.add(note('flaky.timed-out', { job: { name: 'flaky.task', outcome: 'timed_out' } }))
    // Another job rule: it hears flaky.task's failure, but not the diag job's, made by a job rule (no loop between two).
    await rules.add(note('any.failure', { job: {} }))

    const failing = (await h.running.services.jobs.create({ name: 'flaky.task', target: `device:${d.id}`, maxAttempts: 3 }))!
    const fine = (await h.running.services.jobs.create({ name: 'ok.task', target: `device:${d.id}` }))!
    await waitJobDone(h, failing.id)
    await waitJobDone(h, fine.id)
    await waitFor(() => runs.diag >= 1 && rules.stats().actions.done === 3, 'the rules\' events and the diag job')
    const diag = (await h.running.services.jobs.list({ limit: 10 })).find((j) => j.name === 'diag.collect')!
    await waitJobDone(h, diag.id)
    await new Promise((r) => setTimeout(r, 500))

    expect(runs.flaky).toBe(3)
    const r = rules.get('job.failed')
    expect(r.counters.fired).toBe(1)
    expect(r.recentFirings[0]).toMatchObject({ deviceId: d.id, trigger: { kind: 'job', jobId: failing.id, name: 'flaky.task', outcome: 'failed', attempt: 3, error: 'DISK_FULL: no space left on /data' } })
    expect(diag.cause).toEqual({ rule: 'job.failed', firing: r.recentFirings[0]!.id })
    // Its three attempts (the default) failed, and none of them fired the rule that made it.
    expect(runs.diag).toBe(3)
    expect(rules.get('flaky.timed-out').counters.fired).toBe(0)
    expect(rules.get('any.failure').recentFirings.map((f) => (f.trigger as { jobId: string }).jobId)).toEqual([failing.id])

    // The dry run of the same rule on the device's failed executions: the one failure, not its own diag job's.
    const dry = await h.api<{ source: unknown; transitions: Array<{ kind: string; verdict: string; trigger: { jobId: string } }> }>('POST', '/api/rules/test', {
      rule: note('job.failed', { job: { outcome: 'failed' } }), deviceId: d.id,
    })
    expect(dry.status).toBe(200)
    expect(dry.body.source).toEqual({ from: 'jobs', outcome: 'failed' })
    expect(dry.body.transitions.map((t) => [t.kind, t.trigger.jobId, t.verdict])).toEqual([['fire', failing.id, 'acts']])
  })

  it('fire on an execution that timed out', async () => {
    const h = await startTestHub({ jobSweepIntervalMs: 100, jobLeaseGraceMs: 0 })
    cleanups.push(() => h.stop())
    const dir = tempDir('rules-jobs-timeout')
    cleanups.push(dir.remove)
    let release!: () => void
    const hang = new Promise<void>((resolve) => { release = resolve })
    cleanups.push(() => release())
    const d = await device(h, 'slow', dir.dir, { handlers: { 'slow.task': () => hang } })
    const rules = h.running.services.rules
    await rules.add(note('job.timed-out', { job: { outcome: 'timed_out' } }))
    const job = (await h.running.services.jobs.create({ name: 'slow.task', target: `device:${d.id}`, timeoutMs: 300, maxAttempts: 1 }))!
    await waitFor(() => rules.get('job.timed-out').counters.fired === 1, 'job.timed-out fired')
    expect(rules.get('job.timed-out').recentFirings[0]).toMatchObject({ deviceId: d.id, trigger: { kind: 'job', jobId: job.id, outcome: 'timed_out', attempt: 1 } })
  })
})
