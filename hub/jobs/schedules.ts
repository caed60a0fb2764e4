import cron, { type ScheduledTask } from 'node-cron'
import type { Clock } from '../../common/clock.js'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import { isDeviceId } from '../../protocol/ids.js'
import type { JobSpec, Jobs } from './jobs.js'
import type { ScheduleRow, ScheduleStore } from './schedule-stores.js'

/**
 * Hub-side cron schedules that create jobs. The schedules table is owned
 * here; each schedule runs as a node-cron task in the hub process.
 *
 * A tick is identified by its scheduled second (node-cron's context.date),
 * not by when the callback ran, and the jobs table holds (schedule, tick)
 * unique: a tick that fires twice (a timer hiccup, two hub processes on one
 * data dir by mistake, a restart within the same second) makes one job.
 * Ticks that fell while the hub was down are not made up afterwards.
 *
 * The rows live in a ScheduleStore (schedule-stores.ts): the hub's SQLite
 * file, or a PostgreSQL shared by several hubs. There every hub runs every
 * schedule, the key above makes one job per tick whichever hub's timer
 * fires first, and each hub reads the table again every `syncMs` so a
 * schedule added or removed through another hub starts or stops here too.
 */

/** A job as a schedule makes it: a JobSpec without an absolute expiry; `expiresInMs` counts from the tick. */
export interface JobTemplate extends Omit<JobSpec, 'expiresAt'> {
  readonly expiresInMs?: number
}

export interface ScheduleSpec {
  readonly name: string
  readonly cron: string
  readonly timezone?: string
  readonly job: JobTemplate
}

export interface ScheduleView {
  readonly id: number
  readonly name: string
  readonly cron: string
  readonly timezone: string | null
  readonly job: JobTemplate
  readonly createdAt: number
  /** The next tick, ms since the epoch (null when the expression never matches again). */
  readonly nextRunAt: number | null
}

/** The identity of a tick: its scheduled time to the second. */
export function tickOf(scheduled: Date): number {
  return Math.floor(scheduled.getTime() / 1000) * 1000
}

function validTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
    return true
  } catch {
    return false
  }
}

export interface SchedulesDeps {
  readonly store: ScheduleStore
  readonly jobs: Jobs
  readonly clock: Clock
  readonly logger: Logger
  /** How often a hub on a shared store reads the schedules again (ms). */
  readonly syncMs?: number
}

