import type { AgentConfig } from './config.js'

/**
 * What a config reload (SIGHUP, `systemctl reload rollcall-agent`) can change
 * in a running agent, decided apart from doing it (issue #13).
 *
 * Live keys are applied at once: the sensors and their interval (a new
 * sampler, and the new units published in a fresh birth), the shell
 * allowlist and its output cap (the next shell job uses them), the local
 * schedules (stopped and started again), the job and command concurrency,
 * and the log level (applied by the CLI, which owns the root logger).
 *
 * Every other key needs a restart: the identity and the link (hub, id,
 * token, TLS files, keepalive, reconnect and connect timings), the ledger
 * (dataDir, synchronous, the outbox bounds), the sender's batching, the
 * job queue's size and pull period, the handlers module (a module cannot be
 * unloaded) and stopTimeoutMs. The running agent keeps its values for those
 * until it restarts, and every reload says again which keys still differ.
 */

export const LIVE_KEYS = [
  'logLevel', 'sampleIntervalMs', 'builtinSensors', 'sensors', 'shellAllow', 'shellMaxOutputBytes', 'schedules', 'jobConcurrency', 'commandConcurrency',
] as const satisfies readonly (keyof AgentConfig)[]

export type LiveKey = (typeof LIVE_KEYS)[number]

export interface ReloadPlan {
  /** Changed keys applied live. */
  readonly live: readonly LiveKey[]
  /** Changed keys that take effect only after a restart. */
  readonly restart: readonly (keyof AgentConfig)[]
  /** The config to run with: the running one with the live keys taken from the new one. */
  readonly effective: AgentConfig
}

const isLive = (key: string): key is LiveKey => (LIVE_KEYS as readonly string[]).includes(key)

/** Compares the running config with a newly loaded one (both already validated). */
export function planReload(running: AgentConfig, next: AgentConfig): ReloadPlan {
  const live: LiveKey[] = []
  const restart: (keyof AgentConfig)[] = []
  const keys = new Set([...Object.keys(running), ...Object.keys(next)] as (keyof AgentConfig)[])
  for (const key of keys) {
    if (JSON.stringify(running[key]) === JSON.stringify(next[key])) continue
    if (isLive(key)) live.push(key)
    else restart.push(key)
  }
  const effective: Record<string, unknown> = { ...running }
  for (const key of live) effective[key] = next[key]
  return { live, restart, effective: Object.freeze(effective) as unknown as AgentConfig }
}
