import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { killProc, startAgentProc, type Proc } from './support/procs.js'
import { waitJobDone } from './support/agents.js'

/**
 * Acceptance 2 (issue #3): an agent process SIGKILLed in the middle of a
 * job. After the restart the execution is reported (failed, INTERRUPTED) and
 * retried per policy; no execution is lost, and every successful
 * execution's effect is recorded once in the handler's effect ledger, keyed
 * by execution id.
 */
const HANDLERS = fileURLToPath(new URL('./fixtures/effect-handlers.mjs', import.meta.url))

describe('an agent killed in the middle of a job', () => {
  const procs: Proc[] = []
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await killProc(p)
    while (cleanups.length) await cleanups.pop()!()
  })

  it('reports the run as interrupted, retries it, and every effect happens once', async () => {
    const hub = await startTestHub({ flushDelayMs: 5, jobSweepIntervalMs: 100 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('jobs-agent-crash')
    cleanups.push(tmp.remove)
    const agentDir = join(tmp.dir, 'agent')
    mkdirSync(agentDir, { recursive: true })
    const effects = join(tmp.dir, 'effects.db')
    const token = await hub.addDevice('crash-1')
    const config = {
      builtinSensors: false, sampleIntervalMs: 0, keepaliveSec: 5, reconnectBaseMs: 50, reconnectMaxMs: 300, ackTimeoutMs: 1000,
      jobConcurrency: 2, handlersModule: HANDLERS,
    }
    const jobs = hub.running.services.jobs
    const start = () => {
      const p = startAgentProc({ mqttPort: hub.running.mqttPort, id: 'crash-1', token, dataDir: agentDir, config })
      procs.push(p)
      return p
    }

    let agent = start()
    const created = await Promise.all(Array.from({ length: 6 }, async (_, i) => (await jobs.create({
      name: 'effect.write', target: 'device:crash-1', payload: { ms: 600 + i * 200, effects }, maxAttempts: 3, backoffBaseMs: 100, backoffMaxMs: 200,
    }))!))
    // Kill it while two runs are in the middle of their work.
    const states = async () => Promise.all(created.map(async (j) => (await jobs.get(j.id)).executions[0]!.state))
    await waitFor(async () => (await states()).filter((s) => s === 'in_progress').length === 2, 'two runs in progress', 15_000)
    await new Promise((r) => setTimeout(r, 200))
    await killProc(agent, 'SIGKILL')
    // The ground truth of what the kill interrupted: runs that started and recorded no effect.
    const probe = new Database(effects, { readonly: true })
    const runningAtKill = (probe.prepare('SELECT DISTINCT exec_id FROM runs WHERE exec_id NOT IN (SELECT exec_id FROM effects)').pluck().all() as string[])
    probe.close()
    expect(runningAtKill.length).toBeGreaterThan(0)

    agent = start()
    for (const j of created) await waitJobDone(hub, j.id, 30_000)

    // Nothing lost: every execution succeeded.
    const finals = await Promise.all(created.map(async (j) => (await jobs.get(j.id)).executions[0]!))
    expect(finals.map((e) => e.state)).toEqual(Array(6).fill('succeeded'))
    // What was running at the kill was reported interrupted, then retried as a new attempt.
    for (const execId of runningAtKill) {
      const h = (await jobs.execution(execId)).history
      const failed = h.find((e) => e.state === 'failed')
      expect(failed, `${execId}: ${JSON.stringify(h)}`).toBeDefined()
      expect(failed!.detail).toMatch(/^INTERRUPTED: /)
      expect(h[h.length - 1]).toMatchObject({ state: 'succeeded', attempt: failed!.attempt + 1 })
    }
    // Effects: exactly one per successful execution, however many runs it took.
    const db = new Database(effects, { readonly: true })
    try {
      const rows = db.prepare('SELECT exec_id AS execId, count(*) AS n FROM effects GROUP BY exec_id').all() as Array<{ execId: string; n: number }>
      expect(rows.length).toBe(6)
      expect(rows.every((r) => r.n === 1)).toBe(true)
      expect(new Set(rows.map((r) => r.execId))).toEqual(new Set(finals.map((e) => e.execId)))
      // The interrupted ones really ran twice, in two processes; the others once.
      const runs = db.prepare('SELECT exec_id AS execId, count(*) AS n, count(DISTINCT pid) AS pids FROM runs GROUP BY exec_id').all() as Array<{ execId: string; n: number; pids: number }>
      for (const r of runs) {
        const interrupted = runningAtKill.includes(r.execId)
        expect(r, r.execId).toMatchObject(interrupted ? { n: 2, pids: 2 } : { n: 1, pids: 1 })
      }
    } finally {
      db.close()
    }
  }, 90_000)
})
