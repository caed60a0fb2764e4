import { renameSync, writeFileSync } from 'node:fs'
import type { AgentStats } from './agent.js'

/**
 * A diagnostic hook for long-running benchmarks (issue #13, the soak): with
 * the environment variable ROLLCALL_STATS_FILE set, `rollcall agent` rewrites
 * that file every few seconds with one JSON object, the agent's own stats
 * beside what only the process itself can see — the V8 heap
 * (`process.memoryUsage()`), its active handles and requests by kind
 * (`process.getActiveResourcesInfo()`), and how many warnings Node raised by
 * name (a MaxListenersExceededWarning is how a listener leak shows). A
 * benchmark outside the process reads RSS and file descriptors from /proc;
 * these figures it cannot. Off by default; nothing else reads the file.
 *
 * The file is written beside itself and renamed over, so a reader never sees
 * half of it; the last write comes from stop(), after the agent stopped.
 */

export const STATS_FILE_INTERVAL_MS = 5_000

export interface StatsSnapshot {
  /** Wall-clock time of the snapshot, ms since the epoch. */
  readonly t: number
  readonly memory: NodeJS.MemoryUsage
  /** Active handles and requests by kind ("Timeout", "TCPSocketWrap", ...). */
  readonly resources: Readonly<Record<string, number>>
  /** Process warnings since start, by name. */
  readonly warnings: Readonly<Record<string, number>>
  readonly agent: AgentStats
}

export interface StatsFile {
  stop(): void
}

export function startStatsFile(path: string, read: () => AgentStats, intervalMs = STATS_FILE_INTERVAL_MS): StatsFile {
  const warnings: Record<string, number> = {}
  const onWarning = (w: Error) => { warnings[w.name] = (warnings[w.name] ?? 0) + 1 }
  process.on('warning', onWarning)
  const write = () => {
    const resources: Record<string, number> = {}
    for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1
    const snapshot: StatsSnapshot = { t: Date.now(), memory: process.memoryUsage(), resources, warnings, agent: read() }
    try {
      writeFileSync(`${path}.tmp`, JSON.stringify(snapshot))
      renameSync(`${path}.tmp`, path)
    } catch (err) {
      // A diagnostic must not take the agent down: say so once on stderr and carry on.
      if (!failed) process.stderr.write(`rollcall: cannot write ROLLCALL_STATS_FILE ${path}: ${String(err)}\n`)
      failed = true
    }
  }
  let failed = false
  // unref: the hook never keeps a stopping agent alive.
  const timer = setInterval(write, intervalMs).unref()
  write()
  let stopped = false
  return {
    stop() {
      if (stopped) return
      stopped = true
      clearInterval(timer)
      process.off('warning', onWarning)
      write()
    },
  }
}
