import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { adminRequest, type AdminApi } from '../common/admin-http.js'
import { ensurePrivateDir } from '../common/private-files.js'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The hub the simulator drives: one it starts in a child process (so chaos
 * can SIGKILL it and start it again on the same data dir and ports), or one
 * it is pointed at (which it cannot kill: hub-kill chaos needs its own hub).
 */

/** The built CLI: next to this file when it runs from dist/, or in dist/ when it runs from source (tests). */
const CLI_PATH = [new URL('../cli/main.js', import.meta.url), new URL('../dist/cli/main.js', import.meta.url)]
  .map((u) => fileURLToPath(u)).find((p) => existsSync(p)) ?? fileURLToPath(new URL('../cli/main.js', import.meta.url))

export type Api = AdminApi

/** The hub's admin API (common/admin-http.ts); network errors come back as status 0, so a chaos run keeps counting through a hub that is down. */
export function hubApi(base: string, adminToken: string, ca?: string): Api {
  // A CA file that cannot be read is a mistake in the command line: said now, not as every call's failure.
  if (ca !== undefined) readFileSync(ca)
  return async <T>(method: string, path: string, body?: unknown) => {
    try {
      return await adminRequest<T>({ api: base, token: adminToken, ca }, method, path, body)
    } catch (err) {
      return { status: 0, body: { error: { code: 'UNAVAILABLE', message: (err as Error).message } } as T }
    }
  }
}

export interface SimHub {
  readonly mqttUrl: string
  readonly apiUrl: string
  readonly adminToken: string
  /** The CA the agents pin and the API client trusts, for a hub with TLS (--ca). */
  readonly ca?: string | undefined
  readonly api: Api
  /** True when the simulator started this hub (and may kill it). */
  readonly own: boolean
  readonly pid: number | undefined
  /** SIGKILL, as a power cut or an OOM kill would. */
  kill(): Promise<void>
  /** Starts it again on the same data dir and ports. */
  restart(): Promise<void>
  stop(): Promise<void>
}

export function externalHub(mqttUrl: string, apiUrl: string, adminToken: string, ca?: string): SimHub {
  const refuse = () => Promise.reject(new Error('this hub was not started by the simulator: it cannot kill or restart it (drop --hub to let the simulator run its own)'))
  return { mqttUrl, apiUrl, adminToken, ca, api: hubApi(apiUrl, adminToken, ca), own: false, pid: undefined, kill: refuse, restart: refuse, stop: async () => {} }
}

/** Starts `rollcall hub` in a child process on free ports (or the given ones) and waits until it listens. */
export async function ownHub(dataDir: string, options: { logLevel?: string } = {}): Promise<SimHub> {
  ensurePrivateDir(dataDir)
  let child: ChildProcess | undefined
  let mqttPort = 0
  let httpPort = 0
  let stderr = ''

  async function launch(): Promise<void> {
    const ready = join(dataDir, `ready-${process.pid}-${Date.now()}.json`)
    const c = spawn(process.execPath, [CLI_PATH, 'hub', '--data', dataDir, '--mqtt-port', String(mqttPort), '--http-port', String(httpPort),
      '--ready-file', ready, '--log-level', options.logLevel ?? 'error'], { stdio: ['ignore', 'ignore', 'pipe'] })
    c.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
    const deadline = Date.now() + 30_000
    while (!existsSync(ready)) {
      if (c.exitCode !== null || Date.now() > deadline) {
        c.kill('SIGKILL')
        throw new Error(`the simulator's hub did not start:\n${stderr}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    const info = JSON.parse(readFileSync(ready, 'utf8')) as { mqttPort: number; httpPort: number }
    rmSync(ready, { force: true })
    mqttPort = info.mqttPort
    httpPort = info.httpPort
    child = c
  }

  async function exit(signal: NodeJS.Signals): Promise<void> {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null || c.signalCode !== null) return
    const exited = new Promise((r) => c.once('exit', r))
    c.kill(signal)
    let timer: NodeJS.Timeout | undefined
    await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, 10_000) })])
    clearTimeout(timer)
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  }

  await launch()
  const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  const apiUrl = `http://127.0.0.1:${httpPort}`
  return {
    mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    apiUrl,
    adminToken,
    api: hubApi(apiUrl, adminToken),
    own: true,
    get pid() { return child?.pid },
    kill: () => exit('SIGKILL'),
    restart: launch,
    stop: () => exit('SIGTERM'),
  }
}
