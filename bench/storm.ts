import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Database from 'better-sqlite3'
import type { FleetReport, FleetSpec } from '../devices-sim/fleet-runner.js'
import { benchHubConfig, provisionBulk, startFleet, type Fleet } from './fleet.js'
import { freePort } from '../common/free-port.js'
import { hubNodeArgs, startHubProcess, type HubProcess } from './hub-process.js'
import { cpuMs } from './proc-stats.js'
import { table } from '../cli/output.js'

/**
 * `npm run bench -- storm`: the reconnect storm after a hub crash. A thin
 * fleet (bench/thin-fleet-runner.ts: the agent's protocol, window and
 * jittered exponential back-off) connects all at once and streams; the hub
 * is killed with SIGKILL, stays down `downS`, and is started again on the
 * same data and port. The bench reports, for the first connect and for the
 * return after the restart side by side, when half, 99% and all of the
 * devices were online, when all were streaming (an ack on their new
 * connection), and when the backlog the outage left was drained. Then the
 * fleet stops sampling, drains, and what it generated is counted against
 * the samples in the hub's database: lost and duplicated must both be 0.
 *
 * The hub's connect rate limit (connectRatePerSec, 1000/s by default;
 * `connectRatePerSec` here to try another) caps the storm; the refusals it
 * made are reported, and the devices' back-off does the spreading.
 */
export interface StormOptions {
  readonly devices: number
  readonly perProcess: number
  /** Each device's sampling interval. */
  readonly intervalMs: number
  /** Streaming time before the kill. */
  readonly steadyS: number
  /** How long the hub stays down. */
  readonly downS: number
  /** Give up on a phase after this long. */
  readonly timeoutS: number
  /** The hub's connectRatePerSec; undefined: its default. */
  readonly connectRatePerSec?: number
  /** Profile the restarted hub (node --cpu-prof) into this directory; the killed one loses its profile. */
  readonly hubCpuProfDir?: string
}

interface Phase {
  readonly name: string
  /** ms from the phase's start (fleet start; hub restart) to each milestone; undefined: not reached. */
  readonly halfOnlineMs: number | undefined
  readonly p99OnlineMs: number | undefined
  readonly allOnlineMs: number | undefined
  readonly allStreamingMs: number | undefined
  readonly drainedMs: number | undefined
  /** CONNECTs the hub refused during the phase, by cause (rate limits, pending caps). */
  readonly refused: string
  /** Hub CPU over the phase, % of one core. */
  readonly hubCpuPct: number
}

const POLL_MS = 250

interface Totals { connected: number; streaming: number; backlog: number; generated: number; acked: number }

function totals(fleets: readonly Fleet[]): Totals {
  const t: Totals = { connected: 0, streaming: 0, backlog: 0, generated: 0, acked: 0 }
  for (const f of fleets) {
    const r: FleetReport | undefined = f.last()
    if (!r) continue
    t.connected += r.connected
    t.streaming += r.streaming ?? 0
    t.backlog += r.backlog
    t.generated += r.generated
    t.acked += r.acked
  }
  return t
}

async function refusals(hub: HubProcess): Promise<Record<string, number>> {
  const b = (await hub.api<{ broker: { acceptsRefused: number; connectsRefused: number; limits: Record<string, number> } }>('GET', '/api/stats')).body.broker
  return { connectsRefused: b.connectsRefused, acceptsRefused: b.acceptsRefused, ...b.limits }
}

/**
 * Watches the fleet from `start` until every device is streaming and the
 * backlog is back to `steadyBacklog` (or the phase times out).
 */
async function watchPhase(name: string, fleets: readonly Fleet[], hub: HubProcess, devices: number, start: number, steadyBacklog: number, o: StormOptions): Promise<Phase> {
  const refused0 = await refusals(hub)
  const cpu0 = cpuMs(hub.pid)
  const at: Partial<Record<'half' | 'p99' | 'all' | 'streaming' | 'drained', number>> = {}
  const deadline = start + o.timeoutS * 1000
  // Reports come every POLL_MS: a milestone is timed by the first report that shows it.
  const seen = fleets.map((f) => f.reports.length)
  while (Date.now() < deadline && at.drained === undefined) {
    await sleep(POLL_MS)
    const t = totals(fleets)
    const now = Date.now() - start
    if (at.half === undefined && t.connected >= devices * 0.5) at.half = now
    if (at.p99 === undefined && t.connected >= devices * 0.99) at.p99 = now
    if (at.all === undefined && t.connected >= devices) at.all = now
    if (at.streaming === undefined && t.streaming >= devices) at.streaming = now
    // Drained: every device streaming and the fleet holds no more than before the outage (+10%, +1 per device).
    if (at.streaming !== undefined && t.backlog <= steadyBacklog * 1.1 + devices && fleets.every((f, i) => f.reports.length > seen[i]!)) at.drained = now
  }
  const refused1 = await refusals(hub)
  const refused = Object.entries(refused1).map(([k, v]) => [k, v - (refused0[k] ?? 0)] as const).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ')
  return {
    name, halfOnlineMs: at.half, p99OnlineMs: at.p99, allOnlineMs: at.all, allStreamingMs: at.streaming, drainedMs: at.drained,
    refused: refused || 'none', hubCpuPct: ((cpuMs(hub.pid) - cpu0) / Math.max(1, Date.now() - start)) * 100,
  }
}

