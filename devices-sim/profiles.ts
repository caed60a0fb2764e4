import { deriveSeed, streamFor } from './random.js'

/**
 * Connectivity profiles (issue #5): when each simulated device connects and
 * when its link is down, decided up front from the run seed as a plan of
 * offsets from the run's start. The runner carries the plan out (cutting and
 * restoring the device's link in the NetworkSimulator); the report compares
 * what it saw with the plan. Pure: no clock, no I/O.
 *
 * - `steady`: connected from `connectAtMs` to the end.
 * - `flaky`: drops at random (exponential gaps, about one per 20 s) for
 *   0.5–8 s, log-uniform so short outages are the common case.
 * - `intermittent`: online only in windows (10 s every 30 s by default), with a
 *   per-device phase, like a device on a schedule or a cellular budget.
 * - `mixed`: each device gets one of the three; the shares are exact (60 / 25 /
 *   15 % by default, rounded) and who gets which is a seeded permutation.
 *
 * Connects are staggered over `staggerMs` (default: the fleet at 200 connects/s)
 * so a fleet does not stampede the hub: device i connects in slot i, at a
 * seeded point within it.
 */

export const CONNECTIVITY_PROFILES = ['steady', 'flaky', 'intermittent'] as const
export type ConnectivityProfile = (typeof CONNECTIVITY_PROFILES)[number]
export const PROFILE_CHOICES = [...CONNECTIVITY_PROFILES, 'mixed'] as const
export type ProfileChoice = (typeof PROFILE_CHOICES)[number]

export function isProfileChoice(value: string): value is ProfileChoice {
  return (PROFILE_CHOICES as readonly string[]).includes(value)
}

export interface Outage {
  readonly fromMs: number
  readonly toMs: number
}

export interface ConnectivityPlan {
  readonly profile: ConnectivityProfile
  readonly connectAtMs: number
  /** Sorted, non-overlapping, within [connectAtMs, durationMs], none empty. */
  readonly outages: readonly Outage[]
}

export interface ProfileOptions {
  /** Connects spread over this window; default fleetSize / connectsPerSecond seconds. */
  readonly staggerMs?: number
  /** Used for the default stagger; default 200. */
  readonly connectsPerSecond?: number
  /** Mean time between a flaky device's drops; default 20 s. */
  readonly flakyMeanGapMs?: number
  readonly flakyMinOutageMs?: number
  readonly flakyMaxOutageMs?: number
  /** An intermittent device is online `windowOnMs` out of every `windowPeriodMs`. */
  readonly windowOnMs?: number
  readonly windowPeriodMs?: number
  /** Shares for `mixed` (normalised); default 60 % steady, 25 % flaky, 15 % intermittent. */
  readonly mix?: Readonly<Record<ConnectivityProfile, number>>
}

const DEFAULTS = {
  connectsPerSecond: 200,
  flakyMeanGapMs: 20_000,
  flakyMinOutageMs: 500,
  flakyMaxOutageMs: 8_000,
  windowOnMs: 10_000,
  windowPeriodMs: 30_000,
  mix: { steady: 0.6, flaky: 0.25, intermittent: 0.15 },
} as const

type Resolved = Required<Omit<ProfileOptions, 'staggerMs'>> & { staggerMs: number }

function resolve(fleetSize: number, durationMs: number, options: ProfileOptions): Resolved {
  if (!Number.isInteger(fleetSize) || fleetSize < 1) throw new Error(`fleetSize must be a whole number ≥ 1, got ${fleetSize}`)
  if (!(durationMs > 0)) throw new Error(`durationMs must be more than 0, got ${durationMs}`)
  const connectsPerSecond = options.connectsPerSecond ?? DEFAULTS.connectsPerSecond
  if (!(connectsPerSecond > 0)) throw new Error(`connectsPerSecond must be more than 0, got ${connectsPerSecond}`)
  const r: Resolved = {
    connectsPerSecond,
    staggerMs: options.staggerMs ?? (fleetSize / connectsPerSecond) * 1000,
    flakyMeanGapMs: options.flakyMeanGapMs ?? DEFAULTS.flakyMeanGapMs,
    flakyMinOutageMs: options.flakyMinOutageMs ?? DEFAULTS.flakyMinOutageMs,
    flakyMaxOutageMs: options.flakyMaxOutageMs ?? DEFAULTS.flakyMaxOutageMs,
    windowOnMs: options.windowOnMs ?? DEFAULTS.windowOnMs,
    windowPeriodMs: options.windowPeriodMs ?? DEFAULTS.windowPeriodMs,
    mix: options.mix ?? DEFAULTS.mix,
  }
  if (!(r.staggerMs >= 0)) throw new Error(`staggerMs must be ≥ 0, got ${r.staggerMs}`)
  if (!(r.flakyMeanGapMs > 0)) throw new Error(`flakyMeanGapMs must be more than 0, got ${r.flakyMeanGapMs}`)
  if (!(r.flakyMinOutageMs > 0 && r.flakyMaxOutageMs >= r.flakyMinOutageMs)) {
    throw new Error(`flaky outages need 0 < flakyMinOutageMs ≤ flakyMaxOutageMs, got ${r.flakyMinOutageMs} and ${r.flakyMaxOutageMs}`)
  }
  if (!(r.windowOnMs > 0 && r.windowPeriodMs > r.windowOnMs)) {
    throw new Error(`intermittent windows need 0 < windowOnMs < windowPeriodMs, got ${r.windowOnMs} and ${r.windowPeriodMs}`)
  }
  const total = r.mix.steady + r.mix.flaky + r.mix.intermittent
  if (!(total > 0) || Object.values(r.mix).some((v) => !(v >= 0))) throw new Error('mix shares must be ≥ 0 and not all 0')
  return r
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b]
  return a
}

