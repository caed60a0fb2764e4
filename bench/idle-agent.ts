import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI_PATH, startHubProcess, type HubProcess } from './hub-process.js'
import { cpuMs, mb, rssBytes } from './proc-stats.js'

/**
 * `npm run bench -- idle-agent`: the footprint of a device agent doing what
 * most of them do most of the time — `rollcall agent` with its default config
 * (built-in sensors every 10 s), connected to a hub, otherwise idle. Several
 * agent processes run side by side for the same time, next to a bare
 * `node -e` process sampled at the same moment, so one run gives a spread and
 * a baseline on this noisy machine.
 *
 * CPU is the growth of utime + stime (/proc/PID/stat) over the window after a
 * warm-up, as a share of one core. `intervalMs` and `extraSensors` turn the
 * idle agent into a busier one (e.g. 7 constant sensors besides the 3
 * built-in ones every 1000 ms: 10 samples/s).
 */
export interface IdleAgentOptions {
  readonly agents: number
  readonly seconds: number
  readonly warmupS: number
  readonly intervalMs?: number
  readonly extraSensors?: number
  /**
   * Also run as many agents with the launcher settings docs/benchmarks.md
   * discusses (LEAN_LAUNCH), side by side with the plain ones.
   */
  readonly lean?: boolean
}

/**
 * Launcher settings that might hold an agent's memory down: one libuv worker
 * thread instead of four, and V8's young generation capped at 1 MiB per
 * semi-space. `--lean` measures them beside plain agents; over 10 minutes
 * they made no difference (docs/benchmarks.md), so nothing sets them.
 */
export const LEAN_LAUNCH = { env: { UV_THREADPOOL_SIZE: '1' }, execArgv: ['--max-semi-space-size=1'] } as const

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Starts one `rollcall agent` process for a freshly registered device. */
export async function spawnIdleAgent(hub: HubProcess, dataDir: string, id: string, config?: Record<string, unknown>, lean = false): Promise<ChildProcess> {
  const r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
  if (r.status !== 201 && r.status !== 200) throw new Error(`cannot register ${id}: HTTP ${r.status}`)
  const extra: string[] = []
  if (config) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    const file = join(dataDir, 'agent.json')
    writeFileSync(file, JSON.stringify(config))
    extra.push('--config', file)
  }
  return spawn(process.execPath, [...(lean ? LEAN_LAUNCH.execArgv : []), CLI_PATH, 'agent', '--hub', `mqtt://127.0.0.1:${hub.mqttPort}`, '--id', id, '--data', dataDir, '--log-level', 'warn', ...extra],
    { stdio: 'ignore', env: { ...process.env, ...(lean ? LEAN_LAUNCH.env : {}), ROLLCALL_TOKEN: r.body.token } })
}

/** Stops a child we started; SIGKILL if it does not exit in time. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await Promise.race([exited, sleep(5000)])
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

export async function runIdleAgentBench(o: IdleAgentOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-idle-'))
  const children: ChildProcess[] = []
  let hub: HubProcess | undefined
  try {
    hub = await startHubProcess(join(work, 'hub'))
    const config: Record<string, unknown> | undefined = o.intervalMs === undefined && !o.extraSensors ? undefined : {
      ...(o.intervalMs === undefined ? {} : { sampleIntervalMs: o.intervalMs }),
      sensors: Array.from({ length: o.extraSensors ?? 0 }, (_, i) => ({ name: `extra.s${i}`, model: 'constant', min: 1, max: 1 })),
    }
    for (let i = 0; i < o.agents; i++) children.push(await spawnIdleAgent(hub, join(work, `agent-${i}`), `idle-${i}`, config))
    const leanCount = o.lean ? o.agents : 0
    for (let i = 0; i < leanCount; i++) children.push(await spawnIdleAgent(hub, join(work, `lean-${i}`), `lean-${i}`, config, true))
    const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 10000)'], { stdio: 'ignore' })
    children.push(bare)
    const what = config ? `sampling every ${o.intervalMs ?? 10_000} ms with ${o.extraSensors ?? 0} extra sensors` : 'default config'
    process.stderr.write(`idle-agent bench: ${o.agents} agent processes (${what}), ${o.warmupS}s warm-up, then CPU over ${o.seconds}s and RSS at the end\n`)
    await sleep(o.warmupS * 1000)
    const alive = () => {
      for (const c of children) if (c.exitCode !== null) throw new Error(`process ${c.pid} exited with ${c.exitCode}`)
    }
    alive()
    const t0 = performance.now()
    const cpu0 = children.map((c) => cpuMs(c.pid!))
    await sleep(o.seconds * 1000)
    alive()
    const cpu1 = children.map((c) => cpuMs(c.pid!))
    const elapsedMs = performance.now() - t0
    const cpuPct = children.map((_, i) => (100 * (cpu1[i]! - cpu0[i]!)) / elapsedMs)
    const rss = children.map((c) => rssBytes(c.pid!))
    const exact = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
    const pct = (p: number) => `${p.toFixed(2)}%`
    const line = (label: string, from: number, n: number) => {
      const sorted = rss.slice(from, from + n).sort((a, b) => a - b)
      process.stdout.write(`${label} RSS after ${o.warmupS + o.seconds}s (${what}): ${rss.slice(from, from + n).map(exact).join(', ')} (median ${mb(sorted[Math.floor(sorted.length / 2)]!)}, max ${mb(sorted[sorted.length - 1]!)})\n`)
      process.stdout.write(`${label} CPU over ${(elapsedMs / 1000).toFixed(0)}s, % of one core: ${cpuPct.slice(from, from + n).map(pct).join(', ')}\n`)
    }
    line('agent', 0, o.agents)
    if (leanCount > 0) line(`agent, ${Object.entries(LEAN_LAUNCH.env).map(([k, v]) => `${k}=${v}`).join(' ')} node ${LEAN_LAUNCH.execArgv.join(' ')}`, o.agents, leanCount)
    const b = children.length - 1
    process.stdout.write(`bare node: RSS ${exact(rss[b]!)}, CPU ${pct(cpuPct[b]!)} (CPU from /proc/PID/stat, 10 ms clock ticks)\n`)
  } finally {
    for (const c of children) await stopChild(c)
    await hub?.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
