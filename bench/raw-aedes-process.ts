import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

/** The baseline broker's script, built next to this file. */
const RAW_AEDES = fileURLToPath(new URL('./raw-aedes-broker.js', import.meta.url))

/**
 * The bare-aedes baseline (raw-aedes-broker.ts) in a process of its own, the
 * way the benchmarks set the hub beside it: started, and its port read from
 * the line it prints once it listens. `stderr` is where the broker's own
 * complaints go ('pipe': the caller reads them from `child.stderr`).
 */
export async function startRawAedes(stderr: 'ignore' | 'inherit' | 'pipe'): Promise<{ child: ChildProcess; port: number; url: string }> {
  const child = spawn(process.execPath, [RAW_AEDES], { stdio: ['ignore', 'pipe', stderr] })
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (l) => resolve((JSON.parse(l) as { port: number }).port))
    child.once('exit', (code) => reject(new Error(`raw aedes exited with ${code}`)))
  })
  return { child, port, url: `mqtt://127.0.0.1:${port}` }
}
