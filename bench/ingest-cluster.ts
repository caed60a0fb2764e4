import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FleetSpec } from '../devices-sim/fleet-runner.js'
import { percentiles } from '../common/latency.js'
import { table } from '../cli/output.js'
import { provision, startFleet } from './fleet.js'
import { startHubProcess, type HubProcess } from './hub-process.js'
import { startDynsecBroker } from './mosquitto-dynsec.js'
import { startPostgres, type PostgresCluster } from './postgres-cluster.js'
import { cpuMs, reapedChildrenCpuMs, withChildren } from './proc-stats.js'

/**
 * `npm run bench -- ingest --cluster`: the same fleet of agents (one process)
 * streams, in one run, to an embedded hub (its own broker, SQLite), then to
 * one and to two hub processes on an external Mosquitto (dynamic security)
 * and one PostgreSQL (issue #18). Every part runs on this machine, so the
 * cluster's figures say what its extra hops cost here, not what several
 * machines would hold: docs/scale-out.md reads them.
 */

export interface ClusterIngestOptions {
  readonly devices: number
  readonly sensors: number
  readonly intervalMs: number
  readonly warmupS: number
  readonly measureS: number
  /** Bare protocol clients (bench/thin-fleet-runner.ts), one sample per message, split over two processes: a lighter load generator, for many devices. */
  readonly thin: boolean
}

interface Setup {
  readonly name: string
  readonly hubs: readonly HubProcess[]
  /** Where the agents connect. */
  readonly mqttUrl: string
  /** Other processes whose CPU counts (the broker; PostgreSQL's processes, listed again at each reading), by name; `reaped`: whose ended children count too. */
  readonly others: ReadonlyArray<{ readonly name: string; readonly pids: () => number[]; readonly reaped?: number }>
  stop(): Promise<void>
}

interface Measured {
  readonly storedPerS: number
  readonly generatedPerS: number
  readonly ackP50Ms: number
  readonly ackP99Ms: number
  readonly hubCpuPct: number
  readonly otherCpuPct: Readonly<Record<string, number>>
  readonly fleetCpuPct: number
  readonly backlog: number
  readonly connected: number
}

/** CPU ms used so far by each process that is still there. */
function cpuOf(pids: readonly number[]): Map<number, number> {
  const out = new Map<number, number>()
  for (const p of pids) {
    try {
      out.set(p, cpuMs(p))
    } catch {
      // Gone meanwhile (a PostgreSQL backend whose connection ended).
    }
  }
  return out
}

/** CPU ms used between two readings, by the processes in both. */
function cpuBetween(a: Map<number, number>, b: Map<number, number>): number {
  let ms = 0
  for (const [pid, at] of b) {
    const before = a.get(pid)
    if (before !== undefined) ms += at - before
  }
  return ms
}

async function measure(o: ClusterIngestOptions, work: string, setup: Setup): Promise<Measured> {
  const devices = await provision(setup.hubs[0]!, o.devices)
  const parts = o.thin ? 2 : 1
  const fleets = Array.from({ length: parts }, (_, k) => {
    const spec: FleetSpec = {
      hub: setup.mqttUrl, dataDir: join(work, `agents-${k}`), devices: devices.filter((_, i) => i % parts === k), reportEveryMs: 1000, staggerMs: o.thin ? 5000 : 2000,
      agent: {
        builtinSensors: false, sampleIntervalMs: o.intervalMs, keepaliveSec: 30,
        sensors: Array.from({ length: o.sensors }, (_, i) => ({ name: `s${i}`, model: 'random-walk' as const, min: 0, max: 100 })),
      },
    }
    const specPath = join(work, `fleet-${k}.json`)
    writeFileSync(specPath, JSON.stringify(spec))
    return startFleet(specPath, o.thin)
  })
  // The fleet's figures, summed over its processes (latencies: the slower process's).
  const fleet = {
    last: () => {
      const r = fleets.map((f) => f.last())
      if (r.some((x) => x === undefined)) return undefined
      const all = r as NonNullable<(typeof r)[number]>[]
      return {
        t: Math.max(...all.map((x) => x.t)), each: all, backlog: all.reduce((n, x) => n + x.backlog, 0),
        connected: all.reduce((n, x) => n + x.connected, 0), ackP50Ms: Math.max(...all.map((x) => x.ackP50Ms)), ackP99Ms: Math.max(...all.map((x) => x.ackP99Ms)),
      }
    },
    pids: () => fleets.map((f) => f.child.pid!),
    stop: () => Promise.all(fleets.map((f) => f.stop())),
  }
  try {
    const stored = async () => {
      let n = 0
      for (const h of setup.hubs) n += (await h.api<{ ingest: { samplesStored: number } }>('GET', '/api/stats')).body.ingest.samplesStored
      return n
    }
    await sleep((o.warmupS + 2) * 1000)
    const cpus = () => ({
      hubs: cpuOf(setup.hubs.map((h) => h.pid)), fleet: cpuOf(fleet.pids()),
      others: setup.others.map((x) => ({ live: cpuOf(x.pids()), reaped: x.reaped === undefined ? 0 : reapedChildrenCpuMs(x.reaped) })),
    })
    const s0 = await stored(), f0 = fleet.last(), c0 = cpus(), t0 = Date.now()
    const p50s: number[] = []
    const p99s: number[] = []
    for (let i = 0; i < o.measureS; i++) {
      await sleep(1000)
      const r = fleet.last()
      if (r) { p50s.push(r.ackP50Ms); p99s.push(r.ackP99Ms) }
    }
    const s1 = await stored(), f1 = fleet.last(), c1 = cpus(), t1 = Date.now()
    const ms = t1 - t0
    return {
      storedPerS: (s1 - s0) / (ms / 1000),
      // Each process's own rate over its own reports, summed.
      generatedPerS: f0 && f1 ? f1.each.reduce((n, x, k) => n + (x.generated - f0.each[k]!.generated) / Math.max(0.001, (x.t - f0.each[k]!.t) / 1000), 0) : 0,
      ackP50Ms: percentiles(p50s).p50,
      ackP99Ms: percentiles(p99s).p50,
      hubCpuPct: (cpuBetween(c0.hubs, c1.hubs) / ms) * 100,
      // A backend that ended during the window: its time until then is in its parent's count of reaped children (not the part before t0: a small overcount).
      otherCpuPct: Object.fromEntries(setup.others.map((x, i) => [x.name, ((cpuBetween(c0.others[i]!.live, c1.others[i]!.live) + c1.others[i]!.reaped - c0.others[i]!.reaped) / ms) * 100])),
      fleetCpuPct: (cpuBetween(c0.fleet, c1.fleet) / ms) * 100,
      backlog: f1?.backlog ?? 0,
      connected: f1?.connected ?? 0,
    }
  } finally {
    await fleet.stop()
  }
}

