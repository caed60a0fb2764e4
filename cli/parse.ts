import { InvalidArgumentError } from 'commander'

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
