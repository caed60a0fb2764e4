const UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/

/**
 * Parses "250ms", "10s", "5m", "2h", "7d" (a bare number is milliseconds).
 * Returns undefined for anything else so callers can say what to fix.
 */
export function parseDurationMs(text: string): number | undefined {
  const m = DURATION_RE.exec(text.trim())
  if (!m) return undefined
  const unit = (m[2] ?? 'ms') as keyof typeof UNITS_MS
  return Math.round(Number(m[1]) * UNITS_MS[unit])
}

/** "1h 2m 3s"-style rendering for humans, at most two units. */
export function formatDurationMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  const parts: string[] = []
  let rest = Math.floor(ms / 1000)
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`)
      rest %= size
    }
    if (parts.length === 2) break
  }
  return parts.join(' ')
}
