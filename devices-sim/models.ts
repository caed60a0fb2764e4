import type { SensorSource } from '../agent/sensors.js'
import { deriveSeed, streamFor, unitAt } from './random.js'

/**
 * Sensor models for simulated devices (issue #5). Each model is a SensorSource
 * the real agent's Sampler reads, and each is deterministic *per tick*: the
 * k-th reading depends only on (run seed, device index, sensor, k), never on
 * the wall-clock time `read` is called at (timers jitter), so two runs with the
 * same seed store the same values. Simulated time is `k * tickMs`.
 *
 * Per-device parameters (base temperature, drain rate…) come from a sequential
 * seeded stream per (device, sensor); per-tick noise is counter-based
 * (`unitAt`), so `valueAt(k)` is a pure function and an agent that restarts
 * mid-run can resume at its tick (`startTick`) without replaying.
 */

export const DEVICE_SENSOR_NAMES = ['env.temp', 'env.humidity', 'vib.rms', 'battery.pct'] as const
export type DeviceSensorName = (typeof DEVICE_SENSOR_NAMES)[number]

export interface ModelOptions {
  /** Simulated time per reading; default 1 s (the agent's default sample interval). */
  readonly tickMs?: number
  /** Length of a simulated day; default 24 h. The demo compresses it so a cycle shows in minutes. */
  readonly dayMs?: number
  /** The tick the first `read` returns (a restarted agent resumes where it stopped). Default 0. */
  readonly startTick?: number
}

/** What each model's readings count in, declared in the birth. */
export const DEVICE_SENSOR_UNITS: Readonly<Record<DeviceSensorName, string>> = { 'env.temp': '°C', 'env.humidity': '%', 'vib.rms': 'g', 'battery.pct': '%' }

export interface SensorModel extends SensorSource {
  readonly name: DeviceSensorName
  readonly unit: string
  /** The reading at tick k; pure. */
  valueAt(tick: number): number
  /** The tick the next `read` will return. `read` ignores its time argument. */
  readonly nextTick: number
}

export interface AnomalyBurst {
  readonly startTick: number
  readonly ticks: number
}

export interface VibrationModel extends SensorModel {
  isAnomaly(tick: number): boolean
  /** Bursts that start in [fromTick, toTick), in order. */
  anomalies(fromTick: number, toTick: number): AnomalyBurst[]
}

export interface VibrationOptions extends ModelOptions {
  /** On average one burst starts per this many ticks; default 500. */
  readonly anomalyEveryTicks?: number
}

const DEFAULT_TICK_MS = 1000
const DAY_MS = 86_400_000
/** The afternoon peak of the daily cycle, as a fraction of the day (15:00). */
const PEAK_OF_DAY = 15 / 24
const BURST_MIN_TICKS = 3
const BURST_MAX_TICKS = 8
const BATTERY_LOW = 20
const BATTERY_HIGH = 95

function round(v: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(v * f) / f
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v
}

function checkOptions(options: ModelOptions): { tickMs: number; dayMs: number; startTick: number } {
  const tickMs = options.tickMs ?? DEFAULT_TICK_MS
  const dayMs = options.dayMs ?? DAY_MS
  const startTick = options.startTick ?? 0
  if (!(tickMs > 0) || !Number.isFinite(tickMs)) throw new Error(`tickMs must be a positive number of milliseconds, got ${tickMs}`)
  if (!(dayMs > 0) || !Number.isFinite(dayMs)) throw new Error(`dayMs must be a positive number of milliseconds, got ${dayMs}`)
  if (!Number.isInteger(startTick) || startTick < 0) throw new Error(`startTick must be a whole number ≥ 0, got ${startTick}`)
  return { tickMs, dayMs, startTick }
}

/** Triangular noise in [-1, 1], centred on 0. */
function noise(key: number, tick: number): number {
  return unitAt(key, tick) + unitAt(key ^ 0x5bd1e995, tick) - 1
}

/**
 * Slow value noise: seeded knots every `knotTicks`, eased between, in
 * [-amplitude, amplitude]. Pure in the tick, so drift needs no state.
 */
function drift(key: number, tick: number, knotTicks: number, amplitude: number): number {
  const pos = tick / knotTicks
  const j = Math.floor(pos)
  const f = pos - j
  const ease = f * f * (3 - 2 * f)
  const a = unitAt(key, j) * 2 - 1
  const b = unitAt(key, j + 1) * 2 - 1
  return amplitude * (a + (b - a) * ease)
}

