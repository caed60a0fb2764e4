/**
 * Rates as people write them for jobs (issue #3): a rollout's pace and the
 * failure rate at which a rollout aborts. Both parsers return undefined for
 * anything they do not accept, so callers can name the field and show an
 * example (RATE_EXAMPLE, PERCENT_EXAMPLE).
 */

const PER_MINUTE = { s: 60, sec: 60, second: 60, m: 1, min: 1, minute: 1, h: 1 / 60, hr: 1 / 60, hour: 1 / 60, d: 1 / 1440, day: 1 / 1440 } as const

const RATE_RE = /^(\d+(?:\.\d+)?)\s*(?:\/\s*([a-z]+))?$/

export const RATE_EXAMPLE = '60/min, 5/s, 100/h, or a plain number (per minute)'

/** "60/min", "5/s", "100/h", "2/day", or a bare number (per minute) → releases per minute; above zero. */
export function parseRatePerMinute(text: string): number | undefined {
  const m = RATE_RE.exec(text.trim().toLowerCase())
  if (!m) return undefined
  const unit = m[2] ?? 'min'
  if (!Object.hasOwn(PER_MINUTE, unit)) return undefined
  const perMinute = Number(m[1]) * PER_MINUTE[unit as keyof typeof PER_MINUTE]
  return perMinute > 0 && Number.isFinite(perMinute) ? perMinute : undefined
}

export const PERCENT_EXAMPLE = '"20%" or 20 (more than 0, at most 100)'

/** "20%", "20", "12.5%" → 20, 20, 12.5; more than 0 and at most 100. */
export function parsePercent(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(text.trim())
  if (!m) return undefined
  const pct = Number(m[1])
  return pct > 0 && pct <= 100 ? pct : undefined
}