async function embedded(work: string): Promise<Setup> {
  const dir = join(work, 'hub')
  mkdirSync(dir, { recursive: true })
  const hub = await startHubProcess(dir)
  return { name: 'embedded hub (SQLite)', hubs: [hub], mqttUrl: `mqtt://127.0.0.1:${hub.mqttPort}`, others: [], stop: () => hub.stop() }
}

async function cluster(work: string, hubs: number): Promise<Setup> {
  mkdirSync(join(work, 'broker'), { recursive: true })
  const broker = await startDynsecBroker(join(work, 'broker'))
  // Its own temp dir: startPostgres hands it to the postgres user.
  const pgDir = mkdtempSync(join(tmpdir(), 'rollcall-bench-pg-'))
  let pg: PostgresCluster | undefined
  const procs: HubProcess[] = []
  const stop = async () => {
    try {
      for (const h of procs) await h.stop()
    } finally {
      await broker.stop()
      await pg?.stop()
      rmSync(pgDir, { recursive: true, force: true })
    }
  }
  try {
    // PostgreSQL as it ships: fsync on, as a server would run.
    pg = await startPostgres(pgDir, { fsync: true })
    const flags = ['--broker', broker.url, '--broker-username', broker.adminUser, '--broker-password-file', broker.adminPasswordFile, '--database', pg.url]
    for (let i = 0; i < hubs; i++) {
      const dir = join(work, `hub-${i}`)
      mkdirSync(dir, { recursive: true })
      procs.push(await startHubProcess(dir, flags))
    }
    const postmaster = Number(readFileSync(join(pgDir, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0])
    return {
      name: `${hubs} hub${hubs === 1 ? '' : 's'}, Mosquitto + PostgreSQL`, hubs: procs, mqttUrl: broker.url, stop,
      others: [{ name: 'Mosquitto', pids: () => [broker.child.pid!] }, { name: 'PostgreSQL', pids: () => withChildren(postmaster), reaped: postmaster }],
    }
  } catch (err) {
    await stop()
    throw err
  }
}

export async function runClusterIngestBench(o: ClusterIngestOptions): Promise<void> {
  const offered = (o.devices * o.sensors * 1000) / o.intervalMs
  process.stderr.write(`ingest bench, cluster: ${o.devices} ${o.thin ? 'thin devices (bare protocol clients, 1 sample per message)' : 'agents'} x ${o.sensors} sensors every ${o.intervalMs} ms = ${offered.toFixed(0)} samples/s offered, to an embedded hub, then 1 and 2 hubs on Mosquitto + PostgreSQL; warmup ${o.warmupS}s, measure ${o.measureS}s each\n`)
  const results: Array<{ name: string; m: Measured }> = []
  for (const make of [(w: string) => embedded(w), (w: string) => cluster(w, 1), (w: string) => cluster(w, 2)]) {
    const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-'))
    try {
      const setup = await make(work)
      process.stderr.write(`${setup.name}...\n`)
      try {
        results.push({ name: setup.name, m: await measure(o, work, setup) })
      } finally {
        await setup.stop()
      }
    } finally {
      rmSync(work, { recursive: true, force: true })
    }
  }
  const col = (f: (m: Measured) => string) => results.map((r) => f(r.m))
  const pct = (n: number | undefined) => (n === undefined ? '-' : `${n.toFixed(0)}%`)
  const rows: string[][] = [
    ['', ...results.map((r) => r.name)],
    ['samples/s stored (durable, deduped)', ...col((m) => m.storedPerS.toFixed(0))],
    ['samples/s generated by the fleet', ...col((m) => m.generatedPerS.toFixed(0))],
    ['ack latency p50 / p99 (send → durable ack)', ...col((m) => `${m.ackP50Ms.toFixed(1)} / ${m.ackP99Ms.toFixed(1)} ms`)],
    ['hub process(es) CPU', ...col((m) => pct(m.hubCpuPct))],
    ['Mosquitto CPU', ...col((m) => pct(m.otherCpuPct.Mosquitto))],
    ['PostgreSQL CPU (all its processes)', ...col((m) => pct(m.otherCpuPct.PostgreSQL))],
    [o.thin ? 'fleet processes CPU (two)' : 'fleet process CPU', ...col((m) => pct(m.fleetCpuPct))],
    ['fleet: connected / backlog at end', ...col((m) => `${m.connected} / ${m.backlog}`)],
  ]
  process.stdout.write(`${table(rows)}\n`)
}
