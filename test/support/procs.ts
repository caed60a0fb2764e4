import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from './hub.js'
import { adminApi, type AdminApi } from '../../common/admin-http.js'
import { within } from './leaks.js'

/** The built CLI: `npm test` builds first (pretest), so tests run what users run. */
export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))

export interface Proc {
  readonly child: ChildProcess
  readonly pid: number
  output(): string
  /** Resolves when the process has exited. */
  readonly exited: Promise<number | null>
}

/**
 * Starts `command ...args` as a child process; the last `keepChars` of its
 * output are kept for failure messages. `detached` gives it a process group
 * of its own, as a terminal does.
 */
export function startProc(command: string, args: string[], options: { env?: Record<string, string>; cwd?: string; detached?: boolean; keepChars?: number } = {}): Proc {
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env }, cwd: options.cwd, detached: options.detached ?? false,
  })
  const keepChars = options.keepChars ?? 20_000
  let out = ''
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-keepChars) }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, pid: child.pid!, output: () => out, exited }
}

/** Starts `rollcall ...args` as a child process; output is kept for failure messages. */
export function startCli(args: string[], env: Record<string, string> = {}): Proc {
  return startProc(process.execPath, [CLI, ...args], { env })
}

export interface CliRun { readonly code: number; readonly stdout: string; readonly stderr: string }

/**
 * Runs `rollcall ...args` to its end (killed past `timeoutMs`, a hang guard):
 * its exit code and output, and the child, for a test's end to kill if it
 * is still running.
 */
export function runCli(args: string[], timeoutMs: number): { result: Promise<CliRun>; child: ChildProcess } {
  let child: ChildProcess | undefined
  const result = new Promise<CliRun>((resolve) => {
    child = execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
  return { result, child: child! }
}

/** Whether a process with this PID exists (signal 0 checks without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Sends a signal to a process we started (by its PID) and waits for it to exit. */
export async function killProc(p: Proc, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return
  p.child.kill(signal)
  await within(p.exited, 10_000, undefined)
}

export interface HubProc extends Proc {
  /** 0 when the plaintext MQTT listener is off. */
  readonly mqttPort: number
  /** Present when the hub serves TLS. */
  readonly mqttTlsPort: number | undefined
  readonly httpPort: number
  readonly adminToken: string
  readonly api: AdminApi
}

/**
 * Starts a hub process and waits until it listens (it writes a ready file).
 * With `tls` it serves TLS (MQTT on a free TLS port, HTTPS), and the admin
 * API is called pinning `tls.ca`.
 */
export async function startHubProc(dataDir: string, opts: { mqttPort?: number; httpPort?: number; extra?: string[]; tls?: { cert: string; key: string; ca: string } } = {}): Promise<HubProc> {
  const ready = join(dataDir, `ready-${Date.now()}-${Math.random().toString(36).slice(2)}.json`)
  const p = startCli(['hub', '--data', dataDir, '--mqtt-port', String(opts.mqttPort ?? 0), '--http-port', String(opts.httpPort ?? 0),
    '--ready-file', ready, '--log-level', 'warn',
    ...(opts.tls ? ['--tls-cert', opts.tls.cert, '--tls-key', opts.tls.key, '--mqtt-tls-port', '0'] : []), ...(opts.extra ?? [])])
  // The hub renames the file into place once it listens, so it is never seen half-written.
  await waitFor(() => existsSync(ready) || p.child.exitCode !== null, 'hub ready file', 60_000)
  if (!existsSync(ready)) throw new Error(`hub exited before it was ready:\n${p.output()}`)
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { mqttPort: number; mqttTlsPort: number | null; httpPort: number; https: boolean }
  rmSync(ready, { force: true })
  const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  const api = info.https ? adminApi({ api: `https://127.0.0.1:${info.httpPort}`, token: adminToken, ca: opts.tls!.ca }) : adminApi({ api: `http://127.0.0.1:${info.httpPort}`, token: adminToken })
  return { ...p, mqttPort: info.mqttPort, mqttTlsPort: info.mqttTlsPort ?? undefined, httpPort: info.httpPort, adminToken, api }
}

/** Starts an agent process with a JSON config file written next to its ledger; `env` adds to its environment (ROLLCALL_STATS_FILE); its log level is warn unless `logLevel` says otherwise. */
export function startAgentProc(opts: { mqttPort: number; id: string; token: string; dataDir: string; config: Record<string, unknown>; env?: Record<string, string>; logLevel?: string }): Proc {
  const configPath = join(opts.dataDir, `..`, `${opts.id}-config-${Date.now()}.json`)
  // Tests watch samples arrive tick by tick: no group commit unless a test asks for one.
  writeFileSync(configPath, JSON.stringify({ outboxCommitMs: 0, ...opts.config }))
  return startCli(['agent', '--hub', `mqtt://127.0.0.1:${opts.mqttPort}`, '--id', opts.id, '--data', opts.dataDir, '--config', configPath, '--log-level', opts.logLevel ?? 'warn'],
    { ...opts.env, ROLLCALL_TOKEN: opts.token })
}
