import type { NodeCron, ScheduledTask } from 'node-cron'
import { requireCjs } from '../common/cjs.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { JobInput } from './job-queue.js'

/**
 * The agent's own cron schedules (agent config `schedules`). Each tick
 * enqueues a local job, `local:<schedule>:<tickMs>`, which runs like any job
 * (offline too) and is reported as a `job.local` device event through the
 * outbox, never as a hub job update. The tick's time is in the execution id
 * and the queue inserts with INSERT OR IGNORE, so a tick that fires twice
 * runs once (the graphile-worker habit: cron ticks are idempotent per
 * (schedule, tick)).
 *
 * node-cron is loaded only when there are schedules, so an agent without them
 * does not pay for it; it is required as CommonJS so the config check and the
 * scheduler share one copy.
 */

export interface LocalSchedule {
  /** Unique, task-name grammar; part of the execution id. */
  readonly name: string
  /** node-cron syntax: 5 fields, or 6 with seconds first. */
  readonly cron: string
  readonly task: string
  readonly payload?: unknown
  /** IANA zone, e.g. "Europe/Berlin"; the host's zone by default. */
  readonly timezone?: string
  readonly timeoutMs: number
}

export const LOCAL_JOB_ID_PREFIX = 'local:'

let cron: NodeCron | undefined

/** node-cron, loaded on first use. */
export function loadCron(): NodeCron {
  cron ??= requireCjs('node-cron') as NodeCron
  return cron
}

/** The reason a cron expression is not valid, or undefined when it is. */
export function cronProblem(expression: string): string | undefined {
  const v = loadCron().validateDetailed(expression)
  if (v.valid) return undefined
  const first = v.errors[0]
  return first ? `${first.field}: ${first.message}` : 'not a cron expression'
}

/** Whether a time zone name is one this Node knows. */
export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone })
    return true
  } catch {
    return false
  }
}

/** The local job a schedule's tick enqueues; `tickMs` is the tick's scheduled time, to the second. */
export function localJob(schedule: LocalSchedule, tickMs: number): JobInput {
  return {
    execId: `${LOCAL_JOB_ID_PREFIX}${schedule.name}:${tickMs}`,
    // A local job's jobId is its schedule's name (the event reports it).
    jobId: schedule.name,
    name: schedule.task,
    payload: schedule.payload ?? null,
    attempt: 1,
    version: 1,
    timeoutMs: schedule.timeoutMs,
    priority: 0,
  }
}

export interface LocalSchedulesOptions {
  /** Stores the tick's job (source 'local') and wakes the runner. */
  readonly enqueue: (job: JobInput) => void
  readonly clock: Clock
  readonly logger: Logger
}

export class LocalSchedules {
  private readonly schedules: readonly LocalSchedule[]
  private readonly options: LocalSchedulesOptions
  private readonly log: Logger
  private tasks: ScheduledTask[] = []

  constructor(schedules: readonly LocalSchedule[], options: LocalSchedulesOptions) {
    this.schedules = schedules
    this.options = options
    this.log = options.logger.child({ component: 'local-schedules' })
  }

  start(): void {
    if (this.schedules.length === 0 || this.tasks.length > 0) return
    const nodeCron = loadCron()
    const cronLog = {
      info: (message: string) => { this.log.debug({ cron: message }, 'node-cron') },
      warn: (message: string) => { this.log.info({ cron: message }, 'node-cron') },
      error: (message: string | Error) => { this.log.warn({ cron: String(message) }, 'node-cron') },
      debug: (message: string | Error) => { this.log.trace({ cron: String(message) }, 'node-cron') },
    }
    for (const s of this.schedules) {
      const task = nodeCron.schedule(s.cron, (ctx) => { this.tick(s, ctx.date.getTime()) }, {
        name: `local:${s.name}`,
        ...(s.timezone ? { timezone: s.timezone } : {}),
        logger: cronLog,
      })
      // A tick whose timer ran more than a second late (a Pi under load, a long
      // GC pause) is reported missed and skipped by node-cron; run it late
      // instead. Its execution id holds the tick, so it still runs once.
      task.on('execution:missed', (ctx) => {
        this.log.info({ schedule: s.name, tick: ctx.date.getTime() }, 'schedule tick ran late; its job is enqueued now')
        this.tick(s, ctx.date.getTime())
      })
      this.tasks.push(task)
    }
    this.log.info({ schedules: this.schedules.map((s) => s.name) }, 'local schedules started')
  }

  async stop(): Promise<void> {
    const tasks = this.tasks
    this.tasks = []
    for (const t of tasks) await t.destroy()
  }

  private tick(schedule: LocalSchedule, scheduledMs: number): void {
    const tickMs = Math.floor((Number.isFinite(scheduledMs) ? scheduledMs : this.options.clock.now()) / 1000) * 1000
    try {
      this.options.enqueue(localJob(schedule, tickMs))
    } catch (err) {
      this.log.error({ err, schedule: schedule.name }, 'could not enqueue a scheduled job')
    }
  }
}
