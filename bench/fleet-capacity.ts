import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FleetReport, FleetSpec } from './fleet-runner.js'
import { startFleet, type Fleet } from './fleet.js'
import { startHubProcess, type HubProcess } from './hub-process.js'
import { cpuMs, mb, rssBytes } from './proc-stats.js'

/**
 * `npm run bench -- fleet`: the largest fleet at 1 sample/s per device that
 * one hub on this machine holds with the ingest lag (a sample's time from
 * the device's outbox to the hub's durable ack) at p99 under 1 s. The fleet
 * grows step by step on the same hub; each step runs its agents (real agent
 * code) in fleet processes of at most `perProcess` agents (a process's file
 * limit is 20,000 here and each agent holds four: ledger, WAL, shared memory,
 * socket), lets them settle, then measures.
 */
export interface FleetCapacityOptions {
  readonly steps: readonly number[]
  readonly warmupS: number
  readonly measureS: number
  readonly perProcess: number
  readonly lagLimitMs: number
  /** Bare protocol clients instead of real agents (bench/thin-fleet-runner.ts): less load generator on a shared machine. */
  readonly thin: boolean
  /** Write a V8 CPU profile of the hub (node --cpu-prof) into this directory when it stops. */
  readonly hubCpuProfDir?: string
}

interface Step {
  readonly devices: number
  readonly connected: number
  readonly storedPerS: number
  readonly lagP50Ms: number
  readonly lagP99Ms: number
  readonly backlog: number
  readonly hubCpuPct: number
  /** All fleet processes together, in % of one core: the load generator's share of the machine. */
  readonly fleetCpuPct: number
  readonly hubRssBytes: number
  readonly fleetRssBytes: number
  readonly holds: boolean
  /** Connection limits that fired during the step (broker stats, nonzero only): why devices may be missing. */
  readonly limitsHit: string
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function provisionBulk(hub: HubProcess, from: number, to: number): Promise<Array<{ id: string; token: string }>> {
  const out: Array<{ id: string; token: string }> = []
  for (let i = from; i < to; i += 1000) {
    const ids = Array.from({ length: Math.min(1000, to - i) }, (_, k) => `fleet-${String(i + k).padStart(5, '0')}`)
    const r = await hub.api<{ devices: Array<{ id: string; token: string }> }>('POST', '/api/devices/bulk', { devices: ids.map((id) => ({ id })), existing: 'rotate' })
    if (r.status !== 200) throw new Error(`provisioning: ${r.status} ${JSON.stringify(r.body)}`)
    out.push(...r.body.devices)
  }
  return out
}

async function measureStep(hub: HubProcess, work: string, devices: Array<{ id: string; token: string }>, o: FleetCapacityOptions): Promise<Step> {
  const fleets: Fleet[] = []
  try {
    for (let i = 0; i < devices.length; i += o.perProcess) {
      const part = devices.slice(i, i + o.perProcess)
      const spec: FleetSpec = {
        // A fresh ledger per step: a step must not start by replaying what the last one left unsent.
        hub: `mqtt://127.0.0.1:${hub.mqttPort}`, dataDir: join(work, `agents-${devices.length}`), devices: part, reportEveryMs: 1000,
        // Within the hub's default connect rate (500/s), shared by the processes.
        staggerMs: Math.ceil((devices.length / 400) * 1000),
        agent: { builtinSensors: false, sampleIntervalMs: 1000, keepaliveSec: 60, sensors: [{ name: 'temp', model: 'random-walk', min: 0, max: 100 }] },
      }
      const path = join(work, `fleet-${devices.length}-${i}.json`)
      writeFileSync(path, JSON.stringify(spec))
      fleets.push(startFleet(path, o.thin))
    }
    const connected = () => fleets.reduce((s, f) => s + (f.last()?.connected ?? 0), 0)
    const brokerStats = async () => (await hub.api<{ broker: { acceptsRefused: number; connectsRefused: number; limits: Record<string, number> } }>('GET', '/api/stats')).body.broker
    const limits0 = await brokerStats()
    const deadline = Date.now() + 180_000
    while (connected() < devices.length && Date.now() < deadline) await sleep(500)
    await sleep(o.warmupS * 1000)
    const stored = async () => (await hub.api<{ ingest: { samplesStored: number } }>('GET', '/api/stats')).body.ingest.samplesStored
    const fleetCpu = () => fleets.reduce((s, f) => s + (f.child.pid === undefined ? 0 : cpuMs(f.child.pid)), 0)
    const s0 = await stored(), c0 = cpuMs(hub.pid), f0 = fleetCpu(), t0 = Date.now()
    const samples: FleetReport[][] = fleets.map(() => [])
    const seenFrom = fleets.map((f) => f.reports.length)
    const rss: number[] = []
    for (let i = 0; i < o.measureS; i++) {
      await sleep(1000)
      rss.push(rssBytes(hub.pid))
    }
    const s1 = await stored(), c1 = cpuMs(hub.pid), f1 = fleetCpu(), t1 = Date.now()
    fleets.forEach((f, i) => { samples[i] = f.reports.slice(seenFrom[i]) })
    // Each report covers the samples acked in its second: the worst second's p99 over all processes is the step's.
    const lagP99 = Math.max(0, ...samples.flat().filter((r) => r.lagCount > 0).map((r) => r.lagP99Ms))
    const p50s = samples.flat().filter((r) => r.lagCount > 0).map((r) => r.lagP50Ms).sort((a, b) => a - b)
    const last = fleets.map((f) => f.last())
    const limits1 = await brokerStats()
    const hit = Object.entries({ acceptsRefused: limits1.acceptsRefused - limits0.acceptsRefused, connectsRefused: limits1.connectsRefused - limits0.connectsRefused,
      ...Object.fromEntries(Object.entries(limits1.limits).map(([k, v]) => [k, v - (limits0.limits[k] ?? 0)])) }).filter(([, v]) => v > 0)
    const step: Step = {
      devices: devices.length, connected: connected(),
      storedPerS: (s1 - s0) / ((t1 - t0) / 1000),
      lagP50Ms: p50s[Math.floor(p50s.length / 2)] ?? 0, lagP99Ms: lagP99,
      backlog: last.reduce((s, r) => s + (r?.backlog ?? 0), 0),
      hubCpuPct: ((c1 - c0) / (t1 - t0)) * 100, fleetCpuPct: ((f1 - f0) / (t1 - t0)) * 100, hubRssBytes: Math.max(...rss),
      fleetRssBytes: last.reduce((s, r) => s + (r?.rssBytes ?? 0), 0),
      holds: false,
      limitsHit: hit.map(([k, v]) => `${k} ${v}`).join(', '),
    }
    return { ...step, holds: step.connected === devices.length && step.lagP99Ms < o.lagLimitMs && step.storedPerS >= devices.length * 0.95 }
  } finally {
    await Promise.allSettled(fleets.map((f) => f.stop()))
    rmSync(join(work, `agents-${devices.length}`), { recursive: true, force: true })
  }
}

export async function runFleetCapacityBench(o: FleetCapacityOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-fleet-'))
  const hubDir = join(work, 'hub')
  mkdirSync(hubDir, { recursive: true })
  // Every bench device connects from 127.0.0.1, where a real fleet comes from many addresses: the per-address
  // cap on sockets awaiting CONNECT is raised to the global one, or the connect ramp would trip it.
  const hubConfig = join(work, 'hub.json')
  writeFileSync(hubConfig, JSON.stringify({ maxPendingPerAddress: 1000, maxPendingConnections: 1000 }))
  const hub = await startHubProcess(hubDir, ['--config', hubConfig], undefined, o.hubCpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.hubCpuProfDir}`] : [])
  const steps: Step[] = []
  try {
    process.stderr.write(`fleet bench (${o.thin ? 'thin devices: bare protocol clients' : 'real agents'}): steps ${o.steps.join(', ')} devices at 1 sample/s each; warm-up ${o.warmupS}s, measure ${o.measureS}s per step; holds while ingest lag p99 < ${o.lagLimitMs} ms\n`)
    let provisioned: Array<{ id: string; token: string }> = []
    for (const n of o.steps) {
      if (provisioned.length < n) provisioned = [...provisioned, ...await provisionBulk(hub, provisioned.length, n)]
      const step = await measureStep(hub, work, provisioned.slice(0, n), o)
      steps.push(step)
      process.stderr.write(`  ${n} devices: ${step.connected} connected, ${step.storedPerS.toFixed(0)} samples/s stored, lag p50/p99 ${step.lagP50Ms.toFixed(0)}/${step.lagP99Ms.toFixed(0)} ms, hub CPU ${step.hubCpuPct.toFixed(0)}% (fleet ${step.fleetCpuPct.toFixed(0)}%), ${step.holds ? 'holds' : 'does not hold'}${step.limitsHit ? `; limits hit: ${step.limitsHit}` : ''}\n`)
      if (!step.holds) break
      await sleep(2000)
    }
  } catch (err) {
    const alive = hub.child.exitCode === null && hub.child.signalCode === null
    process.stderr.write(`fleet bench: ${(err as Error).message}; the hub is ${alive ? 'still running' : `gone (${hub.child.exitCode ?? hub.child.signalCode})`}; its last words:\n${hub.stderr()}\n`)
    throw err
  } finally {
    await hub.stop()
    rmSync(work, { recursive: true, force: true })
  }
  const best = [...steps].reverse().find((s) => s.holds)
  const rows: string[][] = [['devices', 'connected', 'samples/s stored', 'lag p50 / p99 ms', 'backlog', 'hub CPU', 'fleet CPU', 'hub RSS', 'fleet RSS', '']]
  for (const s of steps) {
    rows.push([String(s.devices), String(s.connected), s.storedPerS.toFixed(0), `${s.lagP50Ms.toFixed(0)} / ${s.lagP99Ms.toFixed(0)}`, String(s.backlog),
      `${s.hubCpuPct.toFixed(0)}%`, `${s.fleetCpuPct.toFixed(0)}%`, mb(s.hubRssBytes), mb(s.fleetRssBytes), s.holds ? 'holds' : 'over the limit'])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  process.stdout.write(`${rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')}\n`)
  process.stdout.write(`largest fleet held with ingest lag p99 < ${o.lagLimitMs} ms: ${best ? `${best.devices} devices (${best.storedPerS.toFixed(0)} samples/s)` : 'none of the steps'}; target >= 5000\n`)
}
