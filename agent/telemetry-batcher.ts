import { systemClock, type Clock, type ClockTimer } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { Outbox, OutboxRecord } from './outbox.js'

/**
 * Group commit of sampled telemetry on the device (issue #13, flash writes).
 *
 * Why: the kernel writes a dirty page back about 30 s after it was dirtied
 * (vm.dirty_expire_centisecs), so every commit that comes after a write-back
 * costs at least one whole 4 KiB page on the SD card, however few bytes it
 * adds: a commit every 10 s is ~10-35 MB a day whatever the page size. Fewer
 * commits is the only way below that. So the sampler's ticks are held here,
 * in memory, and committed to the outbox together, at most every `commitMs`.
 *
 * What it keeps: a sample is still written to the outbox before it is sent
 * (the sender reads only the outbox), and deleted only on the hub's ack. What
 * it costs: telemetry reaches the hub up to `commitMs` later, and a process
 * that dies without a clean stop loses the samples it held, at most
 * `commitMs` of them, as if they had not been taken (they have no seq yet, so
 * nothing downstream counts them as lost). A clean stop commits them.
 *
 * States: idle (nothing held) -> holding (a timer set for the commit time)
 * -> idle at the commit. The first tick after an idle stretch longer than
 * `commitMs` commits at once, so an agent's first samples (and a rare
 * sampler's every sample) are not delayed. `commitMs` 0 commits every tick.
 */

export interface TelemetryBatcherOptions {
  /** 0: every tick commits at once. */
  readonly commitMs: number
  /** Commit early when this many samples are held (bounds memory; a full MQTT batch). */
  readonly maxRows: number
  readonly logger: Logger
  /** Monotonic milliseconds; performance.now() by default (a wall clock that jumps must not stretch the delay). */
  readonly monotonicNow?: () => number
  /** Whose timer runs the hold (a test's manual clock); the system's by default. */
  readonly clock?: Clock
}

/** Where the sampler puts a tick's samples (the outbox itself, or a batcher in front of it). */
export interface TelemetrySink {
  appendTelemetry(ts: number, bodies: readonly string[], count?: number): void
}

export class TelemetryBatcher implements TelemetrySink {
  private readonly outbox: Outbox
  private readonly options: TelemetryBatcherOptions
  private readonly now: () => number
  private readonly clock: Clock
  private held: OutboxRecord[] = []
  private lastCommit = Number.NEGATIVE_INFINITY
  private timer: ClockTimer | undefined

  constructor(outbox: Outbox, options: TelemetryBatcherOptions) {
    this.outbox = outbox
    this.options = options
    this.now = options.monotonicNow ?? (() => performance.now())
    this.clock = options.clock ?? systemClock
  }

  /** Samples held, not yet in the outbox. */
  get heldCount(): number {
    return this.held.length
  }

  appendTelemetry(ts: number, bodies: readonly string[], count = bodies.length): void {
    if (count <= 0) return
    const now = this.now()
    if (this.held.length === 0 && now - this.lastCommit >= this.options.commitMs) {
      // Nothing waits and the last commit is old enough: straight in, as without a batcher.
      this.outbox.appendTelemetry(ts, bodies, count)
      this.lastCommit = now
      return
    }
    for (let i = 0; i < count; i++) this.held.push({ kind: 'telemetry', ts, body: bodies[i]! })
    if (this.held.length >= this.options.maxRows || now - this.lastCommit >= this.options.commitMs) {
      this.commit()
      return
    }
    this.timer ??= this.clock.setTimeout(() => {
      this.timer = undefined
      this.commitLogged()
    }, Math.max(0, this.lastCommit + this.options.commitMs - now))
  }

  /** Commits what is held now (a sample someone asked for, a clean stop); throws what the outbox throws. */
  commit(): void {
    this.clock.clearTimer(this.timer)
    this.timer = undefined
    if (this.held.length === 0) return
    const records = this.held
    this.held = []
    this.lastCommit = this.now()
    // On failure (a full disk, a closed ledger) the held samples are lost, as a
    // failed tick's are without a batcher: keeping them would grow without end.
    this.outbox.append(records)
  }

  /** For a clean stop: commits what is held, logging a failure instead of throwing. */
  stop(): void {
    this.commitLogged()
  }

  /** For a simulated crash: what is held is lost, as in a killed process. */
  discard(): void {
    this.clock.clearTimer(this.timer)
    this.timer = undefined
    this.held = []
  }

  private commitLogged(): void {
    const n = this.held.length
    try {
      this.commit()
    } catch (err) {
      this.options.logger.error({ err, samples: n }, 'could not append samples to the outbox')
    }
  }
}
