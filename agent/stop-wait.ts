/**
 * How the agent's parts wait while they stop: for work outside the process
 * to end (a handler's shell command, the broker's PUBACK of a death), never
 * longer than a grace period. The grace stays on real time whatever the
 * injected clock: what it bounds runs on real time, and a test's manual
 * clock, which nothing advances during a stop, must not hang a stop.
 *
 * The job runner and the command runner wait the same way: stop() gives the
 * running handlers up to the grace to finish, and the runner wakes the wait
 * when its last run ends.
 */

/** Waits for `promise`, at most `ms` of real time; resolves either way. */
export function waitAtMost(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) }),
  ]).finally(() => { clearTimeout(timer) })
}

/** A runner's stop() waiting for "none left running". */
export class IdleWaiters {
  private waiters: Array<() => void> = []

  /** Resolves at the next wake(), or after graceMs of real time. */
  wait(graceMs: number): Promise<void> {
    return waitAtMost(new Promise<void>((resolve) => { this.waiters.push(resolve) }), graceMs)
  }

  /** The last run ended: every wait resolves. */
  wake(): void {
    for (const resolve of this.waiters.splice(0)) resolve()
  }
}
