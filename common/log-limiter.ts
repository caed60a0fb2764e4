import type { Clock } from './clock.js'
import type { Logger } from './logger.js'

/**
 * Bounds the log lines a remote party can make us write (M24: one SUBSCRIBE
 * with 10,000 filters wrote 10,000 warn lines). Lines are grouped by message
 * and subject (e.g. `{ clientId }`); in each window of `windowMs` the first
 * `linesPerWindow` lines of a group are written as they come, the rest are
 * counted and summed up in one line when the window ends:
 *
 *   subscribe denied: 9990 more like this from this subject in the last 10 s
 *   { clientId: "dev-b", suppressed: 9990, windowMs: 10000 }
 *
 * Per group: quiet → counting (window open, lines written) → suppressing
 * (over the limit, lines counted) → summary written at the window's end →
 * forgotten. At most `maxGroups` are tracked; the oldest is summed up and
 * dropped first. Summaries of windows that ended are written by a timer that
 * runs only while something is suppressed, and by `flush()`.
 */

export type LimitedLevel = 'warn' | 'info' | 'debug'

export interface LogLimiterOptions {
  readonly logger: Logger
  readonly clock: Clock
  readonly linesPerWindow: number
  readonly windowMs: number
  readonly maxGroups: number
}

/** Who the lines are about: a few short identifying fields, e.g. `{ clientId }` or `{ remoteAddress }`. */
export type LogSubject = Readonly<Record<string, string | number | undefined>>

export interface LogLimiter {
  /** Writes `{ ...subject, ...detail }` with `msg`, unless this group is over its limit for the window. */
  log(level: LimitedLevel, subject: LogSubject, detail: object, msg: string): void
  /** Writes the summaries of windows that have ended. */
  flush(): void
  /** Writes every pending summary now and stops the timer. */
  close(): void
}

export const LOG_LIMITER_DEFAULTS = { linesPerWindow: 10, windowMs: 10_000, maxGroups: 10_000 } as const

interface Group {
  readonly level: LimitedLevel
  readonly subject: LogSubject
  readonly msg: string
  windowStart: number
  written: number
  suppressed: number
}

export function createLogLimiter(options: LogLimiterOptions): LogLimiter {
  const { logger, clock, linesPerWindow, windowMs, maxGroups } = options
  if (!(linesPerWindow >= 1) || !(windowMs > 0) || !(maxGroups >= 1)) {
    throw new RangeError(`log limiter needs linesPerWindow >= 1, windowMs > 0 and maxGroups >= 1 (got ${linesPerWindow}, ${windowMs}, ${maxGroups})`)
  }
  const groups = new Map<string, Group>()
  let timer: NodeJS.Timeout | undefined

  const summarize = (g: Group): void => {
    if (g.suppressed === 0) return
    const seconds = Math.round(windowMs / 1000)
    logger[g.level]({ ...g.subject, suppressed: g.suppressed, windowMs },
      `${g.msg}: ${g.suppressed} more like this from this ${Object.keys(g.subject).join('/') || 'source'} in the last ${seconds} s`)
    g.suppressed = 0
  }

  const flush = (): void => {
    const now = clock.now()
    for (const [key, g] of groups) {
      if (now - g.windowStart < windowMs) continue
      summarize(g)
      groups.delete(key)
    }
    if (timer !== undefined && ![...groups.values()].some((g) => g.suppressed > 0)) {
      clearInterval(timer)
      timer = undefined
    }
  }

  const keyOf = (level: LimitedLevel, subject: LogSubject, msg: string): string => {
    let key = `${level}\u0000${msg}`
    for (const k in subject) key += `\u0000${k}=${String(subject[k])}`
    return key
  }

  return {
    log(level, subject, detail, msg) {
      const now = clock.now()
      const key = keyOf(level, subject, msg)
      let g = groups.get(key)
      if (g !== undefined && now - g.windowStart >= windowMs) {
        summarize(g)
        groups.delete(key)
        g = undefined
      }
      if (g === undefined) {
        if (groups.size >= maxGroups) {
          const oldest = groups.entries().next().value
          if (oldest !== undefined) {
            summarize(oldest[1])
            groups.delete(oldest[0])
          }
        }
        g = { level, subject, msg, windowStart: now, written: 0, suppressed: 0 }
        groups.set(key, g)
      }
      if (g.written < linesPerWindow) {
        g.written++
        logger[level]({ ...subject, ...detail }, msg)
        return
      }
      g.suppressed++
      if (timer === undefined) {
        timer = setInterval(flush, windowMs)
        timer.unref()
      }
    },
    flush,
    close() {
      for (const g of groups.values()) summarize(g)
      groups.clear()
      if (timer !== undefined) clearInterval(timer)
      timer = undefined
    },
  }
}
