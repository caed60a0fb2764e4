import { join } from 'node:path'
import { expect } from 'vitest'
import { createAgent, type Agent, type AgentDeps } from '../../agent/agent.js'
import { resolveAgentConfig, type AgentConfigInput } from '../../agent/config.js'
import type { AdminApi } from '../../common/admin-http.js'
import { silentLogger } from '../../common/logger.js'
import type { JobDetail } from '../../hub/jobs/jobs.js'
import { waitFor, type TestHub } from './hub.js'
import { readLedger } from './ledger.js'

/** Settings that make agents react fast enough for a test. */
export const QUICK_AGENT: AgentConfigInput = {
  builtinSensors: false,
  sampleIntervalMs: 0,
  keepaliveSec: 5,
  reconnectBaseMs: 50,
  reconnectMaxMs: 500,
  ackTimeoutMs: 1000,
  // Every tick commits, as tests count samples tick by tick.
  outboxCommitMs: 0,
}

/** Real agents in this process, one per id, each with its own ledger under `dir`. */
export async function startAgents(
  hubUrl: string, dir: string, devices: ReadonlyArray<{ id: string; token: string }>, config: AgentConfigInput = {}, deps: AgentDeps = {},
): Promise<Agent[]> {
  const agents = devices.map((d) => createAgent(
    resolveAgentConfig({ ...QUICK_AGENT, ...config, hub: hubUrl, id: d.id, token: d.token, dataDir: join(dir, d.id) }),
    { logger: silentLogger(), ...deps },
  ))
  await Promise.all(agents.map((a) => a.start()))
  return agents
}

/** Registers `n` devices `{prefix}-000`... (in `group`, if given) on a test hub. */
export async function registerDevices(hub: TestHub, prefix: string, n: number, group?: string): Promise<Array<{ id: string; token: string }>> {
  const out: Array<{ id: string; token: string }> = []
  for (let i = 0; i < n; i++) {
    const id = `${prefix}-${String(i).padStart(3, '0')}`
    out.push({ id, token: await hub.addDevice(id, group) })
  }
  return out
}

/** Waits until every agent is reachable on the hub. */
export async function waitOnline(hub: TestHub, ids: readonly string[], timeoutMs = 90_000): Promise<void> {
  await waitFor(() => ids.every((id) => hub.running.services.presence.isReachable(id)), `${ids.length} devices online`, timeoutMs)
}

/** Waits until a job is no longer active; returns it with every execution. */
export async function waitJobDone(hub: TestHub, jobId: string, timeoutMs = 60_000): Promise<JobDetail> {
  return waitFor(async () => {
    const j = await hub.running.services.jobs.get(jobId, { limit: 100_000 })
    return j.status === 'active' ? undefined : j
  }, `job ${jobId} to finish`, timeoutMs)
}

/**
 * After agents streamed through faults and stopped: the same ledgers again, sampling nothing,
 * until the hub's mark reaches what each agent numbered; then, counted per seq, every sample
 * stored once (lost 0, duplicates 0), and more than `atLeast` of them per device when given.
 */
export async function expectStoredOnce(api: AdminApi, brokerUrl: string, agentDir: string, devices: ReadonlyArray<{ id: string; token: string }>, config: AgentConfigInput, atLeast?: number): Promise<void> {
  const numbered = devices.map((d) => readLedger(join(agentDir, d.id)).generated)
  const agents = await startAgents(brokerUrl, agentDir, devices, { ...config, sampleIntervalMs: 0 })
  try {
    await waitFor(async () => {
      const marks = await Promise.all(devices.map(async (d) => (await api<{ streams: Array<{ upTo: number }> }>('GET', `/api/devices/${d.id}`)).body.streams[0]?.upTo))
      return marks.every((m, i) => m === numbered[i])
    }, 'every outbox drained', 60_000, 200)
  } finally {
    await Promise.allSettled(agents.map((a) => a.stop()))
  }
  for (const [i, d] of devices.entries()) {
    const generated = numbered[i]!
    const r = await api<{ samples: Array<{ seq: number }> }>('GET', `/api/devices/${d.id}/telemetry?since=0&limit=100000`)
    const seqs = r.body.samples.map((x) => x.seq)
    const distinct = new Set(seqs)
    const lost = Array.from({ length: generated }, (_, k) => k + 1).filter((k) => !distinct.has(k)).length
    expect({ device: d.id, stored: distinct.size, lost, duplicates: seqs.length - distinct.size })
      .toEqual({ device: d.id, stored: generated, lost: 0, duplicates: 0 })
    if (atLeast !== undefined) expect(generated).toBeGreaterThan(atLeast)
  }
}
