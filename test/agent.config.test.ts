import { afterEach, describe, expect, it } from 'vitest'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { AGENT_DEFAULTS, resolveAgentConfig } from '../agent/config.js'
import { loadAgentConfig } from '../agent/config-sources.js'
import { issuesOf, removeDir, tempDir } from './agent.support.js'

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) removeDir(d) })

const flags = { hub: 'mqtt://127.0.0.1:1883', id: 'dev-1', token: 'flag-token' }

describe('loadAgentConfig', () => {
  it('applies the defaults and freezes the result', () => {
    const c = loadAgentConfig({ flags })
    expect(c).toMatchObject({ ...AGENT_DEFAULTS, hub: flags.hub, id: 'dev-1', token: 'flag-token', dataDir: resolve('rollcall-data/agents/dev-1') })
    expect(c.keepaliveSec).toBe(30)
    expect(Object.isFrozen(c)).toBe(true)
    expect(Object.isFrozen(c.sensors)).toBe(true)
  })

  it('layers file < env < flags, and maps --data to dataDir', () => {
    const file = { hub: 'mqtt://file:1', id: 'from-file', token: 'file-token', sampleIntervalMs: '250ms', ackTimeoutMs: 5000, keepaliveSec: 10 }
    expect(loadAgentConfig({ file })).toMatchObject({ hub: 'mqtt://file:1', id: 'from-file', token: 'file-token', sampleIntervalMs: 250, ackTimeoutMs: 5000, keepaliveSec: 10 })
    expect(loadAgentConfig({ file, env: { ROLLCALL_TOKEN: 'env-token' } }).token).toBe('env-token')
    const c = loadAgentConfig({ file, env: { ROLLCALL_TOKEN: 'env-token' }, flags: { ...flags, data: '/tmp/x' } })
    expect(c).toMatchObject({ hub: flags.hub, id: 'dev-1', token: 'flag-token', dataDir: '/tmp/x', sampleIntervalMs: 250 })
  })

  it('reads the file named by --config', () => {
    const dir = tempDir()
    dirs.push(dir)
    const path = join(dir, 'agent.json')
    writeFileSync(path, JSON.stringify({ sensors: [{ name: 'sim.t', model: 'sine', min: 0, max: 1, unit: '°C', periodMs: '1m' }], builtinSensors: false }))
    const c = loadAgentConfig({ flags: { ...flags, config: path } })
    expect(c.sensors).toEqual([{ name: 'sim.t', model: 'sine', min: 0, max: 1, unit: '°C', periodMs: 60_000 }])
    expect(c.builtinSensors).toBe(false)
    writeFileSync(path, '{ nope')
    expect(issuesOf(() => loadAgentConfig({ flags: { ...flags, config: path } }))[0]).toContain(path)
  })

  it.each([
    ['missing hub', { id: 'dev-1', token: 't' }, 'hub:'],
    ['missing token', { hub: flags.hub, id: 'dev-1' }, 'ROLLCALL_TOKEN'],
    ['bad device id', { ...flags, id: 'Dev/1' }, 'id:'],
    ['bad hub url', { ...flags, hub: 'http://x' }, 'hub:'],
    ['unknown field', { ...flags, sampleInterval: 5 }, 'unknown field sampleInterval'],
    ['wrong type', { ...flags, inflightBatches: 0 }, 'inflightBatches: must be >= 1 (1..64)'],
    ['bad duration', { ...flags, ackTimeoutMs: '10 parsecs' }, 'ackTimeoutMs: "10 parsecs" is not a duration'],
    ['batch too big for the payload cap', { ...flags, batchMaxBytes: 70_000 }, 'batchMaxBytes'],
    ['bad sensor model', { ...flags, sensors: [{ name: 'a.b', model: 'square', min: 0, max: 1 }] }, 'sensors.0.model'],
    ['duplicate sensor', { ...flags, sensors: [{ name: 'a.b', model: 'constant', min: 0, max: 1 }, { name: 'a.b', model: 'constant', min: 0, max: 1 }] }, 'sensors.1.name'],
    ['min above max', { ...flags, sensors: [{ name: 'a.b', model: 'constant', min: 2, max: 1 }] }, 'sensors.0: min'],
    ['a unit too long', { ...flags, sensors: [{ name: 'a.b', model: 'constant', min: 0, max: 1, unit: 'degrees Celsius, roughly' }] }, 'sensors.0.unit: "degrees Celsius, roughly" is not a unit'],
    ['an empty unit', { ...flags, sensors: [{ name: 'a.b', model: 'constant', min: 0, max: 1, unit: '' }] }, 'sensors.0.unit'],
    ['backoff max below base', { ...flags, reconnectBaseMs: 1000, reconnectMaxMs: 10 }, 'reconnectMaxMs'],
  ])('refuses %s, naming the field', (_name, file, expected) => {
    const issues = issuesOf(() => loadAgentConfig({ file }))
    expect(issues.join('\n')).toContain(expected)
  })

  it('lists every problem at once', () => {
    expect(issuesOf(() => resolveAgentConfig({ keepaliveSec: 0, synchronous: 'OFF' as 'FULL' })).length).toBeGreaterThanOrEqual(2)
  })
})
