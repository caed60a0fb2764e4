import { RollcallError } from '../../common/errors.js'
import { parseDurationMs } from '../../common/duration.js'

/**
 * A point in time as users write it: epoch milliseconds, an ISO 8601 date, or
 * a duration with its unit meaning "that long ago" (`10m`, `2h`, `7d`).
 */
export function parseTimeParam(name: string, text: string, now: number): number {
  if (/^\d+$/.test(text)) return Number(text)
  const ago = parseDurationMs(text)
  if (ago !== undefined) return now - ago
  const t = Date.parse(text)
  if (!Number.isNaN(t)) return t
  throw new RollcallError('BAD_REQUEST', `${name}="${text}" is not a time: use epoch milliseconds, an ISO date (2026-01-31T12:00:00Z) or a duration ago (10m, 2h, 7d)`)
}

export function parseDurationParam(name: string, text: string): number {
  const ms = parseDurationMs(text)
  if (ms === undefined || ms <= 0) throw new RollcallError('INVALID_DURATION', `${name}="${text}" is not a duration: use e.g. 500ms, 10s, 5m, 1h`)
  return ms
}
