import cron, { type ScheduledTask } from 'node-cron'
import type { Clock } from '../../common/clock.js'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import type { Db } from '../../common/sqlite.js'
import { isDeviceId } from '../../protocol/ids.js'
import type { JobSpec, Jobs } from './jobs.js'

/**
 * Hub-side cron schedules that create jobs. The schedules table is owned
 * here; each schedule runs as a node-cron task in the hub process.
 *
 * A tick is identified by its scheduled second (node-cron's context.date),
 * not by when the callback ran, and the jobs table holds (schedule, tick)
 * unique: a tick that fires twice (a timer hiccup, two hub processes on one
 * data dir by mistake, a restart within the same second) makes one job.
 * Ticks that fell while the hub was down are not made up afterwards.
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

interface ScheduleRow { id: number; name: string; cron: string; timezone: string | null; template: string; created_at: number }

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
  readonly db: Db
  readonly jobs: Jobs
  readonly clock: Clock
  readonly logger: Logger
}

export function createSchedules(deps: SchedulesDeps) {
  const { db, jobs, logger } = deps
  const s = {
    insert: db.prepare<[string, string, string | null, string, number]>('INSERT INTO schedules (name, cron, timezone, template, created_at) VALUES (?, ?, ?, ?, ?)'),
    all: db.prepare<[], ScheduleRow>('SELECT * FROM schedules ORDER BY name'),
    byName: db.prepare<[string], ScheduleRow>('SELECT * FROM schedules WHERE name = ?'),
    byId: db.prepare<[number], ScheduleRow>('SELECT * FROM schedules WHERE id = ?'),
    remove: db.prepare<[number]>('DELETE FROM schedules WHERE id = ?'),
  }
  const tasks = new Map<number, ScheduledTask>()
  let started = false

  function view(r: ScheduleRow): ScheduleView {
    const task = tasks.get(r.id)
    const next = task?.getNextRun()
    return {
      id: r.id, name: r.name, cron: r.cron, timezone: r.timezone, job: JSON.parse(r.template) as JobTemplate,
      createdAt: r.created_at, nextRunAt: next ? next.getTime() : null,
    }
  }

  /** Makes the tick's job; a tick that already made one makes nothing. Returns the job id, if one was made. */
  async function fire(scheduleId: number, tick: number): Promise<string | undefined> {
    let r: ScheduleRow | undefined
    try {
      // Inside the try: node-cron does not wait for this promise, so nothing may escape it.
      r = s.byId.get(scheduleId)
      if (!r) return undefined
      const { expiresInMs, ...template } = JSON.parse(r.template) as JobTemplate
      const job = await jobs.create({ ...template, ...(expiresInMs !== undefined ? { expiresAt: tick + expiresInMs } : {}) }, { scheduleId, tick })
      if (!job) logger.info({ schedule: r.name, tick }, 'schedule tick already made its job; not made again')
      return job?.id
    } catch (err) {
      // A target that emptied out (devices removed) must not stop the schedule.
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

  function find(idOrName: string): ScheduleRow {
    const r = /^\d+$/.test(idOrName) ? s.byId.get(Number(idOrName)) : s.byName.get(idOrName)
    if (!r) throw new RollcallError('SCHEDULE_NOT_FOUND', `no schedule "${idOrName}" (rollcall schedule list shows them)`)
    return r
  }

  return {
    add(spec: ScheduleSpec): ScheduleView {
      if (!isDeviceId(spec.name)) throw new RollcallError('INVALID_NAME', `schedule name ${JSON.stringify(spec.name)}: 3 to 64 lowercase letters, digits, "-" and "_"`)
      if (!cron.validate(spec.cron)) {
        throw new RollcallError('BAD_REQUEST', `"${spec.cron}" is not a cron expression: five fields (minute hour day month weekday), or six with seconds first, e.g. "*/5 * * * *"`)
      }
      if (spec.timezone !== undefined && !validTimezone(spec.timezone)) throw new RollcallError('BAD_REQUEST', `unknown timezone "${spec.timezone}"; use an IANA name such as "Europe/Berlin" or "UTC"`)
      jobs.check(spec.job)
      if (s.byName.get(spec.name)) throw new RollcallError('SCHEDULE_EXISTS', `schedule "${spec.name}" exists; remove it first`)
      const id = Number(s.insert.run(spec.name, spec.cron, spec.timezone ?? null, JSON.stringify(spec.job), deps.clock.now()).lastInsertRowid)
      const r = s.byId.get(id)!
      if (started) schedule(r)
      logger.info({ schedule: spec.name, cron: spec.cron }, 'schedule added')
      return view(r)
    },
    list: (): ScheduleView[] => s.all.all().map(view),
    get: (idOrName: string): ScheduleView => view(find(idOrName)),
    remove(idOrName: string): void {
      const r = find(idOrName)
      s.remove.run(r.id)
      void tasks.get(r.id)?.destroy()
      tasks.delete(r.id)
      logger.info({ schedule: r.name }, 'schedule removed')
    },
    fire,
    start(): void {
      if (started) return
      started = true
      for (const r of s.all.all()) schedule(r)
    },
    stop(): void {
      started = false
      for (const t of tasks.values()) void t.destroy()
      tasks.clear()
    },
  }
}

export type Schedules = ReturnType<typeof createSchedules>
