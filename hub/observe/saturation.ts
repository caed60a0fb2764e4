import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'

/**
 * How close the hub is to what it can do, in the few figures that rise
 * before samples start to wait (issue #14): an operator sees overload coming
 * in `/api/stats` (`saturation`) and `/metrics` (`rollcall_saturation_*`).
 *
 * - event-loop delay: everything the hub does runs on one event loop; when
 *   it is late, every socket, commit and timer is late by as much. Kept per
 *   window (`windowMs`, 10 s): the p99 and max of the last whole window,
 *   so a reading says "now", not "since start".
 * - the broker's routing backlog and the writer's queue: messages taken in
 *   and not yet routed, rows routed and not yet committed.
 * - oldest unacked: the longest any message has waited at the hub so far
 *   without its ack: the older of the routing backlog's head and the
 *   writer's oldest queued row. Near the commit delay (20 ms) when the hub
 *   keeps up; growing seconds when it does not. (Time a message spends in
 *   the kernel's socket buffers before the hub reads it is not seen here:
 *   the devices' reported outbox backlogs show that side.)
 */

export interface SaturationSources {
  readonly routing: () => { readonly queued: number; readonly oldestMs: number }
  readonly writer: () => { readonly queuedRows: number; readonly oldestMs: number }
}

export interface SaturationStats {
  /** Event-loop delay over the last whole window, in ms. */
  readonly eventLoopDelayP99Ms: number
  readonly eventLoopDelayMaxMs: number
  /** Messages received and waiting to be routed. */
  readonly routingQueued: number
  /** Rows waiting for the next commit. */
  readonly writerQueuedRows: number
  /** The longest a message has waited at the hub so far without its ack, in ms. */
  readonly oldestUnackedMs: number
}

export interface SaturationMonitor {
  read(): SaturationStats
  close(): void
}

const NS_PER_MS = 1e6

export function createSaturationMonitor(sources: SaturationSources, windowMs = 10_000): SaturationMonitor {
  // 10 ms resolution: cheap (one timer), and finer than any delay worth seeing.
  const histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  let last: { p99: number; max: number } | undefined
  const window = setInterval(() => {
    last = snapshot()
    histogram.reset()
  }, windowMs)
  window.unref()

  function snapshot(): { p99: number; max: number } {
    // An empty histogram (no sample yet) reports NaN/huge values: none is 0.
    if (histogram.count === 0) return { p99: 0, max: 0 }
    return { p99: histogram.percentile(99) / NS_PER_MS, max: histogram.max / NS_PER_MS }
  }

  return {
    read() {
      const loop = last ?? snapshot()
      const routing = sources.routing()
      const writer = sources.writer()
      return {
        eventLoopDelayP99Ms: round(loop.p99),
        eventLoopDelayMaxMs: round(loop.max),
        routingQueued: routing.queued,
        writerQueuedRows: writer.queuedRows,
        oldestUnackedMs: round(Math.max(routing.oldestMs, writer.oldestMs)),
      }
    },
    close() {
      clearInterval(window)
      histogram.disable()
    },
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10
}
