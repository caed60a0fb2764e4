import { readFileSync } from 'node:fs'
import type { Clock, Monotonic } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { TelemetryAck } from '../protocol/messages.js'
import type { OutboxKind } from './outbox.js'

/**
 * The hub's time as the agent knows it (issue #13, "a clock that may be
 * wrong"). A Raspberry Pi has no battery-backed clock: after a boot without
 * network it runs hours or days off until NTP steps it, so deadlines and
 * sample timestamps are judged on the hub's clock when the agent knows it.
 *
 * The hub puts its time (`hubTime`) in every telemetry ack to an agent whose
 * birth lists "time". The agent times each such ack against what it answers
 * (the connection's birth for the first ack, else the batch holding the
 * acked seq) on its monotonic clock, never on the wall clock, which NTP may
 * step at any moment. One timed ack is an estimate
 *
 *     offset = hubTime - (sent + received) / 2,  error <= (received - sent) / 2
 *
 * and hub time is then `monotonic + offset`. The estimate held is replaced
 * by one with a smaller error (the held one's error grows by DRIFT_PER_MS
 * with its age), or by one that disagrees with it by more than both errors
 * (the hub's own clock was stepped). See nextEstimate.
 *
 * Records taken before the first estimate (samples, events) carry the device
 * clock and, in their ledger body, where the monotonic clock stood and in
 * which boot: `,"clk":"BOOT@MONO"` before the closing brace (BOOT: the first
 * 12 hex digits of the kernel's boot id; MONO: integer ms). When they are
 * sent (wireBody) the suffix is removed and `ts` recomputed on hub time if
 * the boot is this one (CLOCK_MONOTONIC counts from the boot, for every
 * process, so a restarted agent still corrects its predecessor's rows);
 * otherwise a sample is sent flagged `"unsynced":true` to a hub that takes
 * the flag. The ledger rows are never rewritten: nothing more is written to
 * the SD card for this.
 */

/** A reply that took longer than this to arrive is not used: too loose to be worth having, or an echo of something older. */
export const MAX_SYNC_RTT_MS = 30_000
/** How fast a held estimate is assumed to drift from the hub's clock (the device's crystal, the hub's NTP slewing): 200 ppm. */
export const DRIFT_PER_MS = 200e-6
/** The capability an agent lists in its birth to get `hubTime` in its acks. */
export const TIME_CAPABILITY = 'time'
/** The key of the suffix an unsynced record's ledger body carries; never sent. */
const CLK_KEY = ',"clk":"'

export interface ClockEstimate {
  /** Hub time = monotonic + offsetMs. */
  readonly offsetMs: number
  /** Bound on the estimate's error when it was made: half the round trip. */
  readonly errorMs: number
  /** Monotonic reading when it was made. */
  readonly atMono: number
}

export interface SyncSample {
  readonly hubTime: number
  /** Monotonic reading when the message the hub answered was sent. */
  readonly sentMono: number
  readonly receivedMono: number
}

export type SyncVerdict =
  | { readonly take: ClockEstimate; readonly why: 'first' | 'tighter' | 'disagrees' }
  | { readonly keep: true; readonly why: 'looser' }
  | { readonly ignore: 'out-of-order' | 'slow-reply' }

/** Decides what one timed hub stamp does to the estimate held. Pure; tested as a table. */
export function nextEstimate(held: ClockEstimate | undefined, s: SyncSample): SyncVerdict {
  const rtt = s.receivedMono - s.sentMono
  if (rtt < 0) return { ignore: 'out-of-order' }
  if (rtt > MAX_SYNC_RTT_MS) return { ignore: 'slow-reply' }
  const candidate: ClockEstimate = { offsetMs: s.hubTime - (s.sentMono + s.receivedMono) / 2, errorMs: rtt / 2, atMono: s.receivedMono }
  if (!held) return { take: candidate, why: 'first' }
  const aged = held.errorMs + Math.max(0, s.receivedMono - held.atMono) * DRIFT_PER_MS
  if (candidate.errorMs <= aged) return { take: candidate, why: 'tighter' }
  // Both cannot be right: the hub's clock moved (NTP stepped it); the newer one is.
  if (Math.abs(candidate.offsetMs - held.offsetMs) > aged + candidate.errorMs) return { take: candidate, why: 'disagrees' }
  return { keep: true, why: 'looser' }
}

