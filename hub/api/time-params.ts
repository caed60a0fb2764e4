import { RollcallError } from '../../common/errors.js'
import { parseDurationMs } from '../../common/duration.js'

/** Epoch milliseconds before this (March 1973) are more likely a mistake than a date. */
const MIN_EPOCH_MS = 100_000_000_000

const HINT = 'use a duration ago with its unit (10m, 2h, 7d), an ISO date (2026-01-31T12:00:00Z) or epoch milliseconds'

/**
 * A point in time as users write it: a duration with its unit meaning "that
 * long ago" (`10m`, `2h`, `7d`), an ISO 8601 date, epoch milliseconds, or 0
 * for "the beginning". A bare small number is refused rather than guessed at:
 * `2026` is neither a year nor 2 seconds after 1970 here.
 */
export function parseTimeParam(name: string, text: string, now: number): number {
  if (text === '0') return 0
  if (/^\d+$/.test(text)) {
    const n = Number(text)
    if (n >= MIN_EPOCH_MS) return n
    throw new RollcallError('BAD_REQUEST', `${name}=${text}: a bare number must be epoch milliseconds; ${HINT}`)
  }
  if (/^\d+(\.\d+)?[a-z]+$/.test(text)) {
    const ago = parseDurationMs(text)
    if (ago !== undefined) return now - ago
  }
  const t = Date.parse(text)
  if (!Number.isNaN(t) && /^\d{4}-\d{2}-\d{2}/.test(text)) return t
  throw new RollcallError('BAD_REQUEST', `${name}=${JSON.stringify(text)} is not a time: ${HINT}`)
}

/** A window width such as `1m` or `500ms`; the unit is required. */
export function parseDurationParam(name: string, text: string): number {
  const ms = /^\d+(\.\d+)?[a-z]+$/.test(text) ? parseDurationMs(text) : undefined
  if (ms === undefined || ms < 1) throw new RollcallError('BAD_REQUEST', `${name}=${JSON.stringify(text)} is not a duration: use a number with its unit, e.g. 500ms, 10s, 5m, 1h, 1d`)
  return ms
}

/** Parses since/until together and refuses an empty or reversed range. */
export function parseRange(q: { since?: string | undefined; until?: string | undefined }, now: number, defaultSinceMs: number): { sinceMs: number; untilMs: number } {
  const sinceMs = q.since === undefined ? defaultSinceMs : parseTimeParam('since', q.since, now)
  // Samples stamped a little in the future (device clocks run ahead) are included by default.
  const untilMs = q.until === undefined ? now + 60_000 : parseTimeParam('until', q.until, now)
  if (sinceMs >= untilMs) {
    throw new RollcallError('BAD_REQUEST', `since (${new Date(sinceMs).toISOString()}) must be before until (${new Date(untilMs).toISOString()})`)
  }
  return { sinceMs, untilMs }
}
