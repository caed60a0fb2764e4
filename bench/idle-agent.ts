import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI_PATH, startHubProcess, type HubProcess } from './hub-process.js'
import { mb, rssBytes } from './proc-stats.js'

/**
 * `npm run bench -- idle-agent`: the footprint of a device agent doing what
 * most of them do most of the time — `rollcall agent` with its default config
 * (built-in sensors every 10 s), connected to a hub, otherwise idle. Several
 * agent processes run side by side for the same time, next to a bare
 * `node -e` process sampled at the same moment, so one run gives a spread and
 * a baseline on this noisy machine.
 */
export interface IdleAgentOptions {
  readonly agents: number
  readonly seconds: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Starts one `rollcall agent` process for a freshly registered device. */
export async function spawnIdleAgent(hub: HubProcess, dataDir: string, id: string): Promise<ChildProcess> {
  const r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
  if (r.status !== 201 && r.status !== 200) throw new Error(`cannot register ${id}: HTTP ${r.status}`)
  return spawn(process.execPath, [CLI_PATH, 'agent', '--hub', `mqtt://127.0.0.1:${hub.mqttPort}`, '--id', id, '--data', dataDir, '--log-level', 'warn'],
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
    hub = await startHubProcess(join(work, 'hub'))
    for (let i = 0; i < o.agents; i++) children.push(await spawnIdleAgent(hub, join(work, `agent-${i}`), `idle-${i}`))
    const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 10000)'], { stdio: 'ignore' })
    children.push(bare)
    process.stderr.write(`idle-agent bench: ${o.agents} agent processes, sampling RSS after ${o.seconds}s\n`)
    await sleep(o.seconds * 1000)
    const agents = children.slice(0, o.agents).map((c) => {
      if (c.exitCode !== null) throw new Error(`agent process ${c.pid} exited with ${c.exitCode}`)
      return rssBytes(c.pid!)
    })
    const sorted = [...agents].sort((a, b) => a - b)
    const exact = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
    process.stdout.write(`idle agent RSS after ${o.seconds}s: ${agents.map(exact).join(', ')} (median ${mb(sorted[Math.floor(sorted.length / 2)]!)}, max ${mb(sorted[sorted.length - 1]!)}); bare node: ${exact(rssBytes(bare.pid!))}\n`)
  } finally {
    for (const c of children) await stopChild(c)
    await hub?.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