function model<Extra extends object = object>(name: DeviceSensorName, startTick: number, valueAt: (tick: number) => number, extra?: Extra): SensorModel & Extra {
  let next = startTick
  const source: SensorModel = {
    name,
    unit: DEVICE_SENSOR_UNITS[name],
    valueAt,
    get nextTick() { return next },
    read: () => valueAt(next++),
  }
  return Object.assign(source, extra)
}

/**
 * The shared daily cycle of one device: temperature follows it, humidity
 * mirrors it. In [-1, 1], +1 at the device's afternoon peak (15:00 give or
 * take an hour, per device; the run starts at simulated midnight).
 */
interface DailyCycle {
  at(tick: number): number
}

function dailyCycle(seed: number, deviceIndex: number, tickMs: number, dayMs: number): DailyCycle {
  const random = streamFor(seed, deviceIndex, 'daily-cycle')
  const peak = PEAK_OF_DAY + (random() * 2 - 1) / 24
  const ticksPerDay = dayMs / tickMs
  return { at: (tick) => Math.cos(2 * Math.PI * (tick / ticksPerDay - peak)) }
}

/**
 * A sensor that follows the device's daily cycle: a per-device base and swing
 * (each drawn from its range, in that order, from the sensor's stream), a
 * drift that changes over half a simulated day, and per-tick noise, clamped
 * and rounded. `swingSign` -1 mirrors the cycle (falls as the day warms).
 */
interface DailySensorSpec {
  readonly base: readonly [min: number, span: number]
  readonly swing: readonly [min: number, span: number]
  readonly swingSign: 1 | -1
  readonly drift: number
  readonly noise: number
  readonly clamp?: readonly [lo: number, hi: number]
  readonly decimals: number
}

function dailySensorModel(name: DeviceSensorName, spec: DailySensorSpec, seed: number, deviceIndex: number, options: ModelOptions): SensorModel {
  const { tickMs, dayMs, startTick } = checkOptions(options)
  const cycle = dailyCycle(seed, deviceIndex, tickMs, dayMs)
  const random = streamFor(seed, deviceIndex, name)
  const base = spec.base[0] + random() * spec.base[1]
  const amplitude = spec.swingSign * (spec.swing[0] + random() * spec.swing[1])
  const driftKey = deriveSeed(seed, deviceIndex, name, 'drift')
  const noiseKey = deriveSeed(seed, deviceIndex, name, 'noise')
  const knotTicks = Math.max(1, dayMs / 2 / tickMs)
  const [lo, hi] = spec.clamp ?? [-Infinity, Infinity]
  return model(name, startTick, (tick) =>
    round(clamp(base + amplitude * cycle.at(tick) + drift(driftKey, tick, knotTicks, spec.drift) + spec.noise * noise(noiseKey, tick), lo, hi), spec.decimals))
}

/**
 * `env.temp` (°C): a per-device base of 18–24 °C, a daily swing of ±2–5 °C,
 * a drift of up to ±1.5 °C that changes over half a simulated day, and
 * ±0.3 °C of noise. Two decimals.
 */
export function temperatureModel(seed: number, deviceIndex: number, options: ModelOptions = {}): SensorModel {
  return dailySensorModel('env.temp', { base: [18, 6], swing: [2, 3], swingSign: 1, drift: 1.5, noise: 0.3, decimals: 2 }, seed, deviceIndex, options)
}

/**
 * `env.humidity` (%): a per-device base of 40–60 %, falling when the day warms
 * (the device's own daily cycle, ±5–12 %), its own drift (±5 %) and ±1 % of
 * noise, clamped to 30–70 %. One decimal.
 */
export function humidityModel(seed: number, deviceIndex: number, options: ModelOptions = {}): SensorModel {
  return dailySensorModel('env.humidity', { base: [40, 20], swing: [5, 7], swingSign: -1, drift: 5, noise: 1, clamp: [30, 70], decimals: 1 }, seed, deviceIndex, options)
}

/**
 * `vib.rms` (g): a low per-device baseline (0.01–0.04 g, ±30 %) with bursts of
 * 3–8 ticks at 15–50× the baseline. A burst starts at tick s when a
 * counter-based draw for s falls under 1/anomalyEveryTicks, so whether tick k
 * is anomalous is decided by looking back at most BURST_MAX_TICKS starts:
 * pure, and the report can list the anomalies without reading the values.
 */
