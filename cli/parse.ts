import { InvalidArgumentError } from './commander.js'
import { parseDurationMs } from '../common/duration.js'
import { PERCENT_EXAMPLE, RATE_EXAMPLE, parsePercent, parseRatePerMinute } from '../common/rate.js'

/** Flag value parsers that say what to fix. */
export function intFlag(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(`--${name} must be a whole number from ${min} to ${max}, got "${value}"`)
  }
  return n
}

export function numberFlag(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isFinite(n) || n <= min) throw new InvalidArgumentError(`--${name} must be a number above ${min}, got "${value}"`)
  return n
}

/** A duration with its unit (30s, 10m, 1h); a bare number is refused, since it could mean seconds as well as milliseconds. */
export function durationFlag(name: string, value: string | undefined, min = 1): number | undefined {
  if (value === undefined) return undefined
  const ms = /^\d+(\.\d+)?[a-z]+$/.test(value.trim()) ? parseDurationMs(value) : undefined
  if (ms === undefined || ms < min) throw new InvalidArgumentError(`--${name} must be a duration with its unit (ms, s, m, h, d), e.g. 30s, 10m, 1h; got "${value}"`)
  return ms
}

export function rateFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const perMinute = parseRatePerMinute(value)
  if (perMinute === undefined) throw new InvalidArgumentError(`--${name} must be a rate above zero: ${RATE_EXAMPLE}; got "${value}"`)
  return perMinute
}

export function percentFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const pct = parsePercent(value)
  if (pct === undefined) throw new InvalidArgumentError(`--${name} must be a percentage: ${PERCENT_EXAMPLE}; got "${value}"`)
  return pct
}

export function jsonFlag(name: string, value: string | undefined): unknown {
  if (value === undefined) return undefined
  try {
    return JSON.parse(value) as unknown
  } catch (err) {
    throw new InvalidArgumentError(`--${name} is not valid JSON (${(err as Error).message}); quote it for the shell, e.g. --${name} '{"url":"https://example.com/fw.bin"}'`)
  }
}

export function choiceFlag<T extends string>(name: string, value: string | undefined, choices: readonly T[]): T | undefined {
  if (value === undefined) return undefined
  if ((choices as readonly string[]).includes(value)) return value as T
  throw new InvalidArgumentError(`--${name} must be one of ${choices.join(', ')}; got "${value}"`)
}