export function createSchedules(deps: SchedulesDeps) {
  const { store, jobs, logger } = deps
  const tasks = new Map<number, ScheduledTask>()
  let started = false
  let syncTimer: NodeJS.Timeout | undefined
  let syncing: Promise<void> | undefined
  // Ticks being made now: the hub's stop waits for them (the stores close after it).
  const firing = new Set<Promise<unknown>>()
  const counts = { made: 0, madeElsewhere: 0, failed: 0 }
  // Changes to the tasks one at a time: a sync that read the rows before an add committed must not stop the added schedule.
  let turn: Promise<unknown> = Promise.resolve()
  function exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = turn.then(fn, fn)
    turn = run.catch(() => undefined)
    return run
  }

  function view(r: ScheduleRow): ScheduleView {
    const task = tasks.get(r.id)
    const next = task?.getNextRun()
    return {
      id: r.id, name: r.name, cron: r.cron, timezone: r.timezone, job: JSON.parse(r.template) as JobTemplate,
      createdAt: r.created_at, nextRunAt: next ? next.getTime() : null,
    }
  }

  /** Makes the tick's job; a tick that already made one makes nothing. Returns the job id, if one was made. */
  function fire(scheduleId: number, tick: number): Promise<string | undefined> {
    const made = fireOnce(scheduleId, tick)
    firing.add(made)
    void made.finally(() => firing.delete(made))
    return made
  }

  async function fireOnce(scheduleId: number, tick: number): Promise<string | undefined> {
    let r: ScheduleRow | undefined
    try {
      // Inside the try: node-cron does not wait for this promise, so nothing may escape it.
      r = await store.byId(scheduleId)
      if (!r) return undefined
      const { expiresInMs, ...template } = JSON.parse(r.template) as JobTemplate
      const job = await jobs.create({ ...template, ...(expiresInMs !== undefined ? { expiresAt: tick + expiresInMs } : {}) }, { scheduleId, tick })
      if (job) counts.made++
      else {
        // Another hub's timer (or this one's, twice) got there first: the usual case in a cluster.
        counts.madeElsewhere++
        logger.debug({ schedule: r.name, tick }, 'schedule tick already made its job; not made again')
      }
      return job?.id
    } catch (err) {
      // A target that emptied out (devices removed) must not stop the schedule.
      counts.failed++
      logger.error({ err, schedule: r?.name ?? scheduleId, tick }, 'schedule tick could not create its job')
      return undefined
    }
  }

  function schedule(r: ScheduleRow): void {
    const task = cron.schedule(r.cron, (ctx) => { void fire(r.id, tickOf(ctx.date)) }, {
      name: `schedule:${r.name}`,
      ...(r.timezone !== null ? { timezone: r.timezone } : {}),
    })
    // node-cron skips a tick whose timer ran more than a second late (a long GC
    // pause, a busy machine) and reports it as missed: a nightly job must not be
    // lost to a one-second stall, so the missed tick makes its job now. Its key
    // (schedule, tick) keeps that to one job, whichever hub makes it.
    task.on('execution:missed', (ctx) => {
      const tick = tickOf(ctx.date)
      logger.warn({ schedule: r.name, tick, lateMs: deps.clock.now() - tick }, 'schedule tick ran late; its job is made now')
      void fire(r.id, tick)
    })
    tasks.set(r.id, task)
  }

  function unschedule(id: number): void {
    void tasks.get(id)?.destroy()
    tasks.delete(id)
  }

  /** Runs the stored schedules, no more, no fewer (another hub may have added or removed some). */
  const sync = () => exclusive(async () => {
    const rows = await store.all()
    if (!started) return
    const ids = new Set(rows.map((r) => r.id))
    for (const id of [...tasks.keys()]) if (!ids.has(id)) unschedule(id)
    for (const r of rows) if (!tasks.has(r.id)) schedule(r)
  })

  function syncLater(): void {
    if (!started || !store.shared) return
    syncTimer = setTimeout(() => {
      syncing = sync()
        .catch((err: unknown) => { logger.warn({ err }, 'could not read the schedules again; tried at the next sync') })
        .finally(() => { syncing = undefined; syncLater() })
    }, deps.syncMs ?? 5000)
    syncTimer.unref()
  }

  async function find(idOrName: string): Promise<ScheduleRow> {
    const id = /^\d+$/.test(idOrName) ? Number(idOrName) : undefined
    // An id past any there can be is simply not found (PostgreSQL would refuse it as out of range).
    const r = id !== undefined ? (Number.isSafeInteger(id) ? await store.byId(id) : undefined) : await store.byName(idOrName)
    if (!r) throw new RollcallError('SCHEDULE_NOT_FOUND', `no schedule "${idOrName}" (rollcall schedule list shows them)`)
    return r
  }

  return {
    async add(spec: ScheduleSpec): Promise<ScheduleView> {
      if (!isDeviceId(spec.name)) throw new RollcallError('INVALID_NAME', `schedule name ${JSON.stringify(spec.name)}: 3 to 64 lowercase letters, digits, "-" and "_"`)
      if (!cron.validate(spec.cron)) {
        throw new RollcallError('BAD_REQUEST', `"${spec.cron}" is not a cron expression: five fields (minute hour day month weekday), or six with seconds first, e.g. "*/5 * * * *"`)
      }
      if (spec.timezone !== undefined && !validTimezone(spec.timezone)) throw new RollcallError('BAD_REQUEST', `unknown timezone "${spec.timezone}"; use an IANA name such as "Europe/Berlin" or "UTC"`)
      jobs.check(spec.job)
      const r = await exclusive(async () => {
        const made = await store.insert({ name: spec.name, cron: spec.cron, timezone: spec.timezone ?? null, template: JSON.stringify(spec.job), created_at: deps.clock.now() })
        if (made !== undefined && started && !tasks.has(made.id)) schedule(made)
        return made
      })
      if (r === undefined) throw new RollcallError('SCHEDULE_EXISTS', `schedule "${spec.name}" exists; remove it first`)
      logger.info({ schedule: spec.name, cron: spec.cron }, 'schedule added')
      return view(r)
    },
    list: async (): Promise<ScheduleView[]> => (await store.all()).map(view),
    get: async (idOrName: string): Promise<ScheduleView> => view(await find(idOrName)),
    async remove(idOrName: string): Promise<void> {
      const r = await find(idOrName)
      // Removed meanwhile through another hub: removed all the same.
      await exclusive(async () => {
        await store.remove(r.id)
        unschedule(r.id)
      })
      logger.info({ schedule: r.name }, 'schedule removed')
    },
    fire,
    /** Ticks this hub made a job for, found made already (by another hub, or a second firing), or could not make one for. */
    stats: () => ({ ...counts, running: tasks.size }),
    /** Runs the stored schedules; on a shared store, follows the other hubs' changes from then on. */
    async start(): Promise<void> {
      if (started) return
      started = true
      await sync()
      syncLater()
    },
    async stop(): Promise<void> {
      started = false
      if (syncTimer) clearTimeout(syncTimer)
      syncTimer = undefined
      await syncing
      for (const id of [...tasks.keys()]) unschedule(id)
      await Promise.allSettled([...firing])
    },
  }
}

export type Schedules = ReturnType<typeof createSchedules>
