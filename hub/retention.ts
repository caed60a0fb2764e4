import cron from 'node-cron'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { HubConfig } from './config.js'

/**
 * Retention: at each tick of `retentionCron`, the raw samples and events
 * older than `retentionDays`, the finished jobs older than
 * `jobRetentionDays` and the command record older than
 * `commandRetentionDays` (with the rule firings that made them) are deleted, in that order, each by the prune of
 * the capability that owns the table. A tick that comes while the last one
 * still prunes is skipped; a failure is logged and the next tick tries again.
 */

export type RetentionOptions = Pick<HubConfig, 'retentionCron' | 'retentionDays' | 'jobRetentionDays' | 'commandRetentionDays'>

export interface RetentionDeps {
  readonly telemetry: { prune(cutoff: number): Promise<{ readonly samples: number; readonly events: number }> }
  readonly jobs: { prune(cutoff: number): Promise<number> }
  readonly commands: { prune(cutoff: number): Promise<number> }
  readonly rules: { prune(cutoff: number): Promise<number> }
  readonly clock: Clock
  readonly logger: Logger
}

/** Starts the schedule; the returned function stops it, after the step of a pass under way (the stores close next). */
export function startRetention(config: RetentionOptions, deps: RetentionDeps): () => Promise<void> {
  const { clock, logger: log } = deps
  let pass: Promise<void> | undefined
  let stopped = false
  const retention = cron.schedule(config.retentionCron, () => {
    if (pass || stopped) return
    pass = prune().finally(() => { pass = undefined })
  }, { name: 'retention' })

  async function prune(): Promise<void> {
    const cutoff = clock.now() - config.retentionDays * 86_400_000
    try {
      const pruned = await deps.telemetry.prune(cutoff)
      log.info({ cutoff, ...pruned }, 'retention: pruned raw samples and events')
      if (stopped) return
      const jobCutoff = clock.now() - config.jobRetentionDays * 86_400_000
      const jobsPruned = await deps.jobs.prune(jobCutoff)
      log.info({ cutoff: jobCutoff, jobs: jobsPruned }, 'retention: pruned finished jobs')
      if (stopped) return
      const commandCutoff = clock.now() - config.commandRetentionDays * 86_400_000
      const commandsPruned = await deps.commands.prune(commandCutoff)
      log.info({ cutoff: commandCutoff, commands: commandsPruned }, 'retention: pruned the command record')
      if (stopped) return
      // A firing's trace points at its commands: it goes with them.
      const firingsPruned = await deps.rules.prune(commandCutoff)
      log.info({ cutoff: commandCutoff, firings: firingsPruned }, 'retention: pruned rule firings')
    } catch (err) {
      log.error({ err, cutoff }, 'retention failed; it runs again at the next tick')
    }
  }

  return async () => {
    stopped = true
    void retention.destroy()
    await pass
  }
}
