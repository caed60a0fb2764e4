import { afterEach, describe, expect, it } from 'vitest'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { manualClock } from '../common/clock.js'
import { silentLogger } from '../common/logger.js'
import { Ledger } from '../agent/ledger.js'
import { Outbox } from '../agent/outbox.js'
import { Sampler } from '../agent/sampler.js'
import { builtinSensors, checkSensors, simulatedSensor, type SensorSource } from '../agent/sensors.js'
import { removeDir, tempDir } from './agent.support.js'

const dirs: string[] = []
const ledgers: Ledger[] = []
afterEach(() => {
  for (const l of ledgers.splice(0)) l.close()
  for (const d of dirs.splice(0)) removeDir(d)
})

function readings(s: SensorSource, n: number, stepMs = 100): number[] {
  return Array.from({ length: n }, (_, i) => s.read(i * stepMs)!)
}

describe('simulated sensors', () => {
  it.each(['sine', 'random-walk', 'constant'] as const)('%s is deterministic from its seed and stays within [min, max]', (model) => {
    const cfg = { name: 'sim.x', model, min: -5, max: 5, periodMs: 1000, seed: 7 }
    const a = readings(simulatedSensor(cfg), 500)
    expect(readings(simulatedSensor(cfg), 500)).toEqual(a)
    for (const v of a) {
      expect(v).toBeGreaterThanOrEqual(-5)
      expect(v).toBeLessThanOrEqual(5)
    }
  })

  it('differs by seed, and an unseeded sensor is seeded by its name', () => {
    const base = { name: 'sim.x', model: 'random-walk', min: 0, max: 1 } as const
    expect(readings(simulatedSensor({ ...base, seed: 1 }), 10)).not.toEqual(readings(simulatedSensor({ ...base, seed: 2 }), 10))
    expect(readings(simulatedSensor(base), 10)).toEqual(readings(simulatedSensor(base), 10))
  })

  it('a sine covers its range over a period; a constant is the midpoint', () => {
    const sine = readings(simulatedSensor({ name: 's', model: 'sine', min: 0, max: 10, periodMs: 1000 }), 100, 10)
    expect(Math.max(...sine)).toBeGreaterThan(9.9)
    expect(Math.min(...sine)).toBeLessThan(0.1)
    expect(simulatedSensor({ name: 'c', model: 'constant', min: 4, max: 4 }).read(0)).toBe(4)
  })
})

describe('built-in sensors', () => {
  it('reads load, memory fraction, uptime, and temperature only where the thermal file exists', () => {
    const dir = tempDir()
    dirs.push(dir)
    expect(builtinSensors(join(dir, 'missing')).map((s) => s.name)).toEqual(['cpu.load', 'mem.used', 'uptime'])
    const thermal = join(dir, 'temp')
    writeFileSync(thermal, '48312\n')
    const sensors = builtinSensors(thermal)
    const temp = sensors.find((s) => s.name === 'cpu.temp')!
    expect(temp.read(0)).toBeCloseTo(48.312)
    const mem = sensors.find((s) => s.name === 'mem.used')!.read(0)!
    expect(mem).toBeGreaterThan(0)
    expect(mem).toBeLessThan(1)
  })

  it('refuses invalid and duplicate names before sampling', () => {
    expect(() => checkSensors([{ name: 'Bad Name', read: () => 1 }])).toThrow(/invalid/)
    expect(() => checkSensors([{ name: 'a', read: () => 1 }, { name: 'a', read: () => 2 }])).toThrow(/twice/)
  })
})

describe('sampler', () => {
  it('writes one tick of all sensors as one batch of rows with the tick time, skipping bad readings', () => {
    const dir = tempDir()
    dirs.push(dir)
    const ledger = new Ledger({ dataDir: dir })
    ledgers.push(ledger)
    const outbox = new Outbox(ledger)
    const clock = manualClock(1_700_000_000_000)
    const appends: number[] = []
    outbox.onAppend((n) => appends.push(n))
    let broken = true
    const sensors: SensorSource[] = [
      { name: 'a', read: () => 1.5 },
      { name: 'b', read: () => undefined },
      { name: 'c', read: () => { if (broken) throw new Error('i2c timeout'); return 3 } },
      { name: 'd', read: () => Number.NaN },
      { name: 'e', read: (now) => now % 1000 },
    ]
    const sampler = new Sampler(outbox, sensors, { intervalMs: 0, clock, logger: silentLogger() })
    expect(sampler.sampleNow()).toBe(2)
    clock.advance(250)
    broken = false
    expect(sampler.sampleNow()).toBe(3)
    expect(appends).toEqual([2, 5]) // one append (one transaction) per tick
    const bodies = outbox.readAfter(0, 10).map((r) => JSON.parse(r.body) as unknown)
    expect(bodies).toEqual([
      { sensor: 'a', ts: 1_700_000_000_000, value: 1.5 },
      { sensor: 'e', ts: 1_700_000_000_000, value: 0 },
      { sensor: 'a', ts: 1_700_000_000_250, value: 1.5 },
      { sensor: 'c', ts: 1_700_000_000_250, value: 3 },
      { sensor: 'e', ts: 1_700_000_000_250, value: 250 },
    ])
    expect(sampler.stats()).toEqual({ ticks: 2, samples: 5, sensorErrors: 3 })
  })
})
