import { join } from 'node:path'
import { createAgent, type Agent, type AgentDeps } from '../../agent/agent.js'
import { resolveAgentConfig, type AgentConfigInput } from '../../agent/config.js'
import { silentLogger } from '../../common/logger.js'
import type { JobDetail } from '../../hub/jobs/jobs.js'
import { waitFor, type TestHub } from './hub.js'

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
