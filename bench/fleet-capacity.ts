import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FleetSpec } from '../devices-sim/fleet-runner.js'
import { benchHubConfig, provisionBulk, startFleet, type Fleet } from './fleet.js'
import { freePort } from '../common/free-port.js'
import { hubNodeArgs, startHubProcess } from './hub-process.js'
import { cpuMs, mb, rssBytes } from './proc-stats.js'
import { startRawAedes } from './raw-aedes-process.js'
import { table } from '../cli/output.js'
import Database from 'better-sqlite3'

/**
 * `npm run bench -- fleet`: the largest fleet at 1 sample/s per device that
 * one hub on this machine holds with the ingest lag (a sample's time from
 * the device to durable storage) at p99 under 1 s. The fleet grows step by
 * step on the same hub; each step runs its devices in fleet processes of at
 * most `perProcess` devices, lets them settle, then measures.
 *
 * File descriptors (20,000 per process here): each thin device holds one
 * socket, each real agent four (ledger, WAL, shared memory, socket), so a
 * fleet process stays far below the limit at 2,500; the hub holds one socket
 * per device plus its database files, so 15,000 devices fit.
 *
 * With `baselines`, the same thin fleet and steps then run against what a
 * user would build instead (bench/baseline-store.ts): Mosquitto, or bare
 * aedes, plus one subscriber that stores the samples in SQLite with group
 * commits under synchronous=FULL. Their devices take the broker's PUBACK as
 * the ack; the lag is measured from the sample's time to its commit, as for
 * the hub.
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
  /** Baseline systems to run after rollcall, same fleet and steps (thin fleets only). */
  readonly baselines: ReadonlyArray<'mosquitto' | 'aedes'>
  /** Which rollcall runs: its hub with the embedded broker, and/or on an external Mosquitto (docs/scale-out.md; thin fleets only). */
  readonly hubs: ReadonlyArray<'embedded' | 'mosquitto'>
  /** Run every step, not only up to the first that does not hold. */
  readonly allSteps: boolean
  /**
   * Then, for each system, its largest held fleet on a fresh system: measured
   * at 1 sample/s (the peak), then at `overload` times that, then drained and
   * counted: stored samples/s while overloaded against the peak, lost and
   * duplicated samples (thin fleets only).
   */
  readonly overload?: number
}

/** What a step runs against: rollcall's hub, or a baseline broker with its storing subscriber. */
interface System {
  readonly name: string
  readonly url: string
  /** Processes whose CPU is the system's (hub; broker + subscriber). */
  readonly pids: readonly number[]
  readonly ackOnPuback: boolean
  devices(n: number): Promise<Array<{ id: string; token: string }>>
  stored(): Promise<number>
  /** The system's own lag reports (baselines); undefined: the fleet's (acks are durable). */
  lagReports?(): readonly LagReport[]
  /** Connection limits that fired so far, by name (hub only). */
  limits?(): Promise<Record<string, number>>
  /** Connections whose held writes the hub's commits and its coalescer's timer released so far (hub only). */
  writeReleases?(): Promise<{ commit: number; timer: number }>
  /** Samples in the system's database: rows, and distinct (device, stream, seq); read while it runs. */
  counts(): { rows: number; distinct: number }
  stop(): Promise<void>
}

interface LagReport { readonly t: number; readonly lagP50Ms: number; readonly lagP99Ms: number; readonly lagCount: number }

/** What one measured window of a running fleet shows. */
interface Window {
  readonly storedPerS: number
  readonly lagP50Ms: number
  readonly lagP99Ms: number
  readonly backlog: number
  readonly cpuPct: number
  /** All fleet processes together, in % of one core: the load generator's share of the machine. */
  readonly fleetCpuPct: number
  readonly rssBytes: number
}

interface Step extends Window {
  readonly system: string
  readonly devices: number
  readonly connected: number
  readonly fleetRssBytes: number
  readonly holds: boolean
  /** Connection limits that fired during the step (nonzero only): why devices may be missing. */
  readonly limitsHit: string
  /**
   * Of the connections whose held writes were released during the measured window, the share the
   * coalescer's timer released rather than a commit (hub only): each such message cost two socket writes.
   */
  readonly timerReleasePct: number | undefined
}

