import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { FleetReport, FleetSpec } from '../../devices-sim/fleet-runner.js'
import { within } from './leaks.js'

const RUNNER = fileURLToPath(new URL('../../dist/devices-sim/fleet-runner.js', import.meta.url))

/** A fleet of real agents in a child process (devices-sim/fleet-runner), reporting totals every reportEveryMs. */
export function startFleet(spec: FleetSpec, workDir: string): { child: ChildProcess; last: () => FleetReport | undefined; stop: () => Promise<void> } {
  const path = join(workDir, `fleet-${Date.now()}.json`)
  writeFileSync(path, JSON.stringify(spec))
  const child = spawn(process.execPath, [RUNNER, path], { stdio: ['ignore', 'pipe', 'inherit'] })
  let last: FleetReport | undefined
  createInterface({ input: child.stdout }).on('line', (l) => {
    try { last = JSON.parse(l) as FleetReport } catch { /* not a report line */ }
  })
  return {
    child,
    last: () => last,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await within(exited, 15_000, undefined)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    },
  }
}
