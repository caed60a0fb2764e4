import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import type { Agent } from '../agent/agent.js'
import type { ExecutionDetail, JobDetail } from '../hub/jobs/jobs.js'
import { startAgents } from './support/agents.js'
import { tempDir, waitFor } from './support/hub.js'
import { killProc, startHubProc, type HubProc } from './support/procs.js'

/**
 * Acceptance 3 (issue #3): the hub process is SIGKILLed while it dispatches
 * (jobs just created, devices pulling) and again while results are being
 * uploaded. After each restart: no execution is lost or stuck, no update is
 * applied twice (each state of each attempt appears once in the history),
 * and no execution ran twice on its device.
 */
describe('the hub killed during dispatch and during result upload', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  const procs: HubProc[] = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
    for (const p of procs.splice(0)) await killProc(p)
  })

  it('loses nothing, leaves nothing stuck and applies nothing twice', async () => {
    const tmp = tempDir('jobs-hub-crash')
    cleanups.push(tmp.remove)
    const hubDir = join(tmp.dir, 'hub')
    let hub = await startHubProc(hubDir)
    procs.push(hub)
    const port = hub.mqttPort
    const restart = async (afterMs: number) => {
      await killProc(hub, 'SIGKILL')
      await new Promise((r) => setTimeout(r, afterMs))
      hub = await startHubProc(hubDir, { mqttPort: port })
      procs.push(hub)
    }

    const devices: Array<{ id: string; token: string }> = []
    for (let i = 0; i < 10; i++) {
      const id = `hc-${i}`
      const r = await hub.api<{ token: string }>('POST', '/api/devices', { id, group: 'hc' })
      devices.push({ id, token: r.body.token })
    }
    // Runs per (execution, attempt) on the devices: the "ran twice" check.
    const runs = new Map<string, number>()
    const agents: Agent[] = await startAgents(`mqtt://127.0.0.1:${port}`, join(tmp.dir, 'agents'), devices, { jobConcurrency: 4 }, {
      handlers: {
        async work(ctx) {
          const key = `${ctx.execId}#${ctx.attempt}`
          runs.set(key, (runs.get(key) ?? 0) + 1)
          const ms = (ctx.payload as { ms: number }).ms
          await new Promise((r) => setTimeout(r, ms))
          return { ms }
        },
      },
    })
    cleanups.push(() => Promise.all(agents.map((a) => a.stop())))
    await waitFor(async () => (await hub.api<{ devices: { online: number } }>('GET', '/healthz')).body.devices.online === 10, 'fleet online')

    const create = async (i: number) => {
      const r = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'work', target: 'group:hc', payload: { ms: 50 + (i % 4) * 100 } })
      expect(r.status).toBe(201)
      return r.body.id
    }
    const ids: string[] = []
    // 1. Killed during dispatch: jobs created back to back, the kill lands while devices pull them.
    for (let i = 0; i < 4; i++) ids.push(await create(i))
    await restart(300)
    // 2. Killed during result upload: runs are finishing and their updates streaming in.
    for (let i = 4; i < 8; i++) ids.push(await create(i))
    await waitFor(async () => {
      const j = await hub.api<JobDetail>('GET', `/api/jobs/${ids[7]}?limit=1`)
      return j.body.counts.succeeded > 0
    }, 'results arriving', 10_000, 10)
    await restart(300)

    // Everything finishes: nothing lost, nothing stuck.
    const finals: JobDetail[] = []
    for (const id of ids) {
      finals.push(await waitFor(async () => {
        const j = (await hub.api<JobDetail>('GET', `/api/jobs/${id}?limit=100`)).body
        return j.status === 'active' ? undefined : j
      }, `job ${id} to finish`, 60_000, 100))
    }
    const execs = finals.flatMap((j) => j.executions)
    expect(execs).toHaveLength(80)
    expect(execs.filter((e) => e.state !== 'succeeded')).toEqual([])
    // No update applied twice: each (attempt, state) once per execution, succeeded exactly once.
    for (const e of execs) {
      const { history } = (await hub.api<ExecutionDetail>('GET', `/api/executions/${e.execId}`)).body
      const steps = history.map((h) => `${h.attempt}:${h.state}`)
      expect(new Set(steps).size, `${e.execId}: ${steps.join(' ')}`).toBe(steps.length)
      expect(steps.filter((s) => s.endsWith(':succeeded'))).toHaveLength(1)
      expect(history.map((h) => h.version)).toEqual(history.map((_, i) => i + 1))
    }
    // No execution ran twice on its device: re-sent batches after each restart were recognised.
    const twice = [...runs].filter(([, n]) => n > 1)
    expect(twice).toEqual([])
    expect(runs.size).toBe(80)
    // The faults were real: the devices saw the hub go away twice.
    const h = await hub.api<{ history: Array<{ status: string; reason: string }> }>('GET', '/api/devices/hc-0/presence?limit=100')
    expect(h.body.history.filter((e) => e.status === 'offline' && e.reason === 'hub-restart').length).toBeGreaterThanOrEqual(2)
  }, 120_000)
})
