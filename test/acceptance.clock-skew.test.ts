import { afterEach, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import type { Agent } from '../agent/agent.js'
import { clockWithTime, type Clock } from '../common/clock.js'
import { encode, topics, type CommandResponse } from '../protocol/index.js'
import type { SampleRow } from '../hub/telemetry/store.js'
import { startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { startProxy } from './support/proxy.js'
import { CLI } from './support/procs.js'

/** The built CLI against a test hub's API. */
function rollcall(hub: TestHub, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args, '--api', hub.httpUrl], { env: { ...process.env, ROLLCALL_ADMIN_TOKEN: hub.running.adminToken }, timeout: 20_000 }, (err, stdout) => {
      if (err) reject(new Error(`rollcall ${args.join(' ')}: ${err.message}`))
      else resolve(stdout)
    })
  })
}

/**
 * Issue #13, "a clock that may be wrong": a Raspberry Pi boots without a
 * battery-backed clock, hours off until NTP. The agent's wall clock is
 * injected 2 h wrong (no system time is changed); the hub and the test run
 * on the real clock. Deadlines are judged on the hub's time, and samples are
 * stored at the right time, or flagged when they cannot be corrected.
 */

const HOUR = 3_600_000
/** The device's wall clock, `skewMs` off the real one. */
const skewed = (skewMs: number): Clock => clockWithTime(() => Date.now() + skewMs)
const probe = (value: () => number) => [{ name: 'probe', read: value }]

