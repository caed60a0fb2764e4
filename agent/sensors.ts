import { existsSync, readFileSync } from 'node:fs'
import { freemem, loadavg, totalmem, uptime } from 'node:os'
import { seededRandom } from '../common/clock.js'
import { isSensorName, isUnit } from '../protocol/ids.js'
import { LIMITS } from '../protocol/limits.js'

/**
 * Sensors: anything with a name that can be read. `read` returns undefined
 * when it has nothing to say this tick (the sample is skipped, not faked).
 * The sampler that turns readings into outbox rows lives in sampler.ts.
 */
export interface SensorSource {
  /** Must match SENSOR_NAME_PATTERN; unique within one agent. */
  readonly name: string
  /** What the readings count in ("°C", "s", "ratio"): the birth declares it and charts label their axis with it. Must pass isUnit. */
  readonly unit?: string
  read(nowMs: number): number | undefined
}

/**
 * The units the birth declares, by sensor name. Sensors without a unit are
 * left out; one whose unit or name the hub would refuse, and any beyond the
 * protocol's cap, are left out and named in `skipped` (the birth must pass).
 */
export function sensorUnits(sensors: readonly SensorSource[]): { units: Record<string, string>; skipped: string[] } {
  const units: Record<string, string> = {}
  const skipped: string[] = []
  let n = 0
  for (const s of sensors) {
    if (s.unit === undefined) continue
    if (!isSensorName(s.name) || !isUnit(s.unit) || n >= LIMITS.maxSensorUnits) skipped.push(s.name)
    else if (!(s.name in units)) {
      units[s.name] = s.unit
      n++
    }
  }
  return { units, skipped }
}

export const THERMAL_ZONE0 = '/sys/class/thermal/thermal_zone0/temp'

/**
 * Built-in host sensors, with the unit each declares in the birth:
 * - `cpu.load` (`load`): 1-minute load average, the average number of
 *   processes running or waiting to run; unitless, as in `uptime(1)`.
 * - `mem.used` (`ratio`): fraction (0..1) of physical memory in use. A
 *   fraction, not bytes, so fleets of different RAM sizes share one threshold
 *   rule; libuv counts reclaimable cache as free (MemAvailable), so this is
 *   "really used". The dashboard shows a `ratio` as a percentage.
 * - `uptime` (`s`): seconds since the host booted (not the agent: agent
 *   restarts show up in births, host reboots here).
 * - `cpu.temp` (`°C`): degrees Celsius from thermal zone 0, only where that
 *   file exists (Raspberry Pi and most Linux SBCs).
 */
export function builtinSensors(thermalPath = THERMAL_ZONE0): SensorSource[] {
  const sensors: SensorSource[] = [
    { name: 'cpu.load', unit: 'load', read: () => loadavg()[0] },
    { name: 'mem.used', unit: 'ratio', read: () => { const total = totalmem(); return total > 0 ? (total - freemem()) / total : undefined } },
    { name: 'uptime', unit: 's', read: () => Math.round(uptime()) },
  ]
  if (existsSync(thermalPath)) {
    sensors.push({
      name: 'cpu.temp',
      unit: '°C',
      read: () => {
        const milli = Number.parseInt(readFileSync(thermalPath, 'utf8'), 10)
        return Number.isFinite(milli) ? milli / 1000 : undefined
      },
    })
  }
  return sensors
}

export const SIM_MODELS = ['sine', 'random-walk', 'constant'] as const
export type SimModel = (typeof SIM_MODELS)[number]

export interface SimulatedSensorConfig {
  readonly name: string
  readonly model: SimModel
  readonly min: number
  readonly max: number
  /** Declared in the birth, e.g. "°C"; none by default. */
  readonly unit?: string
  /** Period of the sine wave; default 60 s. Ignored by the other models. */
  readonly periodMs?: number
  /** Seed of the sensor's random stream; defaults to a hash of its name, so runs repeat. */
  readonly seed?: number
}

const DEFAULT_PERIOD_MS = 60_000
/** A random walk moves at most this fraction of its range per reading. */
const WALK_STEP = 0.05

/** FNV-1a: a stable seed from a name, so unseeded sensors still repeat across runs. */
export function seedFromName(name: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** Four decimals are plenty for a simulation and keep payloads about a third smaller. */
function round4(v: number): number {
  return Math.round(v * 1e4) / 1e4
}

/**
 * A deterministic simulated sensor:
 * - `sine`: oscillates between min and max with `periodMs`, phase from the seed
 *   (a function of time, so readings at the same time repeat);
 * - `random-walk`: starts at a seeded point in [min, max] and moves by up to 5 %
 *   of the range per reading, reflected at the bounds;
 * - `constant`: the midpoint of min and max (set min = max for an exact value).
 */
export function simulatedSensor(config: SimulatedSensorConfig): SensorSource {
  const source = modelSource(config)
  return config.unit === undefined ? source : { ...source, unit: config.unit }
}

function modelSource(config: SimulatedSensorConfig): SensorSource {
  const { name, min, max } = config
  const random = seededRandom(config.seed ?? seedFromName(name))
  const range = max - min
  switch (config.model) {
    case 'sine': {
      const period = config.periodMs ?? DEFAULT_PERIOD_MS
      const phase = random() * 2 * Math.PI
      const mid = (min + max) / 2
      return { name, read: (now) => round4(mid + (range / 2) * Math.sin((2 * Math.PI * now) / period + phase)) }
    }
    case 'random-walk': {
      let value = min + random() * range
      return {
        name,
        read: () => {
          value += (random() * 2 - 1) * range * WALK_STEP
          if (value > max) value = max - (value - max)
          if (value < min) value = min + (min - value)
          return round4(value)
        },
      }
    }
    case 'constant': {
      const value = (min + max) / 2
      return { name, read: () => value }
    }
    default: {
      const never: never = config.model
      throw new Error(`unknown sensor model ${String(never)}`)
    }
  }
}

/** Checks a set of sensors once, before sampling starts: names valid and unique. */
export function checkSensors(sensors: readonly SensorSource[]): void {
  const seen = new Set<string>()
  for (const s of sensors) {
    if (!isSensorName(s.name)) throw new Error(`sensor name ${JSON.stringify(s.name)} is invalid: use lowercase letters, digits, ".", "_", "-" (at most 64)`)
    if (seen.has(s.name)) throw new Error(`sensor name ${s.name} is used twice`)
    seen.add(s.name)
  }
}
