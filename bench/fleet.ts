import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import type { HubProcess } from './hub-process.js'
import type { FleetReport, FleetSpec } from '../devices-sim/fleet-runner.js'

/** Helpers the benchmarks share: provisioning devices on a hub and running fleets of real agents in child processes. */

const FLEET_RUNNER = fileURLToPath(new URL('../devices-sim/fleet-runner.js', import.meta.url))
const THIN_FLEET_RUNNER = fileURLToPath(new URL('./thin-fleet-runner.js', import.meta.url))

export interface Fleet {
  readonly child: ReturnType<typeof spawn>
  readonly reports: FleetReport[]
  last(): FleetReport | undefined
  stop(): Promise<void>
}

/** Runs `node fleet-runner.js SPEC` (real agents; `thin`: bare protocol clients) and collects its one-line JSON reports. */
export function startFleet(specPath: string, thin = false): Fleet {
  const child = spawn(process.execPath, [thin ? THIN_FLEET_RUNNER : FLEET_RUNNER, specPath], { stdio: ['ignore', 'pipe', 'inherit'] })
  const reports: FleetReport[] = []
  createInterface({ input: child.stdout }).on('line', (l) => { try { reports.push(JSON.parse(l) as FleetReport) } catch { /* not a report */ } })
  return {
    child, reports,
    last: () => reports[reports.length - 1],
    async stop() {
      if (child.exitCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await Promise.race([exited, sleep(15_000)])
    },
  }
}

/** Registers `n` devices named `{prefix}-00000`..., 50 requests at a time; returns their tokens. */
export async function provision(hub: HubProcess, n: number, prefix = 'bench'): Promise<Array<{ id: string; token: string }>> {
  const out: Array<{ id: string; token: string }> = []
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, async (_, j) => {
      const id = `${prefix}-${String(i + j).padStart(5, '0')}`
      let r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
      // On an external Mosquitto an account write can time out while the broker rewrites its
      // dynamic-security file (slower as it grows: benchmarks.md, "Registering devices on Mosquitto"): asked again.
      for (let attempt = 1; r.status === 503 && attempt < 4; attempt++) r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
      if (r.status !== 201) throw new Error(`provisioning ${id}: ${r.status}`)
      return { id, token: r.body.token }
    }))
    out.push(...batch)
  }
  return out
}

/**
 * Idle agents (no sensors) for `devices`, split over two fleet processes (one
 * per core), waiting until the hub counts them all online (at most 120 s).
 * The caller stops the fleets.
 */
export async function startIdleFleets(hub: HubProcess, work: string, devices: ReadonlyArray<{ id: string; token: string }>, fleets: Fleet[]): Promise<void> {
  const half = Math.ceil(devices.length / 2)
  const halves = [devices.slice(0, half), devices.slice(half)].filter((h) => h.length > 0)
  for (const [i, part] of halves.entries()) {
    const spec: FleetSpec = {
      hub: `mqtt://127.0.0.1:${hub.mqttPort}`, dataDir: join(work, `agents-${i}`), devices: part, reportEveryMs: 1000, staggerMs: 3000,
      agent: { builtinSensors: false, sampleIntervalMs: 0, keepaliveSec: 60 },
    }
    const specPath = join(work, `fleet-${i}.json`)
    writeFileSync(specPath, JSON.stringify(spec))
    fleets.push(startFleet(specPath))
  }
  const online = async () => (await hub.api<{ devices: { online: number } }>('GET', '/healthz')).body.devices.online
  const deadline = Date.now() + 120_000
  while ((await online()) < devices.length) {
    if (Date.now() > deadline) throw new Error(`only ${await online()} of ${devices.length} agents came online in 120 s`)
    await sleep(250)
  }
}

/** Registers devices `fleet-{from}`..`fleet-{to - 1}` through the bulk API, 1,000 a request; returns their tokens. */
export async function provisionBulk(hub: HubProcess, from: number, to: number): Promise<Array<{ id: string; token: string }>> {
  const out: Array<{ id: string; token: string }> = []
  for (let i = from; i < to; i += 1000) {
    const ids = Array.from({ length: Math.min(1000, to - i) }, (_, k) => `fleet-${String(i + k).padStart(5, '0')}`)
    const r = await hub.api<{ devices: Array<{ id: string; token: string }> }>('POST', '/api/devices/bulk', { devices: ids.map((id) => ({ id })), existing: 'rotate' })
    if (r.status !== 200) throw new Error(`provisioning: ${r.status} ${JSON.stringify(r.body)}`)
    out.push(...r.body.devices)
  }
  return out
}

/**
 * Writes the hub config the fleet benches run with and returns its path.
 * Every bench device connects from 127.0.0.1, where a real fleet comes from
 * many addresses: the per-address cap on sockets awaiting CONNECT is raised
 * to the global one, or a connect ramp would trip it. `extra`: more keys.
 */
export function benchHubConfig(work: string, extra: Readonly<Record<string, unknown>> = {}): string {
  const path = join(work, 'hub.json')
  writeFileSync(path, JSON.stringify({ maxPendingPerAddress: 1000, maxPendingConnections: 1000, ...extra }))
  return path
}
