/**
 * The last N latencies in a ring, for percentiles without unbounded memory.
 * Recording is O(1); percentiles sort a copy, so call them on a report, not
 * per message.
 */
export class LatencyWindow {
  private readonly values: Float64Array
  private next = 0
  private filled = 0
  private total = 0

  constructor(size = 2048) {
    this.values = new Float64Array(size)
  }

  record(ms: number): void {
    this.values[this.next] = ms
    this.next = (this.next + 1) % this.values.length
    if (this.filled < this.values.length) this.filled++
    this.total++
  }

  /** Everything recorded so far (not just the window). */
  get count(): number {
    return this.total
  }

  /** The recorded values in the window, in no particular order. */
  snapshot(): Float64Array {
    return this.values.slice(0, this.filled)
  }

  summary(): { count: number; p50: number; p99: number; max: number } {
    return { count: this.total, ...percentiles(this.snapshot()) }
  }
}

export function percentiles(values: ArrayLike<number>): { p50: number; p99: number; max: number } {
  if (values.length === 0) return { p50: 0, p99: 0, max: 0 }
  const sorted = Float64Array.from(values).sort()
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1]! }
}
