import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HUB_NODE_FLAGS } from '../cli/service-install.js'
import { adminApi, type AdminApi } from '../common/admin-http.js'

/**
 * Node flags for a hub under a fleet: what the hub's systemd unit runs it with
 * (cli/service-install.ts), plus a CPU profile into `cpuProfDir` when asked.
 */
export function hubNodeArgs(cpuProfDir?: string): string[] {
  return [...HUB_NODE_FLAGS, ...(cpuProfDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`])]
}

/** The built CLI next to this file (dist/bench → dist/cli). */
export const CLI_PATH = fileURLToPath(new URL('../cli/main.js', import.meta.url))

export interface HubProcess {
  readonly child: ChildProcess
  readonly pid: number
  readonly mqttPort: number
  readonly mqttTlsPort: number | undefined
  readonly httpPort: number
  readonly adminToken: string
  readonly api: AdminApi
  /** The hub's last 4 KB of stderr (warnings and errors), for a benchmark's failure message. */
  stderr(): string
  stop(): Promise<void>
}

/** Starts `rollcall hub` in its own process and waits until it listens; `nodeArgs` go to node itself (e.g. --cpu-prof). */
export async function startHubProcess(dataDir: string, extraArgs: string[] = [], tls?: { ca: string }, nodeArgs: readonly string[] = []): Promise<HubProcess> {
  const ready = join(dataDir, '..', `hub-ready-${process.pid}-${Date.now()}.json`)
  const child = spawn(process.execPath, [...nodeArgs, CLI_PATH, 'hub', '--data', dataDir, '--mqtt-port', '0', '--http-port', '0', '--ready-file', ready, '--log-level', 'warn', ...extraArgs],
    { stdio: ['ignore', 'ignore', 'pipe'] })
  // The hub's banner and warnings are kept, and shown only if it fails to start.
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  const deadline = Date.now() + 20_000
  while (!existsSync(ready)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`hub did not start:\n${stderr}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { mqttPort: number; mqttTlsPort: number | null; httpPort: number; https?: boolean }
  rmSync(ready)
  const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  return {
    child, pid: child.pid!, mqttPort: info.mqttPort, mqttTlsPort: info.mqttTlsPort ?? undefined, httpPort: info.httpPort, adminToken,
    api: info.https === true && tls ? adminApi({ api: `https://127.0.0.1:${info.httpPort}`, token: adminToken, ca: tls.ca }) : adminApi({ api: `http://127.0.0.1:${info.httpPort}`, token: adminToken }),
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      // A profiled hub writes its profile on the way out: give it time, or SIGKILL loses the profile.
      const graceMs = nodeArgs.some((a) => a.startsWith('--cpu-prof')) ? 60_000 : 5000
      await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}
