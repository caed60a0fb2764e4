import { renameSync, writeFileSync } from 'node:fs'
import { GCProfiler } from 'node:v8'
import type { AgentStats } from './agent.js'

/**
 * A diagnostic hook for long-running benchmarks (issue #13, the soak): with
 * the environment variable ROLLCALL_STATS_FILE set, `rollcall agent` rewrites
 * that file every few seconds with one JSON object, the agent's own stats
 * beside what only the process itself can see — the V8 heap
 * (`process.memoryUsage()`), its active handles and requests by kind
 * (`process.getActiveResourcesInfo()`), and how many warnings Node raised by
 * name (a MaxListenersExceededWarning is how a listener leak shows), and
 * the heap left after the latest full (mark-compact) collection: heapUsed is
 * a saw tooth that also counts garbage not yet collected, while what a full
 * collection leaves is live data, the figure a leak lifts. It is read with
 * V8's GC profiler, which only watches. An idle agent allocates so little
 * that V8 may not run a full collection for half an hour, so when the process
 * runs with --expose-gc (the soak starts it so) the hook forces one before a
 * snapshot once a minute, a few milliseconds on a heap this size; without
 * the flag only the agent's own collections are seen. A
 * benchmark outside the process reads RSS and file descriptors from /proc;
 * these figures it cannot. Off by default; nothing else reads the file.
 *
 * The file is written beside itself and renamed over, so a reader never sees
 * half of it; the last write comes from stop(), after the agent stopped.
 */

export const STATS_FILE_INTERVAL_MS = 5_000

/** With --expose-gc: a full collection before a snapshot at most this often. */
export const STATS_FILE_FULL_GC_EVERY_MS = 60_000

export interface StatsSnapshot {
  /** Wall-clock time of the snapshot, ms since the epoch. */
  readonly t: number
  /** True for the last snapshot, written once the agent stopped: a reader after a stop knows it has the final figures. */
  readonly final: boolean
  readonly memory: NodeJS.MemoryUsage
  /** Active handles and requests by kind ("Timeout", "TCPSocketWrap", ...). */
  readonly resources: Readonly<Record<string, number>>
  /** Process warnings since start, by name. */
  readonly warnings: Readonly<Record<string, number>>
  readonly gc: GcStats
  readonly agent: AgentStats
}

export interface GcStats {
  /** Full (mark-compact) and other collections seen since the hook started. */
  readonly full: number
  readonly other: number
  /** Heap used right after the latest full collection; undefined before the first. */
  readonly heapAfterFullGc: number | undefined
  /** When that collection ended, ms since the epoch. */
  readonly fullGcAt: number | undefined
}

export interface StatsFile {
  stop(): void
}

export function startStatsFile(path: string, read: () => AgentStats, intervalMs = STATS_FILE_INTERVAL_MS): StatsFile {
  const warnings: Record<string, number> = {}
  const onWarning = (w: Error) => { warnings[w.name] = (warnings[w.name] ?? 0) + 1 }
  process.on('warning', onWarning)
  let gc: GcStats = { full: 0, other: 0, heapAfterFullGc: undefined, fullGcAt: undefined }
  let profiler = new GCProfiler()
  profiler.start()
  // The profiler hands its records over only when stopped: a new one per snapshot.
  const collectGc = (restart: boolean) => {
    const result = profiler.stop()
    for (const entry of result?.statistics ?? []) {
      gc = entry.gcType === 'MarkSweepCompact'
        ? { ...gc, full: gc.full + 1, heapAfterFullGc: entry.afterGC.heapStatistics.usedHeapSize, fullGcAt: result.endTime }
        : { ...gc, other: gc.other + 1 }
    }
    if (restart) {
      profiler = new GCProfiler()
      profiler.start()
    }
  }
  const forceGc = (globalThis as { gc?: () => void }).gc
  let forcedAt = Date.now()
  const write = (final = false) => {
    if (forceGc && Date.now() - forcedAt >= STATS_FILE_FULL_GC_EVERY_MS) {
      forcedAt = Date.now()
      forceGc()
    }
    collectGc(!final)
    const resources: Record<string, number> = {}
    for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1
    const snapshot: StatsSnapshot = { t: Date.now(), final, memory: process.memoryUsage(), resources, warnings, gc, agent: read() }
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
  const timer = setInterval(() => write(), intervalMs).unref()
  write()
  let stopped = false
  return {
    stop() {
      if (stopped) return
      stopped = true
      clearInterval(timer)
      process.off('warning', onWarning)
      write(true)
    },
  }
}