describe('an agent whose clock is 2 h wrong', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function hubWithDevice(id: string): Promise<{ hub: TestHub; token: string; dir: string }> {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('clock')
    cleanups.push(tmp.remove)
    return { hub, token: await hub.addDevice(id), dir: tmp.dir }
  }

  for (const skewMs of [2 * HOUR, -2 * HOUR]) {
    const sign = skewMs > 0 ? 'ahead' : 'behind'
    it(`executes commands on the hub's deadline (device clock 2 h ${sign})`, async () => {
      const id = `skew-${sign}`
      const { hub, token, dir } = await hubWithDevice(id)
      let runs = 0
      const aborted: number[] = []
      const [agent] = await startAgents(hub.mqttUrl, dir, [{ id, token }], {}, {
        clock: skewed(skewMs),
        commands: {
          'count.me': () => { runs++; return { runs } },
          // Waits for its deadline: the signal fires at expiresAt on the hub's clock.
          'wait.deadline': ({ signal }) => new Promise((resolve) => {
            const started = Date.now()
            signal.addEventListener('abort', () => { aborted.push(Date.now() - started); resolve({ aborted: true }) })
          }),
        },
      })
      cleanups.push(() => agent!.stop())
      await waitOnline(hub, [id])
      await waitFor(() => agent!.stats().clock.synced, 'the agent to learn the hub\'s time', 10_000)
      const st = agent!.stats().clock
      // Hub time - device time: the injected skew, negated, within the estimate's error.
      expect(Math.abs(st.offsetFromDeviceMs! + skewMs)).toBeLessThan(1000)

      // 1. A command with a 5 s deadline runs (ahead: the device clock says it expired 2 h ago).
      const ok = await hub.api<{ status: string; result: { runs: number } }>('POST', `/api/devices/${id}/commands`, { name: 'count.me', timeoutMs: 5000 })
      expect([ok.status, ok.body.result]).toEqual([200, { runs: 1 }])

      const replies: CommandResponse[] = []
      await hub.running.broker.subscribe(`devices/${id}/cmd/res`, (m) => { replies.push(JSON.parse(m.payload.toString()) as CommandResponse) })
      // 2. A request already 1 s past its deadline on the hub's clock is refused, not run
      // (behind: the device clock says it has 2 h left).
      await hub.running.broker.publish(topics.cmdReq(id), encode({ type: 'cmd.req', v: 1, id: 'clkexp00000001', name: 'count.me', expiresAt: Date.now() - 1000 }), { qos: 1 })
      const refused = await waitFor(() => replies.find((r) => r.id === 'clkexp00000001'), 'the EXPIRED reply', 10_000)
      expect(refused).toMatchObject({ ok: false, error: { code: 'EXPIRED' } })
      expect(refused.error!.message).toContain('hub clock')
      expect(runs).toBe(1)

      // 3. A running command is stopped at its deadline on the hub's clock, 1.5 s after it was
      // sent: not at once (ahead), not minutes later at the runner's cap (behind).
      await hub.running.broker.publish(topics.cmdReq(id), encode({ type: 'cmd.req', v: 1, id: 'clkrun00000001', name: 'wait.deadline', expiresAt: Date.now() + 1500 }), { qos: 1 })
      const timedOut = await waitFor(() => replies.find((r) => r.id === 'clkrun00000001'), 'the TIMEOUT reply', 30_000)
      expect(timedOut).toMatchObject({ ok: false, error: { code: 'TIMEOUT' } })
      expect(aborted).toHaveLength(1)
      expect(aborted[0]).toBeGreaterThan(1000)
      expect(aborted[0]).toBeLessThan(1500 + 10_000)

      // 4. A job that must start within 30 s of the hub's clock starts (ahead: the device clock says it expired).
      const job = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: `device:${id}`, payload: { hi: 1 }, expiresIn: '30s' })
      expect(job.status).toBe(201)
      const done = await waitJobDone(hub, job.body.id, 30_000)
      expect(done.executions.map((e) => e.state)).toEqual(['succeeded'])
      // Its times are on the hub's clock, whole ms like every timestamp on the wire.
      const exec = done.executions[0]!
      expect(Number.isInteger(exec.startedAt)).toBe(true)
      expect(Math.abs(exec.startedAt! - Date.now())).toBeLessThan(30_000)
      expect((await hub.api<{ deadLetters: unknown[] }>('GET', '/api/dead-letters')).body.deadLetters).toEqual([])
    }, 60_000)
  }

  it('samples taken offline before the first sync are stored at the right time, also after an agent restart in the same boot', async () => {
    const id = 'skew-samples'
    const { hub, token, dir } = await hubWithDevice(id)
    const link = await startProxy(hub.running.mqttPort)
    cleanups.push(() => link.close())
    link.cut()
    const truth: Array<{ value: number; at: number }> = []
    let value = 0
    const sample = (agent: Agent) => {
      value++
      truth.push({ value, at: Date.now() })
      expect(agent.sampleNow()).toBe(1)
    }
    // First run: offline from the start, clock 2 h ahead; two samples, then a restart.
    const deps = { clock: skewed(2 * HOUR), kernelBootId: 'boot-one', sensors: probe(() => value) }
    const [first] = await startAgents(link.url, dir, [{ id, token }], {}, deps)
    sample(first!)
    await new Promise((r) => setTimeout(r, 300))
    sample(first!)
    expect(first!.stats().clock.synced).toBe(false)
    await first!.stop()
    // Second run, same boot, clock now 2 h behind (it was stepped meanwhile): one more sample offline, then the hub.
    const [second] = await startAgents(link.url, dir, [{ id, token }], {}, { ...deps, clock: skewed(-2 * HOUR) })
    cleanups.push(() => second!.stop())
    sample(second!)
    link.restore()
    await waitOnline(hub, [id])
    await waitFor(() => second!.stats().clock.synced, 'the hub\'s time', 10_000)
    // Synced: a sample now is stamped on hub time as it is taken.
    sample(second!)
    const rows = await waitFor(async () => {
      const r = await hub.api<{ samples: SampleRow[] }>('GET', `/api/devices/${id}/telemetry?since=1h`)
      return r.body.samples.length === truth.length ? r.body.samples : undefined
    }, 'every sample stored', 20_000)
    for (const t of truth) {
      const row = rows.find((r) => r.value === t.value)!
      expect(Math.abs(row.ts - t.at), `sample ${t.value}`).toBeLessThan(1000)
      expect(row.unsynced).toBeUndefined()
    }
  }, 60_000)

  it('samples from an earlier boot that never reached the hub are flagged unsynced', async () => {
    const id = 'skew-reboot'
    const { hub, token, dir } = await hubWithDevice(id)
    const link = await startProxy(hub.running.mqttPort)
    cleanups.push(() => link.close())
    link.cut()
    let value = 1
    const deps = { clock: skewed(2 * HOUR), sensors: probe(() => value) }
    const [before] = await startAgents(link.url, dir, [{ id, token }], {}, { ...deps, kernelBootId: 'boot-before' })
    const takenAt = Date.now()
    expect(before!.sampleNow()).toBe(1)
    await before!.stop()
    // A reboot: a new kernel boot id, so the old monotonic readings mean nothing now.
    const [after] = await startAgents(hub.mqttUrl, dir, [{ id, token }], {}, { ...deps, kernelBootId: 'boot-after' })
    cleanups.push(() => after!.stop())
    await waitFor(() => after!.stats().clock.synced, 'the hub\'s time', 10_000)
    value = 2
    const afterAt = Date.now()
    expect(after!.sampleNow()).toBe(1)
    const rows = await waitFor(async () => {
      const r = await hub.api<{ samples: SampleRow[] }>('GET', `/api/devices/${id}/telemetry?since=1h&until=${Date.now() + 3 * HOUR}`)
      return r.body.samples.length === 2 ? r.body.samples : undefined
    }, 'both samples stored', 20_000)
    const old = rows.find((r) => r.value === 1)!
    // Kept as the device stamped it, 2 h ahead, and flagged.
    expect(old.unsynced).toBe(true)
    expect(Math.abs(old.ts - (takenAt + 2 * HOUR))).toBeLessThan(1000)
    const fresh = rows.find((r) => r.value === 2)!
    expect(fresh.unsynced).toBeUndefined()
    expect(Math.abs(fresh.ts - afterAt)).toBeLessThan(1000)
    // rollcall telemetry marks the flagged row and says why.
    const text = await rollcall(hub, ['telemetry', id, '--since', '1h', '--until', String(Date.now() + 3 * HOUR)])
    expect(text.split('\n').filter((l) => /\?\s+probe\s+1\s/.test(l))).toHaveLength(1)
    expect(text).toMatch(/^\? 1 sample\(s\) carry the device's own clock/m)
  }, 60_000)

  it('the hub shows the skew: the device API, device show and /metrics', async () => {
    const id = 'skew-shown'
    const { hub, token, dir } = await hubWithDevice(id)
    const [agent] = await startAgents(hub.mqttUrl, dir, [{ id, token }], {}, { clock: skewed(-2 * HOUR) })
    cleanups.push(() => agent!.stop())
    const d = await waitFor(async () => {
      const r = await hub.api<{ presence: { clockSkewMs: number | null } | null }>('GET', `/api/devices/${id}`)
      return r.body.presence?.clockSkewMs == null ? undefined : r.body.presence
    }, 'the skew reported', 10_000)
    expect(Math.abs(d.clockSkewMs! + 2 * HOUR)).toBeLessThan(1000)
    expect(await rollcall(hub, ['device', 'show', id])).toMatch(/^clock\s+2\.0 h behind the hub/m)
    const metrics = await fetch(`${hub.httpUrl}/metrics`, { headers: { authorization: `Bearer ${hub.running.adminToken}` } }).then((r) => r.text())
    expect(metrics).toMatch(/^rollcall_agents_clock_skewed 1$/m)
    const max = /^rollcall_agent_clock_skew_max_abs_seconds (\S+)$/m.exec(metrics)
    expect(Math.abs(Number(max?.[1]) - 7200)).toBeLessThan(1)
  }, 60_000)

  it('the skew shown follows the device clock when NTP steps it, without a reconnect', async () => {
    const id = 'skew-stepped'
    const { hub, token, dir } = await hubWithDevice(id)
    let skewMs = -2 * HOUR
    const [agent] = await startAgents(hub.mqttUrl, dir, [{ id, token }], {}, { clock: clockWithTime(() => Date.now() + skewMs), sensors: probe(() => 1) })
    cleanups.push(() => agent!.stop())
    const skewShown = async () => {
      const r = await hub.api<{ presence: { clockSkewMs: number | null } | null }>('GET', `/api/devices/${id}`)
      return r.body.presence?.clockSkewMs ?? undefined
    }
    const before = await waitFor(skewShown, 'the skew reported', 10_000)
    expect(Math.abs(before + 2 * HOUR)).toBeLessThan(1000)
    const connects = agent!.stats().link.connects
    // NTP reaches its server and steps the clock. The agent learns of it from the next ack (each sample sent gets one).
    skewMs = 0
    // Wrapped: a skew of exactly 0 ms (hub and agent share this process's clock) is an answer, not a falsy "not yet".
    const after = await waitFor(async () => {
      agent!.sampleNow()
      const v = await skewShown()
      return v !== undefined && Math.abs(v) < 1000 ? { v } : undefined
    }, 'the skew shown to follow the stepped clock', 20_000)
    expect(Math.abs(after.v)).toBeLessThan(1000)
    expect(agent!.stats().link.connects).toBe(connects)
  }, 60_000)
})
