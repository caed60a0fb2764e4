/**
 * Time is injected everywhere so that tests and the simulator can be
 * deterministic. Production code takes a `Clock` and never calls Date.now()
 * directly in logic that decides something, nor starts a timer that a test
 * would have to wait out in real time: the clock's timers run on the
 * clock's time (as MQTT.js injects its timer), so a manual clock fires them
 * when a test advances it.
 */

/** A pending timer of a Clock. */
export interface ClockTimer {
  /** Lets the process exit while the timer is pending (as a Node timer's unref); returns the timer. */
  unref(): ClockTimer
}

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number
  /** Calls `fn` once, `ms` of this clock's time from now. */
  setTimeout(fn: () => void, ms: number): ClockTimer
  /** Calls `fn` every `ms` of this clock's time. */
  setInterval(fn: () => void, ms: number): ClockTimer
  /** Stops a timer of this clock (either kind); undefined is ignored. */
  clearTimer(timer: ClockTimer | undefined): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearTimer: (timer) => { if (timer !== undefined) clearTimeout(timer as NodeJS.Timeout) },
}

/** A clock whose time is `now()` and whose timers are the system's (real time): a skewed wall clock, a hub's time on a device. */
export function clockWithTime(now: () => number): Clock {
  return { ...systemClock, now }
}

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

/**
 * A clock the test moves by hand: `advance` fires the timers that fall due, in
 * time order, each at its own time. Timers count elapsed time, as real ones
 * do: `set` steps the wall clock (NTP) and moves no timer.
 */
export interface ManualClock extends Clock {
  advance(ms: number): void
  /** Steps the time to `ms` without firing or moving timers. */
  set(ms: number): void
  /** Timers pending now. */
  readonly pending: number
}

export function manualClock(startMs = 0): ManualClock {
  let t = startMs
  /** Elapsed time, which only advance() moves: what timers are set on. */
  let elapsed = 0
  interface Entry { at: number; every: number | undefined; fn: () => void; seq: number; timer: ClockTimer }
  const entries = new Set<Entry>()
  let seq = 0
  // As Node's timers: a delay that is not a finite number, or below 0, is none.
  const delay = (ms: number) => (Number.isFinite(ms) ? Math.max(0, ms) : 0)
  const add = (fn: () => void, ms: number, every: number | undefined): ClockTimer => {
    const timer: ClockTimer = { unref: () => timer }
    entries.add({ at: elapsed + delay(ms), every, fn, seq: seq++, timer })
    return timer
  }
  return {
    now: () => t,
    setTimeout: (fn, ms) => add(fn, ms, undefined),
    // An interval of 0 would fire without end within one advance: at least 1 ms.
    setInterval: (fn, ms) => add(fn, ms, Math.max(1, delay(ms))),
    clearTimer: (timer) => { for (const e of entries) if (e.timer === timer) entries.delete(e) },
    advance(ms: number): void {
      const until = elapsed + ms
      for (;;) {
        let next: Entry | undefined
        for (const e of entries) if (e.at <= until && (next === undefined || e.at < next.at || (e.at === next.at && e.seq < next.seq))) next = e
        if (next === undefined) break
        if (next.at > elapsed) {
          t += next.at - elapsed
          elapsed = next.at
        }
        if (next.every === undefined) entries.delete(next)
        else next.at += next.every
        next.fn()
      }
      t += until - elapsed
      elapsed = until
    },
    set: (ms: number) => { t = ms },
    get pending() { return entries.size },
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