/**
 * The kernel's id of this boot (Linux), which is what a monotonic reading is
 * relative to; undefined elsewhere (the caller then uses an id of the process,
 * so only rows of this run can be corrected).
 */
export function kernelBootId(): string | undefined {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    return /^[A-Za-z0-9-]{8,64}$/.test(id) ? id : undefined
  } catch {
    return undefined
  }
}

export interface HubClockOptions {
  /** The device's wall clock: what is used until the hub's time is known. */
  readonly wall: Clock
  readonly monotonic: Monotonic
  /** What monotonic readings are relative to: the kernel boot id, or an id of this process. */
  readonly bootRef: string
  readonly logger: Logger
}

export interface HubClockStats {
  readonly synced: boolean
  /** Hub time minus the device's wall clock now (undefined before the first sync): -skew. */
  readonly offsetFromDeviceMs: number | undefined
  /** Bound on the current estimate's error, aged. */
  readonly errorMs: number | undefined
  /** Timed hub stamps used (taken or kept against) and ignored. */
  readonly samples: number
  readonly ignored: number
}

/** How far the device's skew may move from what its birth told the hub before the birth is sent again. */
export const SKEW_REPORT_TOLERANCE_MS = 1_000

export class HubClock {
  private readonly options: HubClockOptions
  private estimate: ClockEstimate | undefined
  private birthSentMono: number | undefined
  /** The device's wall clock as the latest birth of this connection told it to the hub, and the monotonic time then. */
  private birthClock: { wallMs: number; mono: number } | undefined
  private flagAccepted = false
  /** Whether the last ack carried hubTime: undefined before the first ack of this run. */
  private hubGivesTime: boolean | undefined
  /** The boot's id as the suffix writes it: 12 hex digits are plenty to tell boots apart, and cost fewer bytes per row. */
  private readonly bootTag: string
  private samples = 0
  private ignored = 0
  /** A Clock on hub time when known, else the device's: what deadlines and timestamps are judged on. */
  readonly clock: Clock

  constructor(options: HubClockOptions) {
    if (!/^[A-Za-z0-9-]+$/.test(options.bootRef)) throw new Error('HubClock: bootRef must match ^[A-Za-z0-9-]+$')
    this.options = options
    this.bootTag = options.bootRef.replace(/-/g, '').slice(0, 12)
    // Its timers are the wall clock's: a duration is the same on either.
    this.clock = { ...options.wall, now: () => this.now() }
  }

  /** Hub time when known (whole ms, as Date.now() gives: the wire's timestamps are integers), else the device's wall clock. */
  now(): number {
    const e = this.estimate
    return e ? Math.round(this.options.monotonic.now() + e.offsetMs) : this.options.wall.now()
  }

  get synced(): boolean {
    return this.estimate !== undefined
  }

  /**
   * What a record taken now adds to its ledger body before the closing
   * brace: nothing once synced, nor while the hub is one that never tells
   * its time (an older hub: the note could never be used, and costs ~30
   * bytes a row on the SD card); else where the monotonic clock stands, so
   * wireBody can correct its ts later.
   */
  unsyncedSuffix(): string {
    if (this.estimate || this.hubGivesTime === false) return ''
    return `${CLK_KEY}${this.bootTag}@${Math.round(this.options.monotonic.now())}"`
  }

  /** A birth carried the device's wall clock (`clock`): the hub derives the skew it shows from it. */
  onBirthClock(wallMs: number): void {
    this.birthClock = { wallMs, mono: this.options.monotonic.now() }
  }

  /**
   * Whether the skew the hub shows, from the latest birth's clock, is off by
   * more than `thresholdMs` from the device's skew now: the wall clock was
   * stepped since (NTP's first sync after a boot, mostly). What the hub
   * worked out is recomputed on the current estimate (birth clock minus hub
   * time then), so a birth sent before the first sync is judged too. False
   * while the hub's time or the birth's clock is unknown.
   */
  birthSkewStale(thresholdMs = SKEW_REPORT_TOLERANCE_MS): boolean {
    const e = this.estimate
    const b = this.birthClock
    if (!e || !b) return false
    const reported = b.wallMs - (b.mono + e.offsetMs)
    const current = this.options.wall.now() - (this.options.monotonic.now() + e.offsetMs)
    return Math.abs(current - reported) > thresholdMs
  }

