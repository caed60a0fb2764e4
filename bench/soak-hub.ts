import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI_PATH, startHubProcess, type HubProcess } from './hub-process.js'
import { rssBytes } from './proc-stats.js'
import {
  fdCount, fileBytes, floors, pause, startBaseline, stopChild, summarize, table, warmupHours, withInterrupts, writeCsv,
  type Baseline, type Point, type SeriesSummary,
} from './soak-stats.js'

/**
 * `npm run bench -- soak-hub` (issue #13, long-running health): a hub
 * process with a fleet of real agents (`rollcall sim`, in a process of its
 * own so the hub is measured alone) whose connections drop and come back
 * every few minutes: by turns a partition of half the fleet for a while
 * and a reconnect burst of the whole fleet (the simulator's chaos, through
 * its per-device loopback proxies, so the hub sees real sockets close). The
 * fleet samples 3 sensors every 10 s (the agent's default rate), gets a job
 * every minute and a command every second. Every 10 s the hub is sampled from
 * outside (/proc: RSS, open fds; hub.db and its WAL) and from its /metrics
 * (V8 heap, active handles and resources, from prom-client's process
 * metrics). A bare Node process sampled the same way is the baseline of
 * "flat". The simulator's own accounting says whether any sample or job was
 * lost or duplicated.
 */
export interface SoakHubOptions {
  readonly agents: number
  readonly minutes: number
  readonly outageEveryMs: number
  readonly outageMs: number
  /** Write every sample here as CSV (series,hours,value). */
  readonly csvPath?: string | undefined
}

const SAMPLE_EVERY_MS = 10_000
/** The simulator drains and counts after its duration; past this the soak stops it. */
const SIM_GRACE_MS = 600_000

/** The chaos spec: an event every outageEveryMs, partitions and reconnect bursts by turns, the last well before the end. */
export function soakChaosSpec(runMs: number, everyMs: number, outageMs: number): string {
  const events: string[] = []
  for (let at = everyMs, i = 0; at + outageMs + 30_000 <= runMs; at += everyMs, i++) {
    events.push(i % 2 === 0 ? `partition=50%@${at / 1000}s+${outageMs / 1000}s` : `reconnect-burst=100%@${at / 1000}s`)
  }
  return events.join(',')
}

/** Values of unlabelled metrics in a Prometheus text exposition. */
function metricValues(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^([a-z_:][a-z0-9_:]*) ([-+0-9.eE]+|NaN)$/.exec(line)
    if (m) out.set(m[1]!, Number(m[2]))
  }
  return out
}

interface SimReport {
  readonly ok: boolean
  readonly totals: {
    readonly generated: number; readonly stored: number; readonly lost: number; readonly duplicates: number; readonly dropped: number
    readonly jobs: { readonly issued: number; readonly finished: number; readonly lost: number; readonly duplicates: number }
    readonly commands: { readonly sent: number; readonly byOutcome: Record<string, number> }
  }
  readonly hubAgrees: boolean
  readonly schedule: readonly string[]
}

