import { describe, expect, it } from 'vitest'
import { checkSensors, type SensorSource } from '../agent/sensors.js'
import {
  DEVICE_SENSOR_NAMES,
  batteryModel,
  deviceModels,
  deviceSensors,
  humidityModel,
  temperatureModel,
  vibrationModel,
  type SensorModel,
} from '../devices-sim/models.js'

const TICKS = 10_000

/** Reads a source n times; the time argument is deliberately jittery to prove it is ignored. */
function readN(source: SensorSource, n: number): number[] {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push(source.read(i * 1000 + ((i * 7919) % 37)) as number)
  return out
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length
}

function correlation(xs: readonly number[], ys: readonly number[]): number {
  const mx = mean(xs)
  const my = mean(ys)
  let sxy = 0
  let sxx = 0
  let syy = 0
  for (let i = 0; i < xs.length; i++) {
    const dx = xs[i]! - mx
    const dy = ys[i]! - my
    sxy += dx * dy
    sxx += dx * dx
    syy += dy * dy
  }
  return sxy / Math.sqrt(sxx * syy)
}

function autocorrelation(xs: readonly number[], lag: number): number {
  return correlation(xs.slice(0, xs.length - lag), xs.slice(lag))
}

const constructors = {
  'env.temp': temperatureModel,
  'env.humidity': humidityModel,
  'vib.rms': vibrationModel,
  'battery.pct': batteryModel,
} as const

const ranges: Record<string, [number, number]> = {
  'env.temp': [10, 35],
  'env.humidity': [30, 70],
  'vib.rms': [0, 5],
  'battery.pct': [0, 100],
}

