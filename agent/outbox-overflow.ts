/**
 * The outbox's overflow arithmetic, apart from its SQL (STYLE habit 5): when
 * the outbox is over its limits, how many of a kind's oldest rows to read as
 * drop candidates at once, and how many of those to drop to be within the
 * limits again. Which kinds may be dropped, and in which order, is the
 * outbox's policy (DROP_ORDER and the "Overflow policy" of outbox.ts's
 * header); the outbox deletes the rows and counts the drops in the append's
 * transaction. overLimits runs on every append, so it takes plain numbers
 * and allocates nothing. Table test: test/agent.outbox-overflow.test.ts.
 */

export interface OutboxLimits {
  readonly maxRows: number
  readonly maxBytes: number
}

export const DEFAULT_OUTBOX_LIMITS: OutboxLimits = { maxRows: 200_000, maxBytes: 64 * 1024 * 1024 }

/** The fewest rows one drop query reads: an excess of bytes does not say how many rows it takes. */
export const MIN_DROP_CHUNK = 256

/** Whether an outbox of `rows` rows and `bytes` bytes (all kinds) is over its limits. */
export function overLimits(rows: number, bytes: number, limits: OutboxLimits): boolean {
  return rows > limits.maxRows || bytes > limits.maxBytes
}

/** How many of a kind's oldest rows to read at once: the excess rows, at least MIN_DROP_CHUNK, at most what the kind holds. */
export function dropChunk(kindRows: number, rows: number, limits: OutboxLimits): number {
  return Math.min(kindRows, Math.max(rows - limits.maxRows, MIN_DROP_CHUNK))
}

/** Rows to drop: how many, their bytes, and the seq of the newest of them (0 when none). */
export interface Drop {
  readonly rows: number
  readonly bytes: number
  readonly lastSeq: number
}

/**
 * Of a kind's oldest rows (`[seq, bytes]`, oldest first), the ones to drop:
 * from the oldest on, until what is left of the outbox (`rows` and `bytes` in
 * all) is within its limits, or every candidate if that is not enough.
 */
export function oldestToDrop(candidates: readonly (readonly [number, number])[], rows: number, bytes: number, limits: OutboxLimits): Drop {
  let n = 0
  let b = 0
  let last = 0
  for (const [seq, size] of candidates) {
    n++
    b += size
    last = seq
    if (rows - n <= limits.maxRows && bytes - b <= limits.maxBytes) break
  }
  return { rows: n, bytes: b, lastSeq: last }
}
