import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The built CLI next to this file (dist/bench → dist/cli). */
export const CLI_PATH = fileURLToPath(new URL('../cli/main.js', import.meta.url))

export type AdminApi = <T = unknown>(method: string, path: string, body?: unknown) => Promise<{ status: number; body: T }>

/** A minimal client for the hub's HTTP API with the admin token: for benchmarks and tests. */
export function adminApi(base: string, adminToken: string): AdminApi {
  return async <T>(method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T }
  }
}

export interface HubProcess {
  readonly child: ChildProcess
  readonly pid: number
  readonly mqttPort: number
  readonly httpPort: number
  readonly adminToken: string
  readonly api: AdminApi
  /** The hub's last 4 KB of stderr (warnings and errors), for a benchmark's failure message. */
  stderr(): string
  stop(): Promise<void>
}

/** Starts `rollcall hub` in its own process and waits until it listens. */
export async function startHubProcess(dataDir: string, extraArgs: string[] = []): Promise<HubProcess> {
  const ready = join(dataDir, '..', `hub-ready-${process.pid}-${Date.now()}.json`)
  const child = spawn(process.execPath, [CLI_PATH, 'hub', '--data', dataDir, '--mqtt-port', '0', '--http-port', '0', '--ready-file', ready, '--log-level', 'warn', ...extraArgs],
    { stdio: ['ignore', 'ignore', 'pipe'] })
  // The hub's banner and warnings are kept, and shown only if it fails to start.
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  const deadline = Date.now() + 20_000
  while (!existsSync(ready)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`hub did not start:\n${stderr}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { mqttPort: number; httpPort: number }
  rmSync(ready)
  const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  return {
    child, pid: child.pid!, mqttPort: info.mqttPort, httpPort: info.httpPort, adminToken,
    api: adminApi(`http://127.0.0.1:${info.httpPort}`, adminToken),
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}
