import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { AgentConfigInput } from '../agent/config.js'
import { LEDGER_FILE } from '../agent/ledger.js'
import type { StatsSnapshot } from '../agent/stats-file.js'
import { CLI_PATH, startHubProcess, type HubProcess } from './hub-process.js'
import { rssBytes } from './proc-stats.js'
import {
  fdCount, fileBytes, floors, pause, readJsonFile, startBaseline, stopChild, summarize, table, waitFor, warmupHours, withInterrupts, writeCsv,
  type Baseline, type Point, type SeriesSummary,
} from './soak-stats.js'

/**
 * `npm run bench -- soak-agent` (issue #13, long-running health): one real
 * `rollcall agent` process, 3 sensors every second, against a real hub
 * process that goes away every few minutes (stopped with SIGTERM and SIGKILL
 * by turns) and comes back on the same data dir and ports, so the agent's
 * outbox fills while it is gone and drains when it is back. Every 10 s the
 * agent is sampled from outside (/proc: RSS, open fds; its ledger's file
 * sizes) and from inside (ROLLCALL_STATS_FILE: V8 heap, active handles by
 * kind, outbox backlog). A bare Node process sampled the same way is the
 * baseline of "flat". At the end the hub stays up until the outbox drains,
 * and every sample the agent generated is looked for at the hub: a soak
 * that loses or duplicates data fails.
 */
export interface SoakAgentOptions {
  readonly minutes: number
  readonly outageEveryMs: number
  readonly outageMs: number
  /** Write every sample here as CSV (series,hours,value). */
  readonly csvPath?: string | undefined
  readonly sensors: number
  readonly sampleIntervalMs: number
}

const DEVICE = 'soak-agent'
const SAMPLE_EVERY_MS = 10_000
/** How long the outbox may take to drain after the run before the soak says it did not. */
const DRAIN_LIMIT_MS = 300_000

interface Series {
  readonly rss: Point[]
  readonly heapUsed: Point[]
  readonly heapAfterFullGc: Point[]
  readonly heapTotal: Point[]
  readonly external: Point[]
  readonly native: Point[]
  readonly fds: Point[]
  readonly resources: Point[]
  readonly timeouts: Point[]
  readonly ledger: Point[]
  readonly wal: Point[]
  readonly backlog: Point[]
}

/**
 * The hub comes back on the same ports, so they are chosen below the
 * kernel's ephemeral range (32768–60999 by default on Linux): a port that
 * "0" picked is in that range, and in the minute the hub is away an outgoing
 * connection of any process may be given it (a 30-minute run here lost its
 * port so). A pair below the range is taken only by a listener that asks
 * for it by number; the first free pair of a few random tries is kept.
 */
async function startHubOnFixedPorts(hubDir: string): Promise<{ hub: HubProcess; ports: string[] }> {
  let last: unknown
  for (let attempt = 0; attempt < 5; attempt++) {
    const base = 20_000 + 2 * Math.floor(Math.random() * 5_000)
    const ports = ['--mqtt-port', String(base), '--http-port', String(base + 1)]
    try {
      return { hub: await startHubProcess(hubDir, ports), ports }
    } catch (err) {
      last = err
    }
  }
  throw last
}

/** Starts the hub again on its ports; a few tries a few seconds apart, should something hold them for a moment. */
async function restartHub(hubDir: string, ports: string[], aborted: Promise<never>): Promise<HubProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startHubProcess(hubDir, ports)
    } catch (err) {
      if (attempt === 5) throw err
      await pause(3000, aborted)
    }
  }
}

