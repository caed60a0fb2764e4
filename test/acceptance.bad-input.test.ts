import { afterEach, describe, expect, it } from 'vitest'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { silentLogger } from '../common/logger.js'
import { topics } from '../protocol/index.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'

/**
 * Acceptance 5 (issue #2): malformed JSON, wrong schema, an unknown topic
 * under the device's own prefix, an oversized payload, raw garbage bytes and
 * 10,000 garbage messages in a burst are each refused or dead-lettered with a
 * reason; other devices keep streaming without loss; the hub's memory stays flat.
 */
interface DeadLetterBody { deadLetters: Array<{ deviceId: string | null; reason: string; detail: string; topic: string }>; countsByReason: Record<string, number> }

describe('bad input', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function goodAgents(hub: TestHub, n: number): Promise<Agent[]> {
    const tmp = tempDir('bad-input')
    cleanups.push(tmp.remove)
    const agents: Agent[] = []
    for (let i = 0; i < n; i++) {
      const id = `good-${i}`
      const token = await hub.addDevice(id)
      const agent = createAgent(resolveAgentConfig({
        hub: hub.mqttUrl, id, token, dataDir: join(tmp.dir, id), builtinSensors: false, sampleIntervalMs: 25, logLevel: 'silent',
        sensors: [{ name: 'temp', model: 'sine', min: 0, max: 1, periodMs: 1000 }],
      }), { logger: silentLogger() })
      await agent.start()
      cleanups.push(() => agent.stop())
      agents.push(agent)
    }
    return agents
  }

  it('dead-letters or refuses each kind of bad input and keeps everyone else streaming', async () => {
    const hub = await startTestHub({ badMessagesPerMinute: 100 })
    cleanups.push(() => hub.stop())
    const agents = await goodAgents(hub, 2)
    const badToken = await hub.addDevice('bad-1')
    const stored = () => hub.running.services.telemetry.counters().samplesStored
    await waitFor(() => stored() > 50, 'good devices streaming')
    global.gc?.()
    const heapBefore = process.memoryUsage().heapUsed

    // One of each, on one connection (below the bad-message budget).
    const bad = await connectDevice(hub.mqttUrl, 'bad-1', badToken)
    await bad.publishAsync(topics.telemetry('bad-1'), Buffer.from('{"type":"telemetry",'), { qos: 1 })
    await bad.publishAsync(topics.telemetry('bad-1'), Buffer.from(JSON.stringify({ type: 'telemetry', v: 1, storeId: 'nope' })), { qos: 1 })
    await bad.publishAsync('devices/bad-1/firmware', Buffer.from('hello'), { qos: 1 })
    await bad.publishAsync(topics.events('bad-1'), Buffer.from([0xc3, 0x28, 0xff]), { qos: 1 })
    await bad.endAsync()
    const dl = async () => (await hub.api<DeadLetterBody>('GET', '/api/dead-letters?device=bad-1&limit=1000')).body
    await waitFor(async () => (await dl()).deadLetters.length >= 4, 'four dead letters')
    const reasons = (await dl()).deadLetters.map((d) => d.reason).sort()
    expect(reasons).toEqual(['NOT_UTF8_JSON', 'NOT_UTF8_JSON', 'SCHEMA', 'UNKNOWN_TOPIC'])
    expect((await dl()).deadLetters.find((d) => d.reason === 'SCHEMA')!.detail).toMatch(/storeId|samples/)

    // Oversized: refused by the broker before it is buffered; the connection is closed.
    const big = await connectDevice(hub.mqttUrl, 'bad-1', badToken)
    const closed = new Promise<void>((resolve) => big.once('close', () => resolve()))
    big.publish(topics.telemetry('bad-1'), Buffer.alloc(200_000, 0x41), { qos: 0 })
    await closed
    big.end(true)
    await waitFor(async () => (await dl()).deadLetters.some((d) => d.reason === 'PAYLOAD_TOO_LARGE'), 'oversize recorded')

    // Raw garbage bytes on the MQTT port: the connection is closed, nothing else happens.
    await new Promise<void>((resolve, reject) => {
      const s = netConnect(hub.running.mqttPort, '127.0.0.1', () => s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01])))
      s.on('close', () => resolve())
      s.on('error', () => undefined)
      setTimeout(() => reject(new Error('garbage connection was not closed')), 5000).unref()
    })

    // 10,000 garbage messages in a burst: the first ones are dead-lettered, then the client is cut off.
    const flood = await connectDevice(hub.mqttUrl, 'bad-1', badToken)
    const floodClosed = new Promise<void>((resolve) => flood.once('close', () => resolve()))
    for (let i = 0; i < 10_000; i++) flood.publish(topics.telemetry('bad-1'), Buffer.from(`garbage ${i}`), { qos: 0 })
    await floodClosed
    flood.end(true)
    const counts = (await dl()).countsByReason
    // The bad-message budget is 100 a minute per client, counting the earlier ones: the hub
    // dead-lettered what it read up to the budget, then cut the client off; the rest was never read.
    const total = Object.values(counts).reduce((a, b) => a + b, 0)
    expect(total).toBeGreaterThanOrEqual(101)
    expect(total).toBeLessThan(1000)
    expect(hub.running.broker.isConnected('bad-1')).toBe(false)

    // The good devices kept streaming through all of it, and lose nothing.
    const before = stored()
    await waitFor(() => stored() > before + 50, 'good devices still streaming')
    for (const a of agents) await a.stop()
    for (const a of agents) {
      const id = a.deviceId
      const rows = (await hub.running.services.telemetry.query({ deviceId: id, sinceMs: 0, untilMs: Date.now() + 60_000, limit: 1_000_000 })) as Array<{ seq: number }>
      const last = (await hub.running.services.telemetry.streamsOf(id))[0]!.upTo
      expect(rows.length).toBe(last)
      expect(new Set(rows.map((r) => r.seq)).size).toBe(rows.length)
    }

    global.gc?.()
    const grownMb = (process.memoryUsage().heapUsed - heapBefore) / 1e6
    expect(grownMb).toBeLessThan(40)
  })
})
