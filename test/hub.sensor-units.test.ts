import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import { encode, topics } from '../protocol/index.js'
import { startAgents } from './support/agents.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'

/**
 * Sensor units (issue #11): an agent declares them in its birth once the
 * hub's answer says it takes them; the hub keeps them with the device's
 * birth info, across restarts, and serves them with the telemetry so a chart
 * can label its axis. An older agent's birth, without units, is still taken.
 */

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

interface Telemetry { units: Record<string, string>; samples: Array<{ sensor: string }> }
interface Device { presence: { status: string; info: { units: Record<string, string>; capabilities: string[] } } | null }

const DECLARED = { 'cpu.load': 'load', 'mem.used': 'ratio', uptime: 's', 'env.temp': '°C' }

/** What the device declared, without cpu.temp (only on hosts with a thermal zone). */
function withoutTemp(units: Record<string, string>): Record<string, string> {
  const { 'cpu.temp': _t, ...rest } = units
  return rest
}

async function unitsOf(hub: TestHub, id: string): Promise<{ device: Record<string, string>; telemetry: Record<string, string> }> {
  const d = await hub.api<Device>('GET', `/api/devices/${id}`)
  const t = await hub.api<Telemetry>('GET', `/api/devices/${id}/telemetry?since=1m`)
  return { device: d.body.presence?.info.units ?? {}, telemetry: t.body.units }
}

describe('sensor units', () => {
  it('keeps the units an agent declares, serves them with the device and its telemetry, and keeps them across a hub restart', async () => {
    const tmp = tempDir('units')
    cleanups.push(tmp.remove)
    let hub = await startTestHub({}, tmp.dir)
    let stopped = false
    cleanups.push(() => (stopped ? undefined : hub.stop()))
    const token = await hub.addDevice('unit-dev')
    const agents: Agent[] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'unit-dev', token }], {
      builtinSensors: true, sensors: [{ name: 'env.temp', model: 'constant', min: 21, max: 21, unit: '°C' }, { name: 'env.raw', model: 'constant', min: 1, max: 1 }],
    })
    cleanups.push(() => agents[0]!.stop())
    await waitFor(() => Object.keys(hub.running.services.presence.get('unit-dev')?.info.units ?? {}).length > 0, 'units declared')
    agents[0]!.sampleNow()
    await waitFor(async () => (await hub.api<Telemetry>('GET', '/api/devices/unit-dev/telemetry?since=1m')).body.samples.length > 0, 'samples stored')

    const seen = await unitsOf(hub, 'unit-dev')
    expect(withoutTemp(seen.device)).toEqual(DECLARED)
    expect(seen.telemetry).toEqual(seen.device)
    // A sensor without a unit has no entry.
    expect(seen.device['env.raw']).toBeUndefined()

    // Stop the agent, then the hub; the units come back from the database, the device still offline.
    await agents[0]!.stop()
    await hub.stop()
    stopped = true
    hub = await startTestHub({}, tmp.dir)
    stopped = false
    const after = await unitsOf(hub, 'unit-dev')
    expect(withoutTemp(after.device)).toEqual(DECLARED)
    expect(after.telemetry).toEqual(after.device)
  })

  it('takes an older agent\'s birth without units: the device is online and declares none', async () => {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('old-agent')
    const c = await connectDevice(hub.mqttUrl, 'old-agent', token)
    cleanups.push(() => c.endAsync(true))
    const acks: unknown[] = []
    await c.subscribeAsync(topics.telemetryAck('old-agent'), { qos: 1 })
    c.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString())))
    await c.publishAsync(topics.state('old-agent'), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b1', agentVersion: '0.0.9', storeId: 'store-old-0001', capabilities: ['telemetry'] }), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable('old-agent'), 'old agent online')
    expect(await unitsOf(hub, 'old-agent')).toEqual({ device: {}, telemetry: {} })
    // It did not list telemetry.backlog, so its acks carry no `accepts` it could not read.
    await waitFor(() => acks.length > 0, 'the answer to the birth')
    expect(acks[0]).not.toHaveProperty('accepts')
    const dead = await hub.api<{ deadLetters: unknown[] }>('GET', '/api/dead-letters')
    expect(dead.body.deadLetters).toEqual([])
  })

  it('refuses a birth whose units break the rules, as a dead letter saying which', async () => {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('bad-units')
    const c = await connectDevice(hub.mqttUrl, 'bad-units', token)
    cleanups.push(() => c.endAsync(true))
    const birth = { type: 'birth', v: 1, epoch: 1, bootId: 'b1', agentVersion: '0.1.0', storeId: 'store-bad-0001', capabilities: [], units: { 'env.temp': 'degrees Celsius, roughly' } }
    await c.publishAsync(topics.state('bad-units'), JSON.stringify(birth), { qos: 1 })
    const dead = await waitFor(async () => (await hub.api<{ deadLetters: Array<{ reason: string; detail: string }> }>('GET', '/api/dead-letters')).body.deadLetters[0], 'a dead letter')
    expect(dead.reason).toBe('SCHEMA')
    expect(dead.detail).toContain('/units/env.temp')
    expect(hub.running.services.presence.isReachable('bad-units')).toBe(false)
  })
})