/**
 * The profile of device i in a `mixed` fleet. Exact shares (largest first,
 * boundaries rounded), assigned through a seeded affine permutation of the
 * indexes, so each device is O(1) and the fleet's counts never depend on luck.
 */
export function mixedProfileOf(seed: number, deviceIndex: number, fleetSize: number, mix: Readonly<Record<ConnectivityProfile, number>> = DEFAULTS.mix): ConnectivityProfile {
  const random = streamFor(seed, 'mixed-permutation', fleetSize)
  let a = 1 + Math.floor(random() * Math.max(1, fleetSize - 1))
  while (gcd(a, fleetSize) !== 1) a++
  const b = Math.floor(random() * fleetSize)
  const position = (a * deviceIndex + b) % fleetSize
  const total = mix.steady + mix.flaky + mix.intermittent
  const steadyEnd = Math.round((mix.steady / total) * fleetSize)
  const flakyEnd = Math.round(((mix.steady + mix.flaky) / total) * fleetSize)
  if (position < steadyEnd) return 'steady'
  if (position < flakyEnd) return 'flaky'
  return 'intermittent'
}

/** Sorts, merges and clips outages to [fromMs, toMs], dropping empty ones. */
export function normaliseOutages(outages: readonly Outage[], fromMs: number, toMs: number): Outage[] {
  const clipped = outages
    .map((o) => ({ fromMs: Math.max(o.fromMs, fromMs), toMs: Math.min(o.toMs, toMs) }))
    .filter((o) => o.toMs > o.fromMs)
    .sort((x, y) => x.fromMs - y.fromMs)
  const out: Outage[] = []
  for (const o of clipped) {
    const last = out[out.length - 1]
    if (last && o.fromMs <= last.toMs) out[out.length - 1] = { fromMs: last.fromMs, toMs: Math.max(last.toMs, o.toMs) }
    else out.push(o)
  }
  return out
}

/** The plan of one device. Same arguments, same plan. */
export function connectivityPlan(
  profile: ProfileChoice,
  seed: number,
  deviceIndex: number,
  fleetSize: number,
  durationMs: number,
  options: ProfileOptions = {},
): ConnectivityPlan {
  const o = resolve(fleetSize, durationMs, options)
  if (!Number.isInteger(deviceIndex) || deviceIndex < 0 || deviceIndex >= fleetSize) {
    throw new Error(`deviceIndex must be a whole number in [0, ${fleetSize}), got ${deviceIndex}`)
  }
  const chosen = profile === 'mixed' ? mixedProfileOf(seed, deviceIndex, fleetSize, o.mix) : profile
  const random = streamFor(seed, deviceIndex, 'connectivity')
  const slotMs = o.staggerMs / fleetSize
  const connectAtMs = Math.min(Math.floor((deviceIndex + random()) * slotMs), Math.max(0, Math.ceil(o.staggerMs) - 1))
  const outages: Outage[] = []
  switch (chosen) {
    case 'steady':
      break
    case 'flaky': {
      const drops = streamFor(seed, deviceIndex, 'flaky')
      const ratio = o.flakyMaxOutageMs / o.flakyMinOutageMs
      let t = connectAtMs
      for (;;) {
        t += -Math.log(1 - drops()) * o.flakyMeanGapMs
        if (t >= durationMs) break
        const lengthMs = o.flakyMinOutageMs * ratio ** drops()
        outages.push({ fromMs: Math.round(t), toMs: Math.round(t + lengthMs) })
        t += lengthMs
      }
      break
    }
    case 'intermittent': {
      const phaseMs = Math.floor(streamFor(seed, deviceIndex, 'intermittent')() * o.windowPeriodMs)
      // Windows open at phase + n × period; the device is out between them.
      for (let open = phaseMs - o.windowPeriodMs; open < durationMs; open += o.windowPeriodMs) {
        outages.push({ fromMs: open + o.windowOnMs, toMs: open + o.windowPeriodMs })
      }
      break
    }
    default: {
      const never: never = chosen
      throw new Error(`unknown profile ${String(never)}`)
    }
  }
  return { profile: chosen, connectAtMs, outages: normaliseOutages(outages, connectAtMs, durationMs) }
}

/** Plans for a whole fleet, by device index. */
export function fleetPlans(profile: ProfileChoice, seed: number, fleetSize: number, durationMs: number, options: ProfileOptions = {}): ConnectivityPlan[] {
  return Array.from({ length: fleetSize }, (_, i) => connectivityPlan(profile, seed, i, fleetSize, durationMs, options))
}