export function vibrationModel(seed: number, deviceIndex: number, options: VibrationOptions = {}): VibrationModel {
  const { startTick } = checkOptions(options)
  const every = options.anomalyEveryTicks ?? 500
  if (!(every >= 1)) throw new Error(`anomalyEveryTicks must be at least 1, got ${every}`)
  const random = streamFor(seed, deviceIndex, 'vib.rms')
  const baseline = 0.01 + random() * 0.03
  const startKey = deriveSeed(seed, deviceIndex, 'vib.rms', 'burst-start')
  const lengthKey = deriveSeed(seed, deviceIndex, 'vib.rms', 'burst-length')
  const sizeKey = deriveSeed(seed, deviceIndex, 'vib.rms', 'burst-size')
  const noiseKey = deriveSeed(seed, deviceIndex, 'vib.rms', 'noise')
  const chance = 1 / every

  const burstAt = (tick: number): number => {
    if (tick < 0 || unitAt(startKey, tick) >= chance) return 0
    return BURST_MIN_TICKS + Math.floor(unitAt(lengthKey, tick) * (BURST_MAX_TICKS - BURST_MIN_TICKS + 1))
  }
  /** The start of the burst covering `tick`, or -1. */
  const burstCovering = (tick: number): number => {
    for (let s = tick; s > tick - BURST_MAX_TICKS; s--) {
      const length = burstAt(s)
      if (length > 0 && s + length > tick) return s
    }
    return -1
  }
  const valueAt = (tick: number): number => {
    const jitter = 1 + 0.3 * noise(noiseKey, tick)
    const start = burstCovering(tick)
    if (start < 0) return round(baseline * jitter, 4)
    return round(baseline * (15 + 35 * unitAt(sizeKey, start)) * jitter, 4)
  }
  return model<Pick<VibrationModel, 'isAnomaly' | 'anomalies'>>('vib.rms', startTick, valueAt, {
    isAnomaly: (tick: number) => burstCovering(tick) >= 0,
    anomalies(fromTick: number, toTick: number): AnomalyBurst[] {
      const bursts: AnomalyBurst[] = []
      for (let s = Math.max(0, fromTick); s < toTick; s++) {
        const ticks = burstAt(s)
        if (ticks > 0) bursts.push({ startTick: s, ticks })
      }
      return bursts
    },
  })
}

export interface BatteryModel extends SensorModel {
  /** Whether the battery is charging at tick k. */
  charging(tick: number): boolean
}

/**
 * `battery.pct` (%): drains from 95 % to 20 % at a per-device rate (a full
 * drain takes 1,500–4,000 ticks), then charges 3–5× faster back to 95 %, and
 * repeats; each device starts at a seeded point of its cycle. A closed form of
 * the tick, so it is pure; always within 0–100. Two decimals.
 */
export function batteryModel(seed: number, deviceIndex: number, options: ModelOptions = {}): BatteryModel {
  const { startTick } = checkOptions(options)
  const random = streamFor(seed, deviceIndex, 'battery.pct')
  const drainTicks = 1500 + random() * 2500
  const chargeTicks = drainTicks / (3 + random() * 2)
  const cycleTicks = drainTicks + chargeTicks
  const phase = random() * cycleTicks
  const span = BATTERY_HIGH - BATTERY_LOW
  const position = (tick: number): number => (phase + tick) % cycleTicks
  const valueAt = (tick: number): number => {
    const p = position(tick)
    const level = p < drainTicks ? BATTERY_HIGH - (span * p) / drainTicks : BATTERY_LOW + (span * (p - drainTicks)) / chargeTicks
    return round(clamp(level, 0, 100), 2)
  }
  return model<Pick<BatteryModel, 'charging'>>('battery.pct', startTick, valueAt, { charging: (tick: number) => position(tick) >= drainTicks })
}

export interface DeviceSensors {
  readonly temperature: SensorModel
  readonly humidity: SensorModel
  readonly vibration: VibrationModel
  readonly battery: BatteryModel
}

/** The four models of one simulated device, by role (for tests and the report). */
export function deviceModels(seed: number, deviceIndex: number, options: VibrationOptions = {}): DeviceSensors {
  return {
    temperature: temperatureModel(seed, deviceIndex, options),
    humidity: humidityModel(seed, deviceIndex, options),
    vibration: vibrationModel(seed, deviceIndex, options),
    battery: batteryModel(seed, deviceIndex, options),
  }
}

/** The sensors one simulated device's agent samples, in DEVICE_SENSOR_NAMES order. */
export function deviceSensors(seed: number, deviceIndex: number, options: VibrationOptions = {}): SensorModel[] {
  return sensorList(deviceModels(seed, deviceIndex, options))
}

/** A device's models as its agent samples them, in DEVICE_SENSOR_NAMES order. */
export function sensorList(m: DeviceSensors): SensorModel[] {
  return [m.temperature, m.humidity, m.vibration, m.battery]
}