export async function runSoakAgentBench(o: SoakAgentOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-soak-agent-'))
  const hubDir = join(work, 'hub')
  const agentDir = join(work, 'agent')
  const statsPath = join(work, 'agent-stats.json')
  const bareStatsPath = join(work, 'bare-stats.json')
  const runMs = o.minutes * 60_000
  const warmupH = warmupHours(o.minutes)
  let hub: HubProcess | undefined
  let agent: ChildProcess | undefined
  let baseline: Baseline | undefined
  try {
    await withInterrupts(async (aborted) => {
      const started = await startHubOnFixedPorts(hubDir)
      hub = started.hub
      const ports = started.ports
      const reg = await hub.api<{ token: string }>('POST', '/api/devices', { id: DEVICE })
      if (reg.status !== 201) throw new Error(`cannot register ${DEVICE}: HTTP ${reg.status}`)
      const models = ['sine', 'random-walk', 'constant'] as const
      const config: AgentConfigInput = {
        builtinSensors: false,
        sampleIntervalMs: o.sampleIntervalMs,
        sensors: Array.from({ length: o.sensors }, (_, i) => ({ name: `soak.s${i}`, model: models[i % models.length]!, min: 0, max: 100 })),
      }
      const configPath = join(work, 'agent.json')
      writeFileSync(configPath, JSON.stringify(config))
      let agentStderr = ''
      // --expose-gc: the stats hook then runs a full collection once a minute, so the live heap is measured (agent/stats-file.ts).
      agent = spawn(process.execPath, ['--expose-gc', CLI_PATH, 'agent', '--hub', `mqtt://127.0.0.1:${hub.mqttPort}`, '--id', DEVICE, '--data', agentDir, '--config', configPath, '--log-level', 'warn', '--log-format', 'json'],
        { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ROLLCALL_TOKEN: reg.body.token, ROLLCALL_STATS_FILE: statsPath } })
      agent.stderr!.on('data', (d: Buffer) => { agentStderr = (agentStderr + d.toString()).slice(-4000) })
      baseline = startBaseline(bareStatsPath)
      const bare = baseline
      const agentPid = agent.pid!
      // The clock starts when both processes are up (the agent connected), so min and max are about running processes.
      await waitFor('the agent did not connect', () => readJsonFile<StatsSnapshot>(statsPath)?.agent.connected === true, 60_000, aborted)
      await bare.started(aborted)
      const t0 = Date.now()
      const hours = () => (Date.now() - t0) / 3_600_000
      process.stderr.write(`soak-agent: ${o.minutes} min, ${o.sensors} sensors every ${o.sampleIntervalMs} ms, hub away ${o.outageMs / 1000} s every ${o.outageEveryMs / 1000} s; agent pid ${agentPid}, hub pid ${hub.pid}, work ${work}\n`)

      const s: Series = { rss: [], heapUsed: [], heapAfterFullGc: [], heapTotal: [], external: [], native: [], fds: [], resources: [], timeouts: [], ledger: [], wal: [], backlog: [] }
      let lastStats: StatsSnapshot | undefined
      let fullGcs = 0
      const alive = () => {
        if (agent!.exitCode !== null || agent!.signalCode !== null) throw new Error(`the agent exited (${agent!.exitCode ?? agent!.signalCode}):\n${agentStderr}`)
      }
      const sample = () => {
        alive()
        const h = hours()
        s.rss.push({ h, v: rssBytes(agentPid) })
        s.fds.push({ h, v: fdCount(agentPid) })
        s.ledger.push({ h, v: fileBytes(join(agentDir, LEDGER_FILE)) })
        s.wal.push({ h, v: fileBytes(join(agentDir, `${LEDGER_FILE}-wal`)) })
        const st = readJsonFile<StatsSnapshot>(statsPath)
        if (st) {
          lastStats = st
          s.heapUsed.push({ h, v: st.memory.heapUsed })
          // One point per full collection, at the time it ran: the live heap, the figure a leak lifts.
          if (st.gc.heapAfterFullGc !== undefined && st.gc.fullGcAt !== undefined && st.gc.full > fullGcs) {
            fullGcs = st.gc.full
            s.heapAfterFullGc.push({ h: (st.gc.fullGcAt - t0) / 3_600_000, v: st.gc.heapAfterFullGc })
          }
          s.heapTotal.push({ h, v: st.memory.heapTotal })
          s.external.push({ h, v: st.memory.external })
          // What RSS holds besides V8's heap and buffers: SQLite's page cache, malloc, code.
          s.native.push({ h, v: s.rss.at(-1)!.v - st.memory.heapTotal - st.memory.external })
          s.resources.push({ h, v: Object.values(st.resources).reduce((a, b) => a + b, 0) })
          s.timeouts.push({ h, v: st.resources.Timeout ?? 0 })
          s.backlog.push({ h, v: st.agent.outbox?.backlogRows ?? 0 })
        }
        bare.sample(h)
      }

      // The hub's outages, on their own loop: away for outageMs every outageEveryMs, the last one ending well before the run does.
      let outages = 0
      let hubDown = false
      const outageLoop = async () => {
        for (let at = o.outageEveryMs; at + o.outageMs + 30_000 <= runMs; at += o.outageEveryMs) {
          await pause(t0 + at - Date.now(), aborted)
          const h = hub!
          hubDown = true
          if (outages % 2 === 0) await h.stop()
          else {
            // A power cut, not a shutdown: SIGKILL, no checkpoint, no goodbye to the clients.
            const exited = new Promise((r) => h.child.once('exit', r))
            h.child.kill('SIGKILL')
            await Promise.race([exited, sleep(5000)])
          }
          outages++
          process.stderr.write(`  ${((Date.now() - t0) / 60_000).toFixed(1)} min: hub stopped (${outages % 2 === 1 ? 'SIGTERM' : 'SIGKILL'}), back in ${o.outageMs / 1000} s\n`)
          await pause(o.outageMs, aborted)
          hub = await restartHub(hubDir, ports, aborted)
          hubDown = false
        }
      }
      const outagesDone = outageLoop()
      outagesDone.catch(() => { /* raced below */ })

      let next = t0
      while (Date.now() - t0 < runMs) {
        sample()
        const i = s.rss.length
        if (i % 6 === 1) {
          process.stderr.write(`  ${((Date.now() - t0) / 60_000).toFixed(1)} min: rss ${(s.rss.at(-1)!.v / 1048576).toFixed(1)} MB, heap ${((s.heapUsed.at(-1)?.v ?? 0) / 1048576).toFixed(1)} MB, fds ${s.fds.at(-1)!.v}, backlog ${s.backlog.at(-1)?.v ?? '?'} rows, ledger ${(s.ledger.at(-1)!.v / 1024).toFixed(0)} KB + wal ${(s.wal.at(-1)!.v / 1024).toFixed(0)} KB${hubDown ? ', hub away' : ''}\n`)
        }
        next += SAMPLE_EVERY_MS
        await Promise.race([pause(Math.max(0, next - Date.now()), aborted), outagesDone.then(() => sleep(Math.max(0, next - Date.now())))])
      }
      await Promise.race([outagesDone, aborted])

      // The drain: the hub stays up until the agent's outbox is empty (as its stats file says, written after we asked).
      const drainFrom = Date.now()
      let drained: StatsSnapshot | undefined
      while (Date.now() - drainFrom < DRAIN_LIMIT_MS) {
        alive()
        const st = readJsonFile<StatsSnapshot>(statsPath)
        if (st && st.t > drainFrom && st.agent.connected && st.agent.outbox?.backlogRows === 0) {
          drained = st
          break
        }
        await pause(1000, aborted)
      }
      const drainMs = Date.now() - drainFrom
      sample()
      const ledgerAfterDrain = s.ledger.at(-1)!.v
      const walAfterDrain = s.wal.at(-1)!.v

      // Stop the agent, then count: what it generated (its last stats), what the hub stored, what is still in its outbox.
      await stopChild(agent)
      const final = readJsonFile<StatsSnapshot>(statsPath)
      const generated = final?.agent.sampler?.samples ?? NaN
      const ledgerDb = new Database(join(agentDir, LEDGER_FILE), { readonly: true })
      const leftover = ledgerDb.prepare<[], { n: number }>("SELECT count(*) AS n FROM outbox WHERE kind = 'telemetry'").get()!.n
      ledgerDb.close()
      let stored = 0
      let unique = 0
      for (const sensor of config.sensors!.map((x) => x.name)) {
        const r = await hub.api<{ samples: Array<{ seq: number }>; truncated: boolean }>('GET', `/api/devices/${DEVICE}/telemetry?sensor=${sensor}&since=0&limit=100000`)
        if (r.status !== 200) throw new Error(`telemetry query: HTTP ${r.status}`)
        if (r.body.truncated) throw new Error(`more than 100,000 samples of ${sensor}: the count needs paging for a run this long`)
        stored += r.body.samples.length
        unique += new Set(r.body.samples.map((x) => x.seq)).size
      }
      const lost = generated - unique - leftover
      const duplicates = stored - unique

      const rows: SeriesSummary[] = [
        summarize('agent RSS', 'bytes', s.rss, warmupH),
        summarize('agent heap used', 'bytes', s.heapUsed, warmupH),
        summarize('agent heap used, floor per minute', 'bytes', floors(s.heapUsed, 1 / 60), warmupH),
        summarize('agent heap after each full GC', 'bytes', s.heapAfterFullGc, warmupH),
        summarize('agent heap total', 'bytes', s.heapTotal, warmupH),
        summarize('agent external (buffers)', 'bytes', s.external, warmupH),
        summarize('agent RSS outside the V8 heap and buffers', 'bytes', s.native, warmupH),
        summarize('agent open fds', 'count', s.fds, warmupH),
        summarize('agent active handles + requests', 'count', s.resources, warmupH),
        summarize('agent active timers', 'count', s.timeouts, warmupH),
        summarize('ledger.db', 'bytes', s.ledger, warmupH),
        summarize('ledger.db-wal', 'bytes', s.wal, warmupH),
        summarize('outbox backlog (rows)', 'count', s.backlog, warmupH),
        summarize('bare node RSS (baseline)', 'bytes', bare.series.bareRss, warmupH),
        summarize('bare node heap used (baseline)', 'bytes', bare.series.bareHeap, warmupH),
        summarize('bare node heap used, floor per minute (baseline)', 'bytes', floors(bare.series.bareHeap, 1 / 60), warmupH),
        summarize('bare node open fds (baseline)', 'count', bare.series.bareFds, warmupH),
      ]
      if (o.csvPath !== undefined) writeCsv(o.csvPath, { ...s, ...bare.series })
      const link = (final ?? lastStats)?.agent.link
      const warnings = (final ?? lastStats)?.warnings ?? {}
      const kinds = lastStats ? Object.entries(lastStats.resources).map(([k, n]) => `${k} ${n}`).join(', ') : '–'
      process.stdout.write([
        `soak-agent: ${o.minutes} min, ${s.rss.length} samples every ${SAMPLE_EVERY_MS / 1000} s, slopes after a ${(warmupH * 60).toFixed(1)}-min warm-up;`,
        `${o.sensors} sensors every ${o.sampleIntervalMs} ms; the hub went away ${outages} times for ${o.outageMs / 1000} s (SIGTERM and SIGKILL by turns)`,
        '',
        table(rows),
        '',
        `active handles at the end: ${kinds}; process warnings: ${Object.keys(warnings).length === 0 ? 'none' : JSON.stringify(warnings)}`,
        `link: ${link?.connects ?? '?'} connects, ${link?.disconnects ?? '?'} disconnects; collections: ${(final ?? lastStats)?.gc.full ?? '?'} full, ${(final ?? lastStats)?.gc.other ?? '?'} other`,
        `after the drain (${drained ? `${(drainMs / 1000).toFixed(0)} s` : `NOT drained in ${DRAIN_LIMIT_MS / 1000} s`}): ledger.db ${(ledgerAfterDrain / 1024).toFixed(0)} KB, WAL ${(walAfterDrain / 1024).toFixed(0)} KB (max during the run: ${(Math.max(...s.ledger.map((p) => p.v)) / 1024).toFixed(0)} KB + WAL ${(Math.max(...s.wal.map((p) => p.v)) / 1024).toFixed(0)} KB)`,
        `samples: generated ${generated}, stored at the hub ${unique}, still in the outbox ${leftover}, lost ${lost}, duplicates ${duplicates}`,
        '',
      ].join('\n'))
      if (!drained || lost !== 0 || duplicates !== 0) {
        process.exitCode = 1
        process.stderr.write('soak-agent: FAILED (the outbox did not drain, or samples were lost or duplicated)\n')
      }
    })
  } finally {
    if (agent) await stopChild(agent)
    if (baseline) await stopChild(baseline.child)
    await hub?.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