const BASELINE_STORE = fileURLToPath(new URL('./baseline-store.js', import.meta.url))

/** Samples in a database: rows, and distinct by `key`. Opened read-only beside the system that writes it (WAL). */
function countSamples(dbPath: string, key: string): { rows: number; distinct: number } {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true })
  try {
    const rows = (db.prepare('SELECT count(*) AS n FROM samples').get() as { n: number }).n
    const distinct = (db.prepare(`SELECT count(*) AS n FROM (SELECT DISTINCT ${key} FROM samples)`).get() as { n: number }).n
    return { rows, distinct }
  } finally {
    db.close()
  }
}

/**
 * Mosquitto 2 as Debian ships it, on a free port, with its files in `dir`: anonymous clients
 * allowed and no persistence, as a quick install has it, plus `extra` lines.
 */
async function startMosquitto(dir: string, extra: readonly string[] = []): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_dest stderr', 'log_type error', ...extra, ''].join('\n'))
  const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] })
  await new Promise<void>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`cannot start mosquitto (apt-get install mosquitto): ${err.message}`)))
    child.once('spawn', () => resolve())
  })
  await sleep(500)
  return { child, port }
}

/**
 * Rollcall's hub, with its embedded broker, or (`onMosquitto`) as a client of a Mosquitto the
 * devices connect to. That Mosquitto runs as the baseline's does, without accounts (the hub's
 * brokerDynsec off): the figures compare ingest, not the broker's ACL checks. Its queue for the
 * hub is unbounded, so a hub that falls behind is seen as lag, not as messages Mosquitto drops.
 */