/** Samples in the hub's database: rows, and distinct (device, stream, seq). */
function countStored(dbPath: string): { rows: number; distinct: number } {
  const db = new Database(dbPath, { readonly: true })
  try {
    const rows = (db.prepare('SELECT count(*) AS n FROM samples').get() as { n: number }).n
    const distinct = (db.prepare('SELECT count(*) AS n FROM (SELECT DISTINCT device_key, stream_key, seq FROM samples)').get() as { n: number }).n
    return { rows, distinct }
  } finally {
    db.close()
  }
}

const secs = (ms: number | undefined) => (ms === undefined ? 'not reached' : `${(ms / 1000).toFixed(1)} s`)

export async function runStormBench(o: StormOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-storm-'))
  const hubDir = join(work, 'hub')
  mkdirSync(hubDir)
  const port = await freePort()
  const hubArgs = ['--config', benchHubConfig(work, o.connectRatePerSec === undefined ? {} : { connectRatePerSec: o.connectRatePerSec }), '--mqtt-port', String(port)]
  const nodeArgs = hubNodeArgs(o.hubCpuProfDir)
  let hub = await startHubProcess(hubDir, hubArgs, undefined, nodeArgs)
  const fleets: Fleet[] = []
  try {
    process.stderr.write(`storm bench: ${o.devices} thin devices at one sample per ${o.intervalMs} ms, all starting at once, hub connect rate ${o.connectRatePerSec ?? 'default'}/s; hub killed (SIGKILL) after ${o.steadyS} s, down ${o.downS} s, restarted on the same data and port\n`)
    const devices = await provisionBulk(hub, 0, o.devices)
    const start = Date.now()
    for (let i = 0; i < devices.length; i += o.perProcess) {
      const spec: FleetSpec = {
        hub: `mqtt://127.0.0.1:${port}`, dataDir: join(work, 'agents'), devices: devices.slice(i, i + o.perProcess), reportEveryMs: POLL_MS,
        agent: { builtinSensors: false, sampleIntervalMs: o.intervalMs, keepaliveSec: 60, sensors: [{ name: 'temp', model: 'random-walk', min: 0, max: 100 }] },
      }
      const path = join(work, `fleet-${i}.json`)
      writeFileSync(path, JSON.stringify(spec))
      fleets.push(startFleet(path, true))
    }
    const first = await watchPhase('first connect', fleets, hub, o.devices, start, 0, o)
    process.stderr.write(`  first connect: all online ${secs(first.allOnlineMs)}, all streaming ${secs(first.allStreamingMs)}\n`)
    await sleep(o.steadyS * 1000)
    const steadyBacklog = totals(fleets).backlog

    hub.child.kill('SIGKILL')
    await new Promise((r) => (hub.child.exitCode !== null || hub.child.signalCode !== null ? r(undefined) : hub.child.once('exit', r)))
    await sleep(o.downS * 1000)
    const restart = Date.now()
    hub = await startHubProcess(hubDir, hubArgs, undefined, nodeArgs)
    const readyMs = Date.now() - restart
    const again = await watchPhase('after restart', fleets, hub, o.devices, restart, steadyBacklog, o)
    process.stderr.write(`  after restart: hub listening in ${secs(readyMs)}, all online ${secs(again.allOnlineMs)}, all streaming ${secs(again.allStreamingMs)}\n`)

    // Stop sampling, let the fleet drain, and count.
    for (const f of fleets) f.child.kill('SIGUSR2')
    const drainDeadline = Date.now() + o.timeoutS * 1000
    while (Date.now() < drainDeadline) {
      await sleep(500)
      const t = totals(fleets)
      if (t.backlog === 0 && t.acked === t.generated) break
    }
    await Promise.allSettled(fleets.map((f) => f.stop()))
    const final = totals(fleets)
    await hub.stop()
    const stored = countStored(join(hubDir, 'hub.db'))

    const rows = [['phase', '50% online', '99% online', 'all online', 'all streaming', 'backlog drained', 'hub CPU', 'CONNECTs refused']]
    for (const p of [first, again]) {
      rows.push([p.name, secs(p.halfOnlineMs), secs(p.p99OnlineMs), secs(p.allOnlineMs), secs(p.allStreamingMs), secs(p.drainedMs), `${p.hubCpuPct.toFixed(0)}%`, p.refused])
    }
    process.stdout.write(`${table(rows)}\n`)
    process.stdout.write(`${o.devices} devices; times from the fleet's start and from the hub's restart (listening ${secs(readyMs)} after it); the hub was down ${o.downS} s\n`)
    const lost = final.generated - stored.distinct
    const duplicates = stored.rows - stored.distinct
    process.stdout.write(`samples generated ${final.generated}, acked ${final.acked}, stored ${stored.distinct} (${stored.rows} rows): lost ${lost}, duplicates ${duplicates}${final.backlog > 0 ? `, ${final.backlog} still unacked when the drain timed out` : ''}\n`)
  } finally {
    await Promise.allSettled(fleets.map((f) => f.stop()))
    await hub.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
