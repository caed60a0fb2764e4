import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../common/logger.js'
import { clockWithTime, type Clock } from '../common/clock.js'
import { buildApi } from '../hub/api/app.js'
import { sseFrame } from '../hub/api/live.js'
import { loadHubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { createLiveFeed } from '../hub/observe/live-feed.js'

/**
 * `npm run bench -- live`: what keeping dashboards up to date costs the hub,
 * against the baseline of each dashboard polling `GET /api/devices` once a
 * second (what a dashboard without the live feed would do).
 *
 * For each fleet size, every device is online and "samples" once a second
 * (its lastSeen moves), and 1% change presence each second. Then for one
 * simulated second, with `clients` dashboards open:
 * - live feed: one tick, which reads the fleet, diffs it and hands each
 *   client the changed rows as the HTTP route frames them (serialised once);
 * - polling: each client's GET /api/devices, through the real route
 *   (fastify's inject: handler and serialisation, no socket).
 * Times are the median of `rounds` seconds, in this process, on the hub's own
 * stores; bytes are what each client receives per second.
 */
export interface LiveBenchOptions {
  readonly devices: readonly number[]
  readonly clients: number
  readonly rounds: number
}

export async function runLiveBench(o: LiveBenchOptions): Promise<void> {
  console.log(`live feed vs polling: ${o.clients} dashboards, median of ${o.rounds} simulated seconds`)
  console.log('devices | feed tick ms | feed KB/client/s | poll ms (all clients) | poll KB/client/s | snapshot KB')
  for (const n of o.devices) await oneSize(n, o)
}

async function oneSize(n: number, o: LiveBenchOptions): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'rollcall-bench-live-'))
  // A clock the bench moves by one second per round, so lastSeen steps are what a real second makes.
  let now = Date.now()
  const clock: Clock = clockWithTime(() => now)
  const hub = createHub(loadHubConfig({ dataDir: dir, mqttPort: 0, httpPort: 0, logLevel: 'silent' }, {}), { logger: silentLogger(), clock })
  try {
    const running = await hub.start()
    const s = running.services
    const ids = Array.from({ length: n }, (_, i) => `bench-${String(i).padStart(5, '0')}`)
    for (const id of ids) await s.registry.addDevice(id, 'bench', now)
    ids.forEach((id, i) => {
      s.presence.apply(id, { type: 'connected', connId: i + 1, at: now })
      s.presence.apply(id, { type: 'birth', epoch: 1, storeId: 'bench-store-1', at: now },
        { type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: '0.1.0', storeId: 'bench-store-1', capabilities: [] })
    })

    const feed = createLiveFeed({ tickMs: 60_000, lastSeenStepMs: 5000, jobsShown: 50 }, {
      registry: s.registry, presence: s.presence, telemetry: s.telemetry, jobs: s.jobs, clock, logger: silentLogger(),
    })
    let bytes = 0
    let snapshotBytes = 0
    for (let c = 0; c < o.clients; c++) {
      feed.subscribe({ fleet: true, jobs: false, devices: [] }, (event, data) => {
        const size = sseFrame(event, data).length
        if (event === 'fleet') snapshotBytes = size
        else bytes += size
        return true
      }, () => {})
    }
    const api = buildApi(s, { adminToken: running.adminToken, logger: silentLogger() })
    await api.ready()

    const feedMs: number[] = []
    const pollMs: number[] = []
    const feedBytes: number[] = []
    let pollBytes = 0
    const flipping = Math.max(1, Math.floor(n / 100))
    for (let r = 0; r < o.rounds + 5; r++) {
      now += 1000
      for (const id of ids) s.presence.touch(id, now, 0)
      for (let k = 0; k < flipping; k++) {
        const i = (r * flipping + k) % n
        s.presence.apply(ids[i]!, { type: 'disconnected', connId: i + 1, reason: 'bench', at: now })
        s.presence.apply(ids[i]!, { type: 'connected', connId: i + 1, at: now })
      }
      bytes = 0
      let t0 = performance.now()
      feed.tickNow()
      const tick = performance.now() - t0
      t0 = performance.now()
      for (let c = 0; c < o.clients; c++) {
        const res = await api.inject({ method: 'GET', url: '/api/devices', headers: { authorization: `Bearer ${running.adminToken}` } })
        pollBytes = res.rawPayload.length
      }
      const poll = performance.now() - t0
      // The first rounds warm up (and the first tick after the snapshot re-sends the rows whose lastSeen moved).
      if (r >= 5) {
        feedMs.push(tick)
        pollMs.push(poll)
        feedBytes.push(bytes / o.clients)
      }
    }
    feed.close()
    await api.close()
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
    const kb = (b: number) => (b / 1024).toFixed(1)
    console.log(`${String(n).padStart(7)} | ${med(feedMs).toFixed(2).padStart(12)} | ${kb(med(feedBytes)).padStart(16)} | ${med(pollMs).toFixed(1).padStart(21)} | ${kb(pollBytes).padStart(16)} | ${kb(snapshotBytes).padStart(11)}`)
  } finally {
    await hub.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
