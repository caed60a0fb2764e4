/**
 * SIGINT/SIGTERM run `stop` once; a second signal exits at once. Only CLI
 * entry points handle signals: the hub and agent libraries just expose stop().
 */
export function onShutdownSignal(stop: () => Promise<void>): void {
  let stopping = false
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`rollcall: ${signal} again, exiting now\n`)
      process.exit(130)
    }
    stopping = true
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
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
}