/** Whether the plan has the device online at tMs (connected, and not in an outage). */
export function onlineAt(plan: ConnectivityPlan, tMs: number): boolean {
  if (tMs < plan.connectAtMs) return false
  // Outages are sorted: binary search for the last one starting at or before tMs.
  let lo = 0
  let hi = plan.outages.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const o = plan.outages[mid]!
    if (o.fromMs <= tMs) {
      if (tMs < o.toMs) return false
      lo = mid + 1
    } else hi = mid - 1
  }
  return true
}

export interface LinkChange {
  readonly atMs: number
  /** `connect`: start the device's agent; `down` / `up`: cut / restore its link. */
  readonly change: 'connect' | 'down' | 'up'
}

/**
 * The plan as the runner carries it out, in time order. An outage that starts
 * at the connect comes after it: the agent starts into a cut link and retries
 * with its own backoff, as a real device would. An outage clipped at the end of
 * the run still ends with an `up` at durationMs, so the device can drain its
 * outbox before the accounting.
 */
export function linkChanges(plan: ConnectivityPlan): LinkChange[] {
  const changes: LinkChange[] = [{ atMs: plan.connectAtMs, change: 'connect' }]
  for (const o of plan.outages) changes.push({ atMs: o.fromMs, change: 'down' }, { atMs: o.toMs, change: 'up' })
  return changes
}

/** Milliseconds the plan has the device online in [0, durationMs). */
export function onlineMs(plan: ConnectivityPlan, durationMs: number): number {
  const start = Math.min(plan.connectAtMs, durationMs)
  let down = 0
  for (const o of plan.outages) down += Math.max(0, Math.min(o.toMs, durationMs) - Math.max(o.fromMs, start))
  return durationMs - start - down
}

export interface ProfileSummary {
  readonly devices: number
  /** Time-weighted share of the run the devices are planned online, 0..1. */
  readonly onlineShare: number
  readonly outages: number
}

export interface PlanSummary {
  readonly devices: number
  readonly durationMs: number
  /** The last planned connect: when the stagger promises the whole fleet has connected once. */
  readonly allConnectedByMs: number
  readonly onlineShare: number
  readonly byProfile: Readonly<Record<ConnectivityProfile, ProfileSummary>>
  /** Planned devices online at each step (at tMs, inclusive of changes at tMs). */
  readonly timeline: ReadonlyArray<{ readonly atMs: number; readonly online: number }>
}

/**
 * What the plans promise, for the report: how much of the run each profile is
 * online and a timeline of the expected online count. An event sweep, so it
 * costs O(changes log changes), not O(devices × steps).
 */
export function summarizePlans(plans: readonly ConnectivityPlan[], durationMs: number, stepMs = Math.max(1000, Math.ceil(durationMs / 60))): PlanSummary {
  const changes: Array<[number, number]> = []
  const groups = { steady: { devices: 0, ms: 0, outages: 0 }, flaky: { devices: 0, ms: 0, outages: 0 }, intermittent: { devices: 0, ms: 0, outages: 0 } }
  let allConnectedByMs = 0
  let totalMs = 0
  for (const plan of plans) {
    const g = groups[plan.profile]
    g.devices++
    g.outages += plan.outages.length
    const ms = onlineMs(plan, durationMs)
    g.ms += ms
    totalMs += ms
    allConnectedByMs = Math.max(allConnectedByMs, plan.connectAtMs)
    if (plan.connectAtMs < durationMs) changes.push([plan.connectAtMs, 1])
    for (const o of plan.outages) changes.push([o.fromMs, -1], [o.toMs, 1])
  }
  changes.sort((x, y) => x[0] - y[0])
  const timeline: Array<{ atMs: number; online: number }> = []
  let online = 0
  let i = 0
  for (let t = 0; t < durationMs; t += stepMs) {
    while (i < changes.length && changes[i]![0] <= t) online += changes[i++]![1]
    timeline.push({ atMs: t, online })
  }
  const share = (ms: number, devices: number) => (devices === 0 ? 0 : ms / (devices * durationMs))
  const summary = (g: { devices: number; ms: number; outages: number }): ProfileSummary => ({ devices: g.devices, onlineShare: share(g.ms, g.devices), outages: g.outages })
  return {
    devices: plans.length,
    durationMs,
    allConnectedByMs,
    onlineShare: share(totalMs, plans.length),
    byProfile: { steady: summary(groups.steady), flaky: summary(groups.flaky), intermittent: summary(groups.intermittent) },
    timeline,
  }
}

/** A stable fingerprint of a fleet's plans, to print and compare across runs with the same seed. */
export function plansFingerprint(plans: readonly ConnectivityPlan[]): string {
  let h = 0
  for (const p of plans) {
    h = deriveSeed(h, p.profile, p.connectAtMs, p.outages.length)
    for (const o of p.outages) h = deriveSeed(h, o.fromMs, o.toMs)
  }
  return h.toString(16).padStart(8, '0')
}