  /** The link published a birth on a new connection: the next ack answers it. */
  onBirthSent(): void {
    this.birthSentMono = this.options.monotonic.now()
  }

  onDisconnected(): void {
    this.birthSentMono = undefined
    this.birthClock = undefined
  }

  /**
   * A telemetry ack of this store. `batchSentMono` gives when the batch
   * holding `upTo` was sent (the sender knows), for acks after the first.
   * Acks are cumulative, so an ack may also come from a batch of an earlier
   * connection whose commit finished late; its stamp is then a little older
   * than the batch it is timed against, which can only happen once per
   * connection and by less than the connection's first round trip.
   */
  onAck(ack: Pick<TelemetryAck, 'upTo' | 'accepts' | 'hubTime'>, batchSentMono: (upTo: number) => number | undefined): void {
    const receivedMono = this.options.monotonic.now()
    if (ack.accepts !== undefined) this.flagAccepted = ack.accepts.includes('unsynced')
    this.hubGivesTime = ack.hubTime !== undefined
    const sentMono = this.birthSentMono ?? batchSentMono(ack.upTo)
    this.birthSentMono = undefined
    if (ack.hubTime === undefined || sentMono === undefined) return
    const verdict = nextEstimate(this.estimate, { hubTime: ack.hubTime, sentMono, receivedMono })
    if ('ignore' in verdict) {
      this.ignored++
      this.options.logger.debug({ why: verdict.ignore, rttMs: receivedMono - sentMono }, 'hub time not used')
      return
    }
    this.samples++
    if ('keep' in verdict) return
    const first = this.estimate === undefined
    this.estimate = verdict.take
    const skewMs = Math.round(this.options.wall.now() - this.now())
    if (first) {
      this.options.logger.info({ skewMs, errorMs: round1(verdict.take.errorMs) }, 'clock: synchronised with the hub; deadlines and timestamps now use the hub\'s time')
    } else if (verdict.why === 'disagrees') {
      this.options.logger.warn({ skewMs, errorMs: round1(verdict.take.errorMs) }, 'clock: the hub\'s time moved against the estimate held (was the hub\'s clock stepped?); taking the new one')
    }
  }

  /**
   * A ledger body as it goes on the wire: an unsynced record's suffix is
   * removed, and its ts is recomputed on hub time when the record was taken
   * in this boot and the hub's time is known; a sample that cannot be
   * corrected is flagged unsynced for a hub that takes the flag. The result
   * is never longer than the body.
   */
  wireBody(kind: OutboxKind, body: string): string {
    // '"' before the closing brace: a sample body ends in a number otherwise, so this is the hot path's only cost.
    if (body.charCodeAt(body.length - 2) !== 34) return body
    const i = body.lastIndexOf(CLK_KEY)
    if (i < 0) return body
    const ref = body.slice(i + CLK_KEY.length, -2)
    const base = body.slice(0, i) + '}'
    const at = ref.lastIndexOf('@')
    const mono = Number(ref.slice(at + 1))
    const e = this.estimate
    if (e && at > 0 && ref.slice(0, at) === this.bootTag && Number.isFinite(mono) && mono <= this.options.monotonic.now()) {
      return withTs(base, Math.round(mono + e.offsetMs))
    }
    return kind === 'telemetry' && this.flagAccepted ? base.slice(0, -1) + ',"unsynced":true}' : base
  }

  stats(): HubClockStats {
    const e = this.estimate
    return {
      synced: e !== undefined,
      offsetFromDeviceMs: e ? Math.round(this.now() - this.options.wall.now()) : undefined,
      errorMs: e ? round1(e.errorMs + Math.max(0, this.options.monotonic.now() - e.atMono) * DRIFT_PER_MS) : undefined,
      samples: this.samples,
      ignored: this.ignored,
    }
  }
}

/** Replaces the value of the body's first top-level `"ts"` (samples and events both write it before any free text). */
function withTs(body: string, ts: number): string {
  const j = body.indexOf('"ts":')
  const k = body.indexOf(',', j + 5)
  if (j < 0 || k < 0) return body
  return body.slice(0, j + 5) + String(ts) + body.slice(k)
}

function round1(ms: number): number {
  return Math.round(ms * 10) / 10
}
