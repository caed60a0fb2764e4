/**
 * SIGINT/SIGTERM run `stop` once; a second signal, a moment later, exits at
 * once. Only CLI entry points handle signals: the hub and agent libraries
 * just expose stop().
 *
 * One Ctrl-C can arrive twice (issue #11): the terminal sends SIGINT to the
 * whole foreground process group, so under `npm start` or `npx rollcall` both
 * npm and node get it, and npm forwards its copy to node a few milliseconds
 * later. A repeat within REPEAT_WINDOW_MS of the first signal is taken as that
 * same Ctrl-C and ignored, so one Ctrl-C gives the graceful stop (SQLite
 * checkpointed and closed, no -wal left behind); a second Ctrl-C after it
 * still forces the exit.
 */

export const REPEAT_WINDOW_MS = 1000

/** What a shutdown signal means, given when the first one came (undefined: this is the first). */
export type SignalVerdict = 'stop' | 'ignore' | 'force'

export function signalVerdict(firstAtMs: number | undefined, nowMs: number): SignalVerdict {
  if (firstAtMs === undefined) return 'stop'
  return nowMs - firstAtMs < REPEAT_WINDOW_MS ? 'ignore' : 'force'
}

/**
 * A handler for SIGINT and SIGTERM: the first signal calls `onFirst`, a repeat
 * within the window is dropped, a later one calls `onForce`. Returns a function
 * that removes the handler.
 */
export function onSignals(onFirst: (signal: NodeJS.Signals) => void, onForce: (signal: NodeJS.Signals) => void, now: () => number = Date.now): () => void {
  let firstAtMs: number | undefined
  const handler = (signal: NodeJS.Signals) => {
    const t = now()
    switch (signalVerdict(firstAtMs, t)) {
      case 'stop':
        firstAtMs = t
        onFirst(signal)
        return
      case 'ignore':
        return
      case 'force':
        onForce(signal)
        return
    }
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return () => {
    process.off('SIGINT', handler)
    process.off('SIGTERM', handler)
  }
}

export function onShutdownSignal(stop: () => Promise<void>): void {
  onSignals(() => {
    stop().then(
      () => { process.exitCode ??= 0 },
      (err: unknown) => {
        process.stderr.write(`rollcall: error while stopping: ${String(err)}\n`)
        process.exitCode = 1
      },
    ).finally(() => {
      // Anything still holding the loop open after a clean stop is a leak; don't hang on it.
      setTimeout(() => process.exit(), 2000).unref()
    })
  }, (signal) => {
    process.stderr.write(`rollcall: ${signal} again, exiting now\n`)
    process.exit(130)
  })
}

/** SIGHUP: read configuration files again (the hub's TLS certificate), the daemon convention. Returns a function that removes the handler. */
export function onReloadSignal(reload: () => void): () => void {
  const handler = () => reload()
  process.on('SIGHUP', handler)
  return () => { process.off('SIGHUP', handler) }
}
