/**
 * Time is injected everywhere so that tests and the simulator can be
 * deterministic. Production code takes a `Clock` and never calls Date.now()
 * directly in logic that decides something.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/**
 * A clock that only moves forward at a steady rate and is never stepped (NTP
 * may step the wall clock at any moment). Milliseconds from an arbitrary
 * origin: compare readings, never show them.
 */
export interface Monotonic {
  now(): number
}

/**
 * CLOCK_MONOTONIC (process.hrtime): on Linux it counts from the boot, for
 * every process alike, so a reading taken by one run of the agent still
 * means something to the next run in the same boot (not after a reboot).
 */
export const systemMonotonic: Monotonic = { now: () => Number(process.hrtime.bigint()) / 1e6 }

/** A clock the test moves by hand. */
export function manualClock(startMs = 0): Clock & { advance(ms: number): void; set(ms: number): void } {
  let t = startMs
  return {
    now: () => t,
    advance: (ms: number) => { t += ms },
    set: (ms: number) => { t = ms },
  }
}

/** Random numbers in [0, 1); injected so backoff and simulations can be seeded. */
export type Random = () => number

/** mulberry32: a small, fast, seedable PRNG; good enough for jitter and simulation. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
