import { spawn, spawnSync, type ChildProcess } from 'node:child_process'

/**
 * Tests that drive the real Mosquitto clients need mosquitto_pub/sub. CI
 * installs them (.ci/run), and there a missing client is a failure; on a
 * developer's machine without them those tests are skipped with this reason.
 */
export const MOSQUITTO_CLIENTS = spawnSync('mosquitto_pub', ['--help'], { stdio: 'ignore' }).error === undefined
export const SKIP_WITHOUT_MOSQUITTO = !MOSQUITTO_CLIENTS && process.env.CI !== 'true'
if (SKIP_WITHOUT_MOSQUITTO) {
  process.stderr.write('mosquitto_pub/mosquitto_sub not found: tests that use the real Mosquitto clients are skipped (install them: apt-get install mosquitto-clients)\n')
}

export interface CliResult { readonly code: number | null; readonly stdout: string; readonly stderr: string }

/** Runs a mosquitto client CLI (mosquitto_pub / mosquitto_sub) to completion, with a hard time limit. */
export function runMosquitto(bin: 'mosquitto_pub' | 'mosquitto_sub', args: string[], timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/**
 * Starts a long-running mosquitto_sub; the caller kills it (by its PID) when
 * done. With `countOnly` the lines are counted, not kept (for floods).
 */
export function spawnSubscriber(args: string[], options: { countOnly?: boolean } = {}): { child: ChildProcess; lines: string[]; count: () => number; stderr: () => string } {
  const child = spawn('mosquitto_sub', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let count = 0
  let buf = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => {
    if (options.countOnly) {
      for (let i = d.indexOf(10); i >= 0; i = d.indexOf(10, i + 1)) count++
      return
    }
    buf += d.toString()
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i))
      count++
      buf = buf.slice(i + 1)
    }
  })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  return { child, lines, count: () => count, stderr: () => err }
}

export function mqttArgs(port: number, user?: string, password?: string, clientId?: string): string[] {
  const a = ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv311']
  if (clientId) a.push('-i', clientId)
  if (user) a.push('-u', user)
  if (password) a.push('-P', password)
  return a
}
