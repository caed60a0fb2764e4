import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { NODE_FLAGS } from '../cli/service-install.js'
import { tlsInit } from '../cli/tls-init.js'
import { CLI_PATH, startHubProcess, type HubProcess } from './hub-process.js'
import { cpuMs, rssAnonBytes, rssBytes } from './proc-stats.js'

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
 * built-in ones every 1000 ms: 10 samples/s). Agents run in two groups, as
 * the service starts them and as a shell does (LAUNCHES), side by side.
 */
export interface IdleAgentOptions {
  readonly agents: number
  readonly seconds: number
  readonly warmupS: number
  readonly intervalMs?: number
  readonly extraSensors?: number
  /** Agents reach the hub over mqtts://, pinning its CA, as docs/raspberry-pi.md sets a Pi up. */
  readonly tls?: boolean
}

/**
 * The two ways an agent is started: as rollcall-agent.service starts it
 * (node with the unit's flags, NODE_FLAGS.agent: --jitless ...), and as
 * `rollcall agent` typed in a shell (node's defaults, JIT on). Each group
 * has `agents` processes.
 */
const LAUNCHES = [
  { label: `agent as the service runs it (node ${NODE_FLAGS.agent.join(' ')})`, execArgv: NODE_FLAGS.agent },
  { label: 'agent as `rollcall agent` in a shell (JIT on)', execArgv: [] },
] as const

/** Starts one `rollcall agent` process for a freshly registered device. */
export async function spawnIdleAgent(hub: HubProcess, dataDir: string, id: string, config?: Record<string, unknown>, nodeFlags: readonly string[] = [], tlsCa?: string): Promise<ChildProcess> {
  const r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
  if (r.status !== 201 && r.status !== 200) throw new Error(`cannot register ${id}: HTTP ${r.status}`)
  const extra: string[] = []
  if (config) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    const file = join(dataDir, 'agent.json')
    writeFileSync(file, JSON.stringify(config))
    extra.push('--config', file)
  }
  // localhost, not 127.0.0.1, over TLS: the name `rollcall tls init` puts in the hub's certificate.
  const hubUrl = tlsCa ? `mqtts://localhost:${hub.mqttTlsPort!}` : `mqtt://127.0.0.1:${hub.mqttPort}`
  return spawn(process.execPath, [...nodeFlags, CLI_PATH, 'agent', '--hub', hubUrl, ...(tlsCa ? ['--ca', tlsCa] : []), '--id', id, '--data', dataDir, '--log-level', 'warn', ...extra],
    { stdio: 'ignore', env: { ...process.env, ROLLCALL_TOKEN: r.body.token } })
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
    const hubDir = join(work, 'hub')
    let ca: string | undefined
    if (o.tls) {
      const { paths } = tlsInit({ dataDir: hubDir, hosts: [] })
      ca = paths.caCert
      hub = await startHubProcess(hubDir, ['--tls-cert', paths.hubCert, '--tls-key', paths.hubKey, '--mqtt-tls-port', '0', '--allow-plaintext'], { ca })
    } else {
      hub = await startHubProcess(hubDir)
    }
    const config: Record<string, unknown> | undefined = o.intervalMs === undefined && !o.extraSensors ? undefined : {
      ...(o.intervalMs === undefined ? {} : { sampleIntervalMs: o.intervalMs }),
      sensors: Array.from({ length: o.extraSensors ?? 0 }, (_, i) => ({ name: `extra.s${i}`, model: 'constant', min: 1, max: 1 })),
    }
    // Interleaved, so both groups share whatever the machine is doing.
    for (let i = 0; i < o.agents; i++) {
      for (const [g, launch] of LAUNCHES.entries()) children.push(await spawnIdleAgent(hub, join(work, `agent-${g}-${i}`), `idle-${g}-${i}`, config, launch.execArgv, ca))
    }
    const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 10000)'], { stdio: 'ignore' })
    children.push(bare)
    const what = `${config ? `sampling every ${o.intervalMs ?? 10_000} ms with ${o.extraSensors ?? 0} extra sensors` : 'default config'}, ${o.tls ? 'mqtts:// (TLS)' : 'mqtt://'}`
    process.stderr.write(`idle-agent bench: ${o.agents} agent processes per launch (${what}), ${o.warmupS}s warm-up, then CPU and RSS over ${o.seconds}s\n`)
    await sleep(o.warmupS * 1000)
    const alive = () => {
      for (const c of children) if (c.exitCode !== null) throw new Error(`process ${c.pid} exited with ${c.exitCode}`)
    }
    alive()
    const t0 = performance.now()
    const cpu0 = children.map((c) => cpuMs(c.pid!))
    // RSS is read every 5 s over the window and averaged: V8's heap grows and shrinks by a MB or two between collections.
    const samples: Memory[][] = children.map(() => [])
    const deadline = t0 + o.seconds * 1000
    while (performance.now() < deadline) {
      children.forEach((c, i) => samples[i]!.push(memory(c.pid!)))
      await sleep(Math.min(5000, Math.max(0, deadline - performance.now())))
    }
    alive()
    const cpu1 = children.map((c) => cpuMs(c.pid!))
    const elapsedMs = performance.now() - t0
    const cpuPct = children.map((_, i) => (100 * (cpu1[i]! - cpu0[i]!)) / elapsedMs)
    const avg = samples.map((list) => ({ rss: mean(list.map((m) => m.rss)), anon: mean(list.map((m) => m.anon)) }))
    const exact = (bytes: number) => (bytes / 1024 / 1024).toFixed(1)
    const pct = (p: number) => `${p.toFixed(2)}%`
    process.stdout.write(`RSS and its anonymous part (heap, stacks: what the kernel cannot drop and read again from disk), MB, mean of ${samples[0]!.length} readings over ${(elapsedMs / 1000).toFixed(0)}s; CPU as % of one core\n`)
    for (const [g, launch] of LAUNCHES.entries()) {
      const idx = children.slice(0, -1).map((_, i) => i).filter((i) => i % LAUNCHES.length === g)
      const rss = idx.map((i) => avg[i]!.rss)
      process.stdout.write(`${launch.label}: RSS ${idx.map((i) => exact(avg[i]!.rss)).join(', ')} (max ${exact(Math.max(...rss))}); anon ${idx.map((i) => exact(avg[i]!.anon)).join(', ')}; CPU ${idx.map((i) => pct(cpuPct[i]!)).join(', ')}\n`)
    }
    const b = children.length - 1
    process.stdout.write(`bare node (node -e 'setInterval(...)'): RSS ${exact(avg[b]!.rss)}; anon ${exact(avg[b]!.anon)}; CPU ${pct(cpuPct[b]!)} (CPU from /proc/PID/stat, 10 ms clock ticks)\n`)
  } finally {
    for (const c of children) await stopChild(c)
    await hub?.stop()
    rmSync(work, { recursive: true, force: true })
  }
}

interface Memory { readonly rss: number; readonly anon: number }

function memory(pid: number): Memory {
  return { rss: rssBytes(pid), anon: rssAnonBytes(pid) }
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