export async function runSoakHubBench(o: SoakHubOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-soak-hub-'))
  const hubDir = join(work, 'hub')
  const bareStatsPath = join(work, 'bare-stats.json')
  const runMs = o.minutes * 60_000
  const warmupH = warmupHours(o.minutes)
  let hub: HubProcess | undefined
  let sim: ChildProcess | undefined
  let baseline: Baseline | undefined
  try {
    await withInterrupts(async (aborted) => {
      hub = await startHubProcess(hubDir)
      const h = hub
      const chaos = soakChaosSpec(runMs, o.outageEveryMs, o.outageMs)
      let simOut = ''
      let simErr = ''
      sim = spawn(process.execPath, [
        CLI_PATH, 'sim', '--devices', String(o.agents), '--duration', `${o.minutes}m`,
        '--hub', `mqtt://127.0.0.1:${h.mqttPort}`, '--api', `http://127.0.0.1:${h.httpPort}`,
        '--profile', 'steady', '--rate', '6/min', '--jobs-every', '60s', '--commands-every', '1s', '--seed', '13',
        '--work', join(work, 'sim'), '--json', ...(chaos === '' ? [] : ['--chaos', chaos]),
      ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ROLLCALL_ADMIN_TOKEN: h.adminToken } })
      sim.stdout!.on('data', (d: Buffer) => { simOut += d.toString() })
      sim.stderr!.on('data', (d: Buffer) => { simErr = (simErr + d.toString()).slice(-4000) })
      const simExited = new Promise<void>((r) => sim!.once('exit', () => r()))
      baseline = startBaseline(bareStatsPath)
      const bare = baseline
      await bare.started(aborted)
      const t0 = Date.now()
      process.stderr.write(`soak-hub: ${o.agents} agents for ${o.minutes} min, hub pid ${h.pid}, sim pid ${sim.pid}; chaos ${chaos || 'none'}\n`)

      const s = {
        rss: [] as Point[], heapUsed: [] as Point[], heapTotal: [] as Point[], external: [] as Point[], fds: [] as Point[],
        native: [] as Point[], handles: [] as Point[], resources: [] as Point[], db: [] as Point[], wal: [] as Point[], online: [] as Point[],
      }
      let storedTotal = 0
      const sample = async () => {
        if (h.child.exitCode !== null || h.child.signalCode !== null) throw new Error(`the hub exited (${h.child.exitCode ?? h.child.signalCode}):\n${h.stderr()}`)
        const hr = (Date.now() - t0) / 3_600_000
        s.rss.push({ h: hr, v: rssBytes(h.pid) })
        s.fds.push({ h: hr, v: fdCount(h.pid) })
        s.db.push({ h: hr, v: fileBytes(join(hubDir, 'hub.db')) })
        s.wal.push({ h: hr, v: fileBytes(join(hubDir, 'hub.db-wal')) })
        const res = await fetch(`http://127.0.0.1:${h.httpPort}/metrics`, { headers: { authorization: `Bearer ${h.adminToken}` } })
        const m = metricValues(await res.text())
        const put = (series: Point[], name: string) => { const v = m.get(name); if (v !== undefined) series.push({ h: hr, v }) }
        put(s.heapUsed, 'rollcall_nodejs_heap_size_used_bytes')
        put(s.heapTotal, 'rollcall_nodejs_heap_size_total_bytes')
        put(s.external, 'rollcall_nodejs_external_memory_bytes')
        // What RSS holds besides V8's heap and buffers: SQLite's page cache, malloc, code.
        const heapTotal = m.get('rollcall_nodejs_heap_size_total_bytes')
        const external = m.get('rollcall_nodejs_external_memory_bytes')
        if (heapTotal !== undefined && external !== undefined) s.native.push({ h: hr, v: s.rss.at(-1)!.v - heapTotal - external })
        put(s.handles, 'rollcall_nodejs_active_handles_total')
        put(s.resources, 'rollcall_nodejs_active_resources_total')
        storedTotal = m.get('rollcall_ingest_samples_stored_total') ?? storedTotal
        const health = await h.api<{ devices: { online: number } }>('GET', '/healthz')
        s.online.push({ h: hr, v: health.body.devices.online })
        bare.sample(hr)
      }

      let next = t0
      let done = false
      void simExited.then(() => { done = true })
      while (!done) {
        if (Date.now() - t0 > runMs + SIM_GRACE_MS) throw new Error(`the simulator did not finish ${SIM_GRACE_MS / 60_000} min after its duration:\n${simErr}`)
        await sample()
        if (s.rss.length % 6 === 1) {
          process.stderr.write(`  ${((Date.now() - t0) / 60_000).toFixed(1)} min: hub rss ${(s.rss.at(-1)!.v / 1048576).toFixed(1)} MB, heap ${((s.heapUsed.at(-1)?.v ?? 0) / 1048576).toFixed(1)} MB, fds ${s.fds.at(-1)!.v}, online ${s.online.at(-1)!.v}, hub.db ${(s.db.at(-1)!.v / 1048576).toFixed(1)} MB + wal ${(s.wal.at(-1)!.v / 1048576).toFixed(1)} MB\n`)
        }
        next += SAMPLE_EVERY_MS
        await Promise.race([pause(Math.max(0, next - Date.now()), aborted), simExited])
      }
      // The fleet is gone: one more sample shows what the hub gives back when its clients leave.
      await sample()
      let report: SimReport | undefined
      try {
        report = JSON.parse(simOut) as SimReport
      } catch {
        throw new Error(`the simulator printed no report (exit ${sim.exitCode}):\n${simErr}`)
      }
      // The slopes are taken while the fleet runs: the last point (fleet gone) is shown as "last", not fitted.
      const during = <T extends Point>(xs: T[]) => xs.slice(0, -1)
      const sum = (name: string, unit: 'bytes' | 'count', xs: Point[]) => ({ ...summarize(name, unit, during(xs), warmupH), last: xs.at(-1)?.v ?? NaN })
      const rows: SeriesSummary[] = [
        sum('hub RSS', 'bytes', s.rss),
        sum('hub heap used', 'bytes', s.heapUsed),
        summarize('hub heap used, floor per minute', 'bytes', floors(during(s.heapUsed), 1 / 60), warmupH),
        sum('hub heap total', 'bytes', s.heapTotal),
        sum('hub external (buffers)', 'bytes', s.external),
        sum('hub RSS outside the V8 heap and buffers', 'bytes', s.native),
        sum('hub open fds', 'count', s.fds),
        sum('hub active handles', 'count', s.handles),
        sum('hub active resources', 'count', s.resources),
        sum('hub.db', 'bytes', s.db),
        sum('hub.db-wal', 'bytes', s.wal),
        sum('devices online', 'count', s.online),
        sum('bare node RSS (baseline)', 'bytes', bare.series.bareRss),
        sum('bare node heap used (baseline)', 'bytes', bare.series.bareHeap),
        summarize('bare node heap used, floor per minute (baseline)', 'bytes', floors(during(bare.series.bareHeap), 1 / 60), warmupH),
        sum('bare node open fds (baseline)', 'count', bare.series.bareFds),
      ]
      if (o.csvPath !== undefined) writeCsv(o.csvPath, { ...s, ...bare.series })
      const t = report.totals
      const dbGrowth = s.db.at(-1)!.v - s.db[0]!.v
      process.stdout.write([
        `soak-hub: ${o.agents} agents, ${o.minutes} min, ${s.rss.length} samples every ${SAMPLE_EVERY_MS / 1000} s, slopes after a ${(warmupH * 60).toFixed(1)}-min warm-up while the fleet ran; "last" is after the fleet left`,
        `chaos (${report.schedule.length - 1} actions): ${chaos || 'none'}`,
        '',
        table(rows),
        '',
        `hub.db grew ${(dbGrowth / 1048576).toFixed(1)} MB for ${t.stored} samples stored (${t.stored > 0 ? (dbGrowth / t.stored).toFixed(0) : '–'} bytes a sample, jobs and presence history included)`,
        `samples: generated ${t.generated}, stored ${t.stored}, lost ${t.lost}, duplicates ${t.duplicates}, dropped by full outboxes ${t.dropped}; hub agrees: ${report.hubAgrees}`,
        `jobs: issued ${t.jobs.issued}, finished ${t.jobs.finished}, lost ${t.jobs.lost}, duplicates ${t.jobs.duplicates}; commands sent ${t.commands.sent} ${JSON.stringify(t.commands.byOutcome)}`,
        '',
      ].join('\n'))
      if (!report.ok) {
        process.exitCode = 1
        process.stderr.write('soak-hub: FAILED (the simulator found lost or duplicated data)\n')
      }
    })
  } finally {
    if (sim) await stopChild(sim, 15_000)
    if (baseline) await stopChild(baseline.child)
    await hub?.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