async function rollcallSystem(work: string, o: FleetCapacityOptions, dirName = 'hub', onMosquitto = false): Promise<System> {
  const hubDir = join(work, dirName)
  mkdirSync(hubDir, { recursive: true })
  const broker = onMosquitto ? await startMosquitto(hubDir, ['max_queued_messages 0', 'max_inflight_messages 0']) : undefined
  const external = broker === undefined ? {} : { broker: `mqtt://127.0.0.1:${broker.port}`, brokerDynsec: false, brokerClientId: `bench-hub-${process.pid}` }
  const hub = await startHubProcess(hubDir, ['--config', benchHubConfig(hubDir, external)], undefined, hubNodeArgs(o.hubCpuProfDir))
  let provisioned: Array<{ id: string; token: string }> = []
  return {
    name: onMosquitto ? 'rollcall on mosquitto' : 'rollcall', url: `mqtt://127.0.0.1:${broker?.port ?? hub.mqttPort}`,
    pids: broker === undefined ? [hub.pid] : [hub.pid, broker.child.pid!], ackOnPuback: false,
    async devices(n) {
      if (provisioned.length < n) provisioned = [...provisioned, ...await provisionBulk(hub, provisioned.length, n)]
      return provisioned.slice(0, n)
    },
    stored: async () => (await hub.api<{ ingest: { samplesStored: number } }>('GET', '/api/stats')).body.ingest.samplesStored,
    counts: () => countSamples(join(hubDir, 'hub.db'), 'device_key, stream_key, seq'),
    async limits() {
      const b = (await hub.api<{ broker: { acceptsRefused: number; connectsRefused: number; limits: Record<string, number> } }>('GET', '/api/stats')).body.broker
      return { acceptsRefused: b.acceptsRefused, connectsRefused: b.connectsRefused, ...b.limits }
    },
    writeReleases: async () => (await hub.api<{ broker: { writeReleases: { commit: number; timer: number } } }>('GET', '/api/stats')).body.broker.writeReleases,
    async stop() {
      const alive = hub.child.exitCode === null && hub.child.signalCode === null
      if (!alive) process.stderr.write(`the hub is gone (${hub.child.exitCode ?? hub.child.signalCode}); its last words:\n${hub.stderr()}\n`)
      await hub.stop()
      if (broker !== undefined) await stopChild(broker.child)
    },
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await Promise.race([exited, sleep(10_000)])
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

/** A broker (Mosquitto 2 as Debian ships it, or bare aedes) and the storing subscriber. */
async function baselineSystem(kind: 'mosquitto' | 'aedes', work: string, dirName: string = kind): Promise<System> {
  const dir = join(work, dirName)
  mkdirSync(dir, { recursive: true })
  let broker: ChildProcess
  let port: number
  if (kind === 'mosquitto') {
    // Defaults otherwise: max_queued_messages 1000 per client, as a quick install has it.
    ;({ child: broker, port } = await startMosquitto(dir))
  } else {
    ;({ child: broker, port } = await startRawAedes('inherit'))
  }
  const url = `mqtt://127.0.0.1:${port}`
  const store = spawn(process.execPath, [BASELINE_STORE, url, join(dir, 'store.db')], { stdio: ['ignore', 'pipe', 'inherit'] })
  const reports: Array<LagReport & { stored: number }> = []
  createInterface({ input: store.stdout }).on('line', (l) => { try { reports.push(JSON.parse(l) as LagReport & { stored: number }) } catch { /* not a report */ } })
  await sleep(1500)
  const name = kind === 'mosquitto' ? 'mosquitto + store' : 'aedes + store'
  return {
    name, url, pids: [broker.pid!, store.pid!], ackOnPuback: true,
    devices: async (n) => Array.from({ length: n }, (_, i) => ({ id: `fleet-${String(i).padStart(5, '0')}`, token: 'none' })),
    async stored() {
      // The subscriber reports each second; wait for the next report so the count is current.
      const seen = reports.length
      const deadline = Date.now() + 5000
      while (reports.length === seen && Date.now() < deadline) await sleep(50)
      return reports[reports.length - 1]?.stored ?? 0
    },
    lagReports: () => reports,
    // Its primary key drops a repeat silently (INSERT OR IGNORE): rows are distinct samples.
    counts: () => countSamples(join(dir, 'store.db'), 'device, seq'),
    async stop() {
      await stopChild(store)
      await stopChild(broker)
    },
  }
}

/** Starts `devices` as fleet processes of at most `perProcess` each, and waits for them to connect (or 3 min). */
async function startStepFleets(system: System, work: string, devices: Array<{ id: string; token: string }>, o: FleetCapacityOptions, tag: string): Promise<Fleet[]> {
  const fleets: Fleet[] = []
  for (let i = 0; i < devices.length; i += o.perProcess) {
    const part = devices.slice(i, i + o.perProcess)
    const spec: FleetSpec = {
      // A fresh ledger per step: a step must not start by replaying what the last one left unsent.
      hub: system.url, dataDir: join(work, `agents-${tag}`), devices: part, reportEveryMs: 1000,
      // Within the hub's default connect rate (1000/s; 400/s leaves it room), shared by the processes.
      staggerMs: Math.ceil((devices.length / 400) * 1000),
      agent: { builtinSensors: false, sampleIntervalMs: 1000, keepaliveSec: 60, sensors: [{ name: 'temp', model: 'random-walk', min: 0, max: 100 }] },
      ackOnPuback: system.ackOnPuback,
      ...(o.overload === undefined ? {} : { overloadFactor: o.overload }),
    }
    const path = join(work, `fleet-${tag}-${i}.json`)
    writeFileSync(path, JSON.stringify(spec))
    fleets.push(startFleet(path, o.thin))
  }
  const deadline = Date.now() + 180_000
  while (connectedOf(fleets) < devices.length && Date.now() < deadline) await sleep(500)
  return fleets
}

const connectedOf = (fleets: readonly Fleet[]) => fleets.reduce((s, f) => s + (f.last()?.connected ?? 0), 0)


/** Measures `seconds` of the running fleet: stored samples/s, lag (the worst second's p99), backlog, CPU, RSS. */
async function measureWindow(system: System, fleets: readonly Fleet[], seconds: number): Promise<Window> {
  const fleetCpu = () => fleets.reduce((s, f) => s + (f.child.pid === undefined ? 0 : cpuMs(f.child.pid)), 0)
  const systemCpu = () => system.pids.reduce((s, pid) => s + cpuMs(pid), 0)
  const s0 = await system.stored(), c0 = systemCpu(), f0 = fleetCpu(), t0 = Date.now()
  const seenFrom = fleets.map((f) => f.reports.length)
  const rss: number[] = []
  for (let i = 0; i < seconds; i++) {
    await sleep(1000)
    rss.push(system.pids.reduce((s, pid) => s + rssBytes(pid), 0))
  }
  const s1 = await system.stored(), c1 = systemCpu(), f1 = fleetCpu(), t1 = Date.now()
  // Each report covers the samples acked (or committed) in its second: the worst second's p99 is the window's.
  const lagReports: readonly LagReport[] = system.lagReports?.().filter((r) => r.t >= t0 && r.t <= t1)
    ?? fleets.flatMap((f, i) => f.reports.slice(seenFrom[i]))
  const timed = lagReports.filter((r) => r.lagCount > 0)
  const p50s = timed.map((r) => r.lagP50Ms).sort((a, b) => a - b)
  return {
    storedPerS: (s1 - s0) / ((t1 - t0) / 1000),
    lagP50Ms: p50s[Math.floor(p50s.length / 2)] ?? 0, lagP99Ms: Math.max(0, ...timed.map((r) => r.lagP99Ms)),
    backlog: fleets.reduce((s, f) => s + (f.last()?.backlog ?? 0), 0),
    cpuPct: ((c1 - c0) / (t1 - t0)) * 100, fleetCpuPct: ((f1 - f0) / (t1 - t0)) * 100, rssBytes: Math.max(0, ...rss),
  }
}

async function measureStep(system: System, work: string, devices: Array<{ id: string; token: string }>, o: FleetCapacityOptions): Promise<Step> {
  let fleets: Fleet[] = []
  try {
    const limits0 = await system.limits?.()
    fleets = await startStepFleets(system, work, devices, o, String(devices.length))
    await sleep(o.warmupS * 1000)
    const r0 = await system.writeReleases?.()
    const w = await measureWindow(system, fleets, o.measureS)
    const r1 = await system.writeReleases?.()
    const limits1 = await system.limits?.()
    const released = r0 && r1 ? (r1.commit - r0.commit) + (r1.timer - r0.timer) : 0
    const hit = limits0 && limits1 ? Object.entries(limits1).map(([k, v]) => [k, v - (limits0[k] ?? 0)] as const).filter(([, v]) => v > 0) : []
    const step: Step = {
      system: system.name, devices: devices.length, connected: connectedOf(fleets), ...w,
      fleetRssBytes: fleets.reduce((s, f) => s + (f.last()?.rssBytes ?? 0), 0),
      holds: false,
      limitsHit: hit.map(([k, v]) => `${k} ${v}`).join(', '),
      timerReleasePct: r0 && r1 && released > 0 ? ((r1.timer - r0.timer) / released) * 100 : undefined,
    }
    return { ...step, holds: step.connected === devices.length && step.lagP99Ms < o.lagLimitMs && step.storedPerS >= devices.length * 0.95 }
  } finally {
    await Promise.allSettled(fleets.map((f) => f.stop()))
    rmSync(join(work, `agents-${devices.length}`), { recursive: true, force: true })
  }
}

interface Overload {
  readonly system: string
  readonly devices: number
  readonly factor: number
  readonly peak: Window
  readonly over: Window
  readonly drainS: number | undefined
  readonly generated: number
  readonly acked: number
  readonly stored: number
  readonly lost: number
  readonly duplicates: number
}

/**
 * The overload step: `devices` at 1 sample/s (the peak), then `factor` times
 * that rate on the same connections, then back to 1x; then sampling stops, the
 * fleet drains (or 3 min pass), and what it generated is counted against the
 * system's database.
 */
async function measureOverload(system: System, work: string, devices: Array<{ id: string; token: string }>, o: FleetCapacityOptions, factor: number): Promise<Overload> {
  let fleets: Fleet[] = []
  try {
    fleets = await startStepFleets(system, work, devices, o, 'overload')
    await sleep(o.warmupS * 1000)
    const peak = await measureWindow(system, fleets, o.measureS)
    for (const f of fleets) f.child.kill('SIGUSR1')
    await sleep(o.warmupS * 1000)
    const over = await measureWindow(system, fleets, o.measureS)
    process.stderr.write(`  ${system.name}, ${devices.length} devices: ${peak.storedPerS.toFixed(0)} samples/s stored at 1x, ${over.storedPerS.toFixed(0)} at ${factor}x (lag p99 ${over.lagP99Ms.toFixed(0)} ms, backlog ${over.backlog}); draining\n`)
    for (const f of fleets) f.child.kill('SIGUSR1')
    for (const f of fleets) f.child.kill('SIGUSR2')
    const drainStart = Date.now()
    let drainS: number | undefined
    while (Date.now() - drainStart < 180_000) {
      await sleep(500)
      const seen = fleets.map((f) => f.reports.length)
      const t = fleets.map((f) => f.last())
      if (t.every((r) => r !== undefined && r.t >= drainStart && r.backlog === 0 && r.acked === r.generated)) {
        drainS = (Date.now() - drainStart) / 1000
        // One more report from each, so every ack is in the counts (and the baseline's last commit lands).
        while (fleets.some((f, i) => f.reports.length <= seen[i]!)) await sleep(100)
        await sleep(1000)
        break
      }
    }
    await Promise.allSettled(fleets.map((f) => f.stop()))
    const finals = fleets.map((f) => f.last())
    const generated = finals.reduce((s, r) => s + (r?.generated ?? 0), 0)
    const acked = finals.reduce((s, r) => s + (r?.acked ?? 0), 0)
    const c = system.counts()
    return { system: system.name, devices: devices.length, factor, peak, over, drainS, generated, acked, stored: c.distinct, lost: generated - c.distinct, duplicates: c.rows - c.distinct }
  } finally {
    await Promise.allSettled(fleets.map((f) => f.stop()))
    rmSync(join(work, 'agents-overload'), { recursive: true, force: true })
  }
}

async function runSteps(system: System, work: string, o: FleetCapacityOptions, steps: Step[]): Promise<void> {
  try {
    for (const n of o.steps) {
      const step = await measureStep(system, work, await system.devices(n), o)
      steps.push(step)
      process.stderr.write(`  ${system.name}, ${n} devices: ${step.connected} connected, ${step.storedPerS.toFixed(0)} samples/s stored, lag p50/p99 ${step.lagP50Ms.toFixed(0)}/${step.lagP99Ms.toFixed(0)} ms, CPU ${step.cpuPct.toFixed(0)}% (fleet ${step.fleetCpuPct.toFixed(0)}%), ${step.holds ? 'holds' : 'does not hold'}${step.timerReleasePct === undefined ? '' : `, writes released by timer ${step.timerReleasePct.toFixed(1)}%`}${step.limitsHit ? `; limits hit: ${step.limitsHit}` : ''}\n`)
      if (!step.holds && !o.allSteps) break
      await sleep(2000)
    }
  } finally {
    await system.stop()
  }
}

export async function runFleetCapacityBench(o: FleetCapacityOptions): Promise<void> {
  if (o.hubs.includes('mosquitto') && !o.thin) throw new Error('--hub mosquitto runs with --thin: real agents would need accounts on the broker')
  if (o.baselines.length > 0 && !o.thin) throw new Error('--baseline runs with --thin: the baselines\' devices are thin clients that take PUBACK as the ack')
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-fleet-'))
  const steps: Step[] = []
  const overloads: Overload[] = []
  try {
    process.stderr.write(`fleet bench (${o.thin ? 'thin devices: bare protocol clients' : 'real agents'}): steps ${o.steps.join(', ')} devices at 1 sample/s each; warm-up ${o.warmupS}s, measure ${o.measureS}s per step; holds while ingest lag p99 < ${o.lagLimitMs} ms\n`)
    const systems: Array<{ name: string; make: (dir: string) => Promise<System> }> = [
      ...o.hubs.map((hub) => ({ name: hub === 'mosquitto' ? 'rollcall on mosquitto' : 'rollcall', make: (dir: string) => rollcallSystem(work, o, dir, hub === 'mosquitto') })),
      ...o.baselines.map((kind) => ({ name: kind === 'mosquitto' ? 'mosquitto + store' : 'aedes + store', make: (dir: string) => baselineSystem(kind, work, dir) })),
    ]
    for (const [i, sys] of systems.entries()) await runSteps(await sys.make(`system-${i}`), work, o, steps)
    if (o.overload !== undefined) {
      process.stderr.write(`overload: each system's largest held fleet on a fresh system, at 1x then ${o.overload}x the sample rate, then drained and counted\n`)
      for (const [i, sys] of systems.entries()) {
        const best = steps.filter((s) => s.system === sys.name && s.holds).at(-1)
        if (best === undefined) {
          process.stderr.write(`  ${sys.name}: no step held, no overload step\n`)
          continue
        }
        const system = await sys.make(`overload-${i}`)
        try {
          overloads.push(await measureOverload(system, work, await system.devices(best.devices), o, o.overload))
        } finally {
          await system.stop()
        }
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  const rows: string[][] = [['system', 'devices', 'connected', 'samples/s stored', 'lag p50 / p99 ms', 'backlog', 'CPU', 'fleet CPU', 'RSS', 'fleet RSS', '']]
  for (const s of steps) {
    rows.push([s.system, String(s.devices), String(s.connected), s.storedPerS.toFixed(0), `${s.lagP50Ms.toFixed(0)} / ${s.lagP99Ms.toFixed(0)}`, String(s.backlog),
      `${s.cpuPct.toFixed(0)}%`, `${s.fleetCpuPct.toFixed(0)}%`, mb(s.rssBytes), mb(s.fleetRssBytes), s.holds ? 'holds' : 'over the limit'])
  }
  process.stdout.write(`${table(rows)}\n`)
  for (const name of [...new Set(steps.map((s) => s.system))]) {
    const best = steps.filter((s) => s.system === name && s.holds).at(-1)
    const cost = best ? `, ${((best.cpuPct / 100) * 1e6 / best.storedPerS).toFixed(0)} µs of CPU per one-sample message` : ''
    process.stdout.write(`${name}: largest fleet held with ingest lag p99 < ${o.lagLimitMs} ms: ${best ? `${best.devices} devices (${best.storedPerS.toFixed(0)} samples/s)${cost}` : 'none of the steps'}\n`)
  }
  if (overloads.length > 0) printOverloads(overloads)
}

function printOverloads(overloads: readonly Overload[]): void {
  const rows: string[][] = [['system', 'devices', 'stored/s at 1x', 'stored/s overloaded', 'of 1x', 'lag p99 ms', 'backlog', 'CPU', 'drained in', 'generated', 'stored', 'lost', 'duplicates']]
  for (const v of overloads) {
    rows.push([v.system, String(v.devices), v.peak.storedPerS.toFixed(0), `${v.over.storedPerS.toFixed(0)} (${v.factor}x offered)`, `${((v.over.storedPerS / v.peak.storedPerS) * 100).toFixed(0)}%`,
      v.over.lagP99Ms.toFixed(0), String(v.over.backlog), `${v.over.cpuPct.toFixed(0)}%`, v.drainS === undefined ? 'not in 180 s' : `${v.drainS.toFixed(1)} s`,
      String(v.generated), String(v.stored), String(v.lost), String(v.duplicates)])
  }
  process.stdout.write(`\n${table(rows)}\n`)
}
