/**
 * A load generator: runs many real agents (the agent code, not a look-alike)
 * in one process against a hub, and prints a JSON line of fleet totals every
 * `reportEveryMs`. Used by the benchmarks and by tests that need a fleet in
 * another process. Stops on SIGTERM/SIGINT or after `durationMs`.
 *
 *   node dist/devices-sim/fleet-runner.js SPEC.json
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig, type AgentConfigInput } from '../agent/config.js'
import { silentLogger } from '../common/logger.js'
import { watchAckLag } from './ack-lag.js'

export interface FleetSpec {
  readonly hub: string
  readonly dataDir: string
  readonly devices: ReadonlyArray<{ readonly id: string; readonly token: string }>
  readonly agent: AgentConfigInput
  readonly reportEveryMs: number
  readonly durationMs?: number
  /** Spread the connects over this long so the fleet does not stampede. */
  readonly staggerMs?: number
  /**
   * Thin fleet only: take the broker's PUBACK as the ack of a batch, for a
   * baseline broker that sends no telemetry acks (bench/baseline-store.ts).
   */
  readonly ackOnPuback?: boolean
  /** Thin fleet only: SIGUSR1 switches the sample rate between 1x and this many times (2 by default). */
  readonly overloadFactor?: number
}

export interface FleetReport {
  readonly t: number
  readonly agents: number
  readonly connected: number
  /** Thin fleet: connected devices whose current connection has had an ack (they are streaming again). */
  readonly streaming?: number
  readonly generated: number
  readonly acked: number
  readonly backlog: number
  readonly dropped: number
  /** Median over devices of each device's recent send-to-ack p50 / p99. */
  readonly ackP50Ms: number
  readonly ackP99Ms: number
  readonly rssBytes: number
  /** Ingest lag, sampled → stored (acked by the hub), over the samples acked since the last report; every 10th sample timed. */
  readonly lagP50Ms: number
  readonly lagP99Ms: number
  readonly lagCount: number
}

function median(xs: number[]): number {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** Lags of samples acked since the last report. */
let lags: number[] = []

/** Times every 10th sample of an agent from its append to the hub's ack that covers it. */
export function watchLag(agent: Agent): void {
  if (agent.outbox) watchAckLag(agent.outbox, () => performance.now(), (lagMs) => lags.push(lagMs))
}

function takeLags(): { p50: number; p99: number; count: number } {
  const xs = lags.sort((a, b) => a - b)
  lags = []
  const at = (q: number) => xs.length === 0 ? 0 : xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]!
  return { p50: at(0.5), p99: at(0.99), count: xs.length }
}

export function report(agents: readonly Agent[]): FleetReport {
  let connected = 0, generated = 0, acked = 0, backlog = 0, dropped = 0
  const p50: number[] = []
  const p99: number[] = []
  for (const a of agents) {
    const s = a.stats()
    if (s.connected) connected++
    generated += s.sampler?.samples ?? 0
    acked += s.sender?.ackedUpTo ?? 0
    backlog += s.outbox?.backlogRows ?? 0
    dropped += (s.outbox?.droppedTelemetry ?? 0) + (s.outbox?.droppedEvents ?? 0)
    if (s.sender && s.sender.ackLatencyMs.count > 0) {
      p50.push(s.sender.ackLatencyMs.p50)
      p99.push(s.sender.ackLatencyMs.p99)
    }
  }
  const lag = takeLags()
  return {
    t: Date.now(), agents: agents.length, connected, generated, acked, backlog, dropped, ackP50Ms: median(p50), ackP99Ms: median(p99), rssBytes: process.memoryUsage().rss,
    lagP50Ms: lag.p50, lagP99Ms: lag.p99, lagCount: lag.count,
  }
}

async function main(): Promise<void> {
  const specPath = process.argv[2]
  if (!specPath) throw new Error('usage: fleet-runner SPEC.json')
  const spec = JSON.parse(readFileSync(specPath, 'utf8')) as FleetSpec
  const logger = silentLogger()
  const agents: Agent[] = []
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    clearInterval(timer)
    await Promise.allSettled(agents.map((a) => a.stop()))
    process.stdout.write(`${JSON.stringify({ ...report(agents), final: true })}\n`)
    process.exit(0)
  }
  process.on('SIGTERM', () => { void stop() })
  process.on('SIGINT', () => { void stop() })
  const timer = setInterval(() => process.stdout.write(`${JSON.stringify(report(agents))}\n`), spec.reportEveryMs)

  const gap = (spec.staggerMs ?? 0) / Math.max(1, spec.devices.length)
  for (const d of spec.devices) {
    if (stopping) return
    // outboxCommitMs 0 unless the spec says otherwise: the fleet stands for a live stream into the hub
    // (what these benches and tests measure), not for SD-card-sparing batches every 2 minutes.
    const agent = createAgent(resolveAgentConfig({ logLevel: 'silent', outboxCommitMs: 0, ...spec.agent, hub: spec.hub, id: d.id, token: d.token, dataDir: join(spec.dataDir, d.id) }), { logger })
    agents.push(agent)
    await agent.start()
    watchLag(agent)
    if (gap > 0) await new Promise((r) => setTimeout(r, gap))
  }
  if (spec.durationMs !== undefined) setTimeout(() => { void stop() }, spec.durationMs)
}

main().catch((err: unknown) => {
  process.stderr.write(`fleet-runner: ${String(err)}\n`)
  process.exit(1)
})
