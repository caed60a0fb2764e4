import type { Clock, ClockTimer } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { TelemetrySink } from './telemetry-batcher.js'
import { checkSensors, type SensorSource } from './sensors.js'

export interface SamplerOptions {
  /** 0 = no timer: only `sampleNow()` samples (tests, simulators that drive time). */
  readonly intervalMs: number
  readonly clock: Clock
  readonly logger: Logger
  /**
   * What a sample taken now adds to its body before the closing brace (the
   * HubClock's note of the monotonic time while the hub's is not known yet);
   * '' or absent for nothing.
   */
  readonly unsyncedSuffix?: () => string
}

/** What one sampling read, for a caller that wants the values (the sensors.sample command). */
export interface SampleReport {
  ts: number
  values: Record<string, number>
}

export interface SamplerStats {
  readonly ticks: number
  readonly samples: number
  /** Readings that threw or were not finite numbers. */
  readonly sensorErrors: number
}

/**
 * Reads every sensor once per tick and appends all readings to the outbox in
 * one transaction. The hot path allocates only the sample strings: each
 * sensor's JSON prefix is built once and the bodies array is reused.
 */
export class Sampler {
  private readonly outbox: TelemetrySink
  private readonly sensors: readonly SensorSource[]
  private readonly prefixes: readonly string[]
  private readonly bodies: string[]
  private readonly options: SamplerOptions
  private readonly failing = new Set<string>()
  private timer: ClockTimer | undefined
  private ticks = 0
  private samples = 0
  private sensorErrors = 0

  constructor(outbox: TelemetrySink, sensors: readonly SensorSource[], options: SamplerOptions) {
    checkSensors(sensors)
    this.outbox = outbox
    this.sensors = sensors
    // Names passed checkSensors, so they need no JSON escaping.
    this.prefixes = sensors.map((s) => `{"sensor":"${s.name}","ts":`)
    this.bodies = new Array<string>(sensors.length).fill('')
    this.options = options
  }

  get sensorNames(): string[] {
    return this.sensors.map((s) => s.name)
  }

  start(): void {
    if (this.timer || this.options.intervalMs <= 0) return
    this.timer = this.options.clock.setInterval(() => { this.sampleNow() }, this.options.intervalMs)
  }

  stop(): void {
    this.options.clock.clearTimer(this.timer)
    this.timer = undefined
  }

  /**
   * Samples every sensor now; returns how many samples were appended. With
   * `into`, also reports the time and the values read (the timer's ticks pass
   * nothing and allocate nothing more).
   */
  sampleNow(into?: SampleReport): number {
    const now = Math.floor(this.options.clock.now())
    if (into) into.ts = now
    const mid = `${now},"value":`
    const tail = this.options.unsyncedSuffix ? this.options.unsyncedSuffix() + '}' : '}'
    let n = 0
    for (let i = 0; i < this.sensors.length; i++) {
      const sensor = this.sensors[i]!
      let value: number | undefined
      try {
        value = sensor.read(now)
      } catch (err) {
        this.fail(sensor.name, err)
        continue
      }
      if (value === undefined) continue
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        this.fail(sensor.name, new Error('reading is not a finite number'))
        continue
      }
      if (this.failing.delete(sensor.name)) this.options.logger.info({ sensor: sensor.name }, 'sensor recovered')
      if (into) into.values[sensor.name] = value
      this.bodies[n++] = this.prefixes[i]! + mid + value + tail
    }
    this.ticks++
    if (n === 0) return 0
    try {
      this.outbox.appendTelemetry(now, this.bodies, n)
      this.samples += n
    } catch (err) {
      // A full disk or a closed ledger loses this tick, not the process.
      this.options.logger.error({ err }, 'could not append samples to the outbox')
      return 0
    }
    return n
  }

  stats(): SamplerStats {
    return { ticks: this.ticks, samples: this.samples, sensorErrors: this.sensorErrors }
  }

  /** Logs a sensor's first failure only, so a broken sensor does not flood the log every tick. */
  private fail(name: string, err: unknown): void {
    this.sensorErrors++
    if (this.failing.has(name)) return
    this.failing.add(name)
    this.options.logger.warn({ sensor: name, err }, 'sensor read failed; skipping it until it recovers')
  }
}