describe('sensor models', () => {
  it('deviceSensors returns the four models, with names the agent accepts', () => {
    const sensors = deviceSensors(42, 0)
    expect(sensors.map((s) => s.name)).toEqual([...DEVICE_SENSOR_NAMES])
    expect(() => checkSensors(sensors)).not.toThrow()
  })

  it.each(DEVICE_SENSOR_NAMES)('%s: the same seed gives the same sequence, whatever the read times', (name) => {
    const make = constructors[name]
    const a = readN(make(42, 3), 2000)
    const b: number[] = []
    const again = make(42, 3)
    for (let i = 0; i < 2000; i++) b.push(again.read(123_456_789 - i) as number)
    expect(b).toEqual(a)
  })

  it.each(DEVICE_SENSOR_NAMES)('%s: different devices and different seeds differ', (name) => {
    const make = constructors[name]
    const a = readN(make(42, 0), 500)
    expect(readN(make(42, 1), 500)).not.toEqual(a)
    expect(readN(make(43, 0), 500)).not.toEqual(a)
  })

  it.each(DEVICE_SENSOR_NAMES)('%s: stays in range over 10,000 ticks on 20 devices, always finite', (name) => {
    const [lo, hi] = ranges[name]!
    for (let d = 0; d < 20; d++) {
      const values = readN(constructors[name](7, d, { dayMs: 3_600_000 }), TICKS)
      expect(values.every(Number.isFinite)).toBe(true)
      expect(Math.min(...values)).toBeGreaterThanOrEqual(lo)
      expect(Math.max(...values)).toBeLessThanOrEqual(hi)
    }
  })

  it.each(DEVICE_SENSOR_NAMES)('%s: valueAt is pure and read(k) = valueAt(k); startTick resumes mid-stream', (name) => {
    const make = constructors[name]
    const m: SensorModel = make(9, 2)
    const seq = readN(m, 300)
    expect(m.nextTick).toBe(300)
    expect(seq.map((_, k) => m.valueAt(k))).toEqual(seq)
    const resumed = make(9, 2, { startTick: 200 })
    expect(readN(resumed, 100)).toEqual(seq.slice(200))
  })

  it('temperature: the daily cycle shows with its period, and a compressed day compresses it', () => {
    const ticksPerDay = 1000
    const temp = readN(temperatureModel(1, 0, { tickMs: 1000, dayMs: ticksPerDay * 1000 }), TICKS)
    expect(autocorrelation(temp, ticksPerDay)).toBeGreaterThan(0.5)
    expect(autocorrelation(temp, ticksPerDay / 2)).toBeLessThan(-0.3)
    // The afternoon is warmer than the night (peak at 15:00 ± 1 h, trough near 03:00).
    const at = (hour: number) => mean(temp.filter((_, k) => Math.floor(((k % ticksPerDay) / ticksPerDay) * 24) === hour))
    expect(at(15)).toBeGreaterThan(at(3) + 2)
  })

  it('temperature: per-device bases spread over about 18–24 °C', () => {
    const means = Array.from({ length: 50 }, (_, d) => mean(readN(temperatureModel(5, d, { dayMs: 1_000_000 }), 1000)))
    expect(Math.min(...means)).toBeLessThan(19.5)
    expect(Math.max(...means)).toBeGreaterThan(22.5)
  })

  it('humidity runs against the temperature cycle', () => {
    for (const d of [0, 1, 2, 3]) {
      const opts = { dayMs: 1_000_000 }
      const temp = readN(temperatureModel(11, d, opts), 5000)
      const hum = readN(humidityModel(11, d, opts), 5000)
      expect(correlation(temp, hum)).toBeLessThan(-0.5)
    }
  })

  it('vibration: bursts of 3–8 ticks at about one per 500 ticks, far above the baseline, listed exactly', () => {
    const ticks = 100_000
    let starts = 0
    for (const d of [0, 1, 2, 3, 4]) {
      const vib = vibrationModel(3, d)
      const bursts = vib.anomalies(0, ticks)
      starts += bursts.length
      for (const b of bursts) {
        expect(b.ticks).toBeGreaterThanOrEqual(3)
        expect(b.ticks).toBeLessThanOrEqual(8)
      }
      const values = readN(vib, ticks)
      const normal = values.filter((_, k) => !vib.isAnomaly(k))
      const anomalous = values.filter((_, k) => vib.isAnomaly(k))
      // Every anomalous tick is louder than any quiet one: a threshold rule finds exactly them.
      expect(Math.min(...anomalous)).toBeGreaterThan(Math.max(...normal))
      // isAnomaly agrees with the listed bursts.
      const covered = new Set<number>()
      for (const b of bursts) for (let k = b.startTick; k < b.startTick + b.ticks && k < ticks; k++) covered.add(k)
      expect(anomalous.length).toBe(covered.size)
    }
    // 5 devices × 100,000 ticks / 500 = 1,000 expected; Poisson sd ≈ 32.
    expect(starts).toBeGreaterThan(880)
    expect(starts).toBeLessThan(1120)
  })

  it('vibration: the anomaly rate is a parameter', () => {
    const vib = vibrationModel(3, 0, { anomalyEveryTicks: 50 })
    const n = vib.anomalies(0, 50_000).length
    expect(n).toBeGreaterThan(850)
    expect(n).toBeLessThan(1150)
  })

  it('battery: drains, recharges faster when under 20 %, tops out at 95 %', () => {
    for (let d = 0; d < 10; d++) {
      const battery = batteryModel(21, d)
      const values = readN(battery, TICKS)
      let down = 0
      let up = 0
      let maxDrop = 0
      let maxRise = 0
      for (let k = 1; k < values.length; k++) {
        const step = values[k]! - values[k - 1]!
        if (step < 0 && battery.charging(k) === false) { down++; maxDrop = Math.max(maxDrop, -step) }
        if (step > 0) { up++; maxRise = Math.max(maxRise, step) }
      }
      expect(down).toBeGreaterThan(0)
      expect(up).toBeGreaterThan(0)
      expect(maxRise).toBeGreaterThan(maxDrop * 2.5)
      expect(Math.min(...values)).toBeGreaterThanOrEqual(19.9)
      expect(Math.max(...values)).toBeLessThanOrEqual(95)
    }
  })

  it('deviceModels gives the same values as deviceSensors for the same device', () => {
    const models = deviceModels(8, 4)
    const sensors = deviceSensors(8, 4)
    expect(readN(sensors[0]!, 100)).toEqual(readN(models.temperature, 100))
    expect(readN(sensors[3]!, 100)).toEqual(readN(models.battery, 100))
  })

  it.each([
    [{ tickMs: 0 }, /tickMs/],
    [{ dayMs: -1 }, /dayMs/],
    [{ startTick: 1.5 }, /startTick/],
  ])('refuses bad options %j', (options, message) => {
    expect(() => temperatureModel(1, 0, options)).toThrow(message)
  })
})
