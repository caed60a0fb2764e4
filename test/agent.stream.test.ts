import { afterEach, describe, expect, it } from 'vitest'
import { connectAsync, type MqttClient } from 'mqtt'
import { createAgent, type Agent, type AgentDeps } from '../agent/agent.js'
import { manualClock } from '../common/clock.js'
import { resolveAgentConfig, type AgentConfigInput } from '../agent/config.js'
import type { SensorSource } from '../agent/sensors.js'
import { decode, topics } from '../protocol/index.js'
import { LIMITS } from '../protocol/limits.js'
import { removeDir, sleep, startAcker, startBroker, tempDir, waitFor, type Acker, type TestBroker } from './agent.support.js'

/**
 * End to end on loopback: a real agent (real SQLite file, real MQTT.js) against
 * a real aedes broker and an in-test acker playing the hub.
 */

let broker: TestBroker | undefined
let acker: Acker | undefined
const agents: Agent[] = []
const clients: MqttClient[] = []
const dirs: string[] = []

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop()
  for (const c of clients.splice(0)) await c.endAsync(true)
  await acker?.close()
  await broker?.close()
  acker = undefined
  broker = undefined
  for (const d of dirs.splice(0)) removeDir(d)
})

/** n sensors s0..s{n-1} whose value encodes (sensor, reading number), so the test can check every sample. */
function countingSensors(n: number): SensorSource[] {
  return Array.from({ length: n }, (_, i) => {
    let k = 0
    return { name: `s${i}`, read: () => i * 1_000_000 + k++ }
  })
}

function makeAgent(overrides: AgentConfigInput & { dataDir?: string }, deps: AgentDeps = {}): Agent {
  const dataDir = overrides.dataDir ?? tempDir()
  if (!overrides.dataDir) dirs.push(dataDir)
  const config = resolveAgentConfig({
    hub: broker!.url,
    id: 'dev-1',
    token: 'secret-token',
    builtinSensors: false,
    sampleIntervalMs: 0,
    reconnectBaseMs: 50,
    reconnectMaxMs: 500,
    ackTimeoutMs: 30_000,
    stopTimeoutMs: 2_000,
    ...overrides,
    dataDir,
  })
  const agent = createAgent(config, deps)
  agents.push(agent)
  return agent
}

function backlog(agent: Agent): number {
  return agent.stats().outbox?.backlogRows ?? -1
}

async function setup(autoAck = true, accepts?: string[]): Promise<void> {
  broker = await startBroker()
  acker = await startAcker(broker, { autoAck, ...(accepts ? { accepts } : {}) })
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('agent streaming', () => {
  it('delivers every seq exactly once and in order, and deletes rows on the hub ack', async () => {
    await setup()
    const agent = makeAgent({ batchMaxSamples: 100, inflightBatches: 3 }, { sensors: countingSensors(25) })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    for (let t = 0; t < 40; t++) {
      agent.sampleNow()
      if (t % 10 === 5) agent.emitEvent('test.marker', 'info', `tick ${t}`, { t })
    }
    const storeId = agent.stats().storeId!
    const newest = agent.stats().outbox!.newestSeq
    expect(newest).toBe(40 * 25 + 4)
    await waitFor('all acked and deleted', () => backlog(agent) === 0 && acker!.highWater(storeId) === newest)

    expect(acker!.invalid).toEqual([])
    expect(acker!.seqsOf(storeId)).toEqual(range(1, newest))
    // Every sample of every sensor arrived with its value; events arrived on their own topic.
    const samples = acker!.received.filter((r) => r.kind === 'telemetry')
    const events = acker!.received.filter((r) => r.kind === 'events')
    expect(samples).toHaveLength(1000)
    expect(new Set(samples.map((s) => s.item.value)).size).toBe(1000)
    expect(events.map((e) => e.item.message)).toEqual(['tick 5', 'tick 15', 'tick 25', 'tick 35'])
    expect(events[0]!.item).toMatchObject({ kind: 'test.marker', level: 'info', data: { t: 5 } })
    // Batches respected batchMaxSamples, and kinds were split, not mixed.
    expect(acker!.batches.telemetry).toBeGreaterThanOrEqual(10)
    expect(acker!.batches.events).toBe(4)
    expect(agent.stats().sender).toMatchObject({ ackedUpTo: newest, inflightBatches: 0, ackTimeouts: 0 })
  })

  it('keeps every payload under the 64 KiB cap, even with long names and full-precision values', async () => {
    await setup()
    const sensors: SensorSource[] = Array.from({ length: 1500 }, (_, i) => ({
      name: `sensor.${String(i).padStart(4, '0')}.${'x'.repeat(50)}`,
      read: () => -1234567.123456789 - i / 7,
    }))
    const agent = makeAgent({ batchMaxSamples: 2000 }, { sensors })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    agent.sampleNow()
    agent.emitEvent('big.event', 'warn', 'é'.repeat(5000), { blob: 'y'.repeat(100_000) })
    agent.sampleNow()
    await waitFor('drained', () => backlog(agent) === 0)
    expect(acker!.invalid).toEqual([])
    expect(acker!.largestPayload).toBeLessThan(64 * 1024)
    expect(acker!.largestPayload).toBeGreaterThan(50_000) // batches are filled, not tiny
    const event = acker!.received.find((r) => r.kind === 'events')!.item
    expect((event.message as string).length).toBe(1024)
    expect(event.data).toMatchObject({ truncated: true })
    expect(acker!.seqsOf(agent.stats().storeId!)).toEqual(range(1, 3001))
  })

  it('replaces event data nested past the hub\'s limit by a note, so the batch is never refused (M19b)', async () => {
    await setup()
    const agent = makeAgent({})
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    let deep: Record<string, unknown> = {}
    for (let i = 1; i < LIMITS.maxJsonDepth; i++) deep = { d: deep }
    agent.emitEvent('deep.ok', 'info', 'at the limit', deep)
    agent.emitEvent('deep.bad', 'info', 'one past it', { d: deep })
    await waitFor('drained', () => backlog(agent) === 0)
    expect(acker!.invalid).toEqual([])
    const events = acker!.received.filter((r) => r.kind === 'events').map((r) => r.item)
    expect(events.map((e) => e.kind)).toEqual(['deep.ok', 'deep.bad'])
    expect(events[0]!.data).toEqual(deep)
    expect(events[1]!.data).toEqual({ truncated: true, deeperThan: LIMITS.maxJsonDepth })
  })

  it('streams from its own sampling timer and wakes on appends without polling', async () => {
    await setup()
    const clock = manualClock(Date.now())
    const agent = makeAgent({ sampleIntervalMs: 20, sensors: [{ name: 'sim.temp', model: 'sine', min: 10, max: 30, periodMs: 1000 }, { name: 'sim.walk', model: 'random-walk', min: 0, max: 1 }] }, { clock })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    // 260 ticks of the sampling timer on the clock, each advance firing one: the first
    // tick is written at once, the next 250 when the batcher holds batchMaxSamples (500).
    for (let tick = 0; tick < 260; tick++) clock.advance(20)
    clock.advance(10) // coalesceMs: the send
    await waitFor('200 samples delivered', () => acker!.received.length >= 200)
    await agent.stop()
    const seqs = acker!.received.map((r) => r.seq)
    expect(seqs).toEqual(range(1, seqs.length))
    for (const r of acker!.received) {
      const v = r.item.value as number
      if (r.item.sensor === 'sim.temp') expect(v).toBeGreaterThanOrEqual(10)
      if (r.item.sensor === 'sim.temp') expect(v).toBeLessThanOrEqual(30)
    }
  })

  it('publishes a retained birth with its epoch, store and boot ids right after CONNACK', async () => {
    await setup()
    const agent = makeAgent({}, { bootId: 'boot-1' })
    await agent.start()
    await waitFor('birth', () => acker!.states.length >= 1)
    const birth = acker!.states[0]!.message
    expect(birth).toMatchObject({ type: 'birth', v: 1, epoch: 1, bootId: 'boot-1', storeId: agent.stats().storeId, capabilities: ['telemetry', 'events', 'jobs', 'commands', 'telemetry.backlog', 'time'] })
    expect(birth.type === 'birth' && birth.agentVersion).toMatch(/^\d+\.\d+\.\d+/)
  })

  const births = () => acker!.states.flatMap((s) => (s.message.type === 'birth' ? [{ ...s.message, retain: s.retain }] : []))
  const unitSensors = { builtinSensors: true, sensors: [{ name: 'env.temp', model: 'constant' as const, min: 20, max: 20, unit: '°C' }, { name: 'env.raw', model: 'constant' as const, min: 1, max: 1 }] }
  const declared = { 'cpu.load': 'load', 'mem.used': 'ratio', uptime: 's', 'env.temp': '°C' }

  it('declares its sensors\' units once the hub\'s answer says it takes them: the birth again, same epoch, with units; on every connection', async () => {
    await setup(true, ['backlog', 'units'])
    const agent = makeAgent({ ...unitSensors, reconnectBaseMs: 20 }, { sensors: [{ name: 'ext.volts', unit: 'V', read: () => 3.3 }, { name: 'ext.bad', unit: 'x\n', read: () => 1 }] })
    await agent.start()
    await waitFor('a birth with units', () => births().length >= 2)
    const [first, second] = births()
    expect(first!.units).toBeUndefined()
    // cpu.temp only where the host has a thermal zone; a unit the hub would refuse is left out.
    const { 'cpu.temp': _temp, ...units } = second!.units ?? {}
    expect(units).toEqual({ ...declared, 'ext.volts': 'V' })
    expect(second).toMatchObject({ epoch: first!.epoch, storeId: first!.storeId, retain: true })
    // The hub answers the second birth too; that does not make a third.
    await sleep(300)
    expect(births()).toHaveLength(2)

    // A new connection asks again: without, then with.
    broker!.cutConnections()
    await waitFor('two more births', () => births().length >= 4)
    expect(births().slice(2).map((b) => [b.epoch, b.units === undefined])).toEqual([[first!.epoch + 1, true], [first!.epoch + 1, false]])
    expect(acker!.invalid).toEqual([])
  })

  it('declares no units to a hub whose acks do not say it takes them (an older hub would refuse the birth)', async () => {
    await setup(true, ['backlog'])
    const agent = makeAgent(unitSensors)
    await agent.start()
    await waitFor('birth', () => births().length >= 1)
    agent.sampleNow()
    await waitFor('samples stored and acked', () => backlog(agent) === 0 && acker!.highWater(agent.stats().storeId!) >= 4)
    expect(births()).toHaveLength(1)
    expect(births()[0]!.units).toBeUndefined()
  })
})

describe('acks withheld', () => {
  it('resends from the oldest unacked row after ackTimeoutMs and deletes nothing until acked', async () => {
    await setup(false)
    // Every agent timer runs on this clock: the coalescing delay and each ack
    // timeout pass when the test moves it, not when a busy machine gets round to it.
    const clock = manualClock(Date.now())
    const agent = makeAgent({ ackTimeoutMs: 300 }, { sensors: countingSensors(10), clock })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    agent.sampleNow()
    agent.sampleNow()
    const storeId = agent.stats().storeId!
    const receivedAtLeast = (times: number) => range(1, 20).every((s) => acker!.seqsOf(storeId).filter((x) => x === s).length >= times)
    clock.advance(10) // coalesceMs: the first send
    await waitFor('every seq received once', () => receivedAtLeast(1))
    for (const times of [2, 3]) {
      clock.advance(300) // ackTimeoutMs with no ack: resend from the oldest unacked row
      await waitFor(`every seq received ${times} times`, () => receivedAtLeast(times))
    }
    await waitFor('every seq received at least 3 times', () => receivedAtLeast(3))
    expect(backlog(agent)).toBe(20)
    expect(agent.stats().sender!.ackTimeouts).toBeGreaterThanOrEqual(2)

    // Acks the agent must ignore: another store, garbage, and a bad schema.
    await acker!.publishAck('dev-1', '00000000-0000-4000-8000-000000000000', 20)
    await acker!.publishRaw(topics.telemetryAck('dev-1'), Buffer.from('{not json'))
    await acker!.publishRaw(topics.telemetryAck('dev-1'), Buffer.from(JSON.stringify({ type: 'telemetry.ack', v: 1, storeId, upTo: -1 })))
    await sleep(100)
    expect(backlog(agent)).toBe(20)

    // A partial ack deletes exactly what it covers; a backward ack changes nothing.
    await acker!.publishAck('dev-1', storeId, 7)
    await waitFor('partial ack applied', () => backlog(agent) === 13)
    await acker!.publishAck('dev-1', storeId, 3)
    await sleep(100)
    expect(backlog(agent)).toBe(13)
    expect(agent.stats().outbox!.oldestSeq).toBe(8)

    await acker!.setAutoAck(true)
    clock.advance(300) // the next ack timeout resends what is left, and the acker acks it
    await waitFor('drained', () => backlog(agent) === 0)
    expect(agent.isConnected()).toBe(true)
  })
})

describe('offline buffering', () => {
  it('buffers while the broker is down and delivers everything in seq order when it is back on the same port', async () => {
    await setup()
    const agent = makeAgent({}, { sensors: countingSensors(5) })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    for (let i = 0; i < 4; i++) agent.sampleNow()
    const storeId = agent.stats().storeId!
    await waitFor('first 20 acked', () => acker!.highWater(storeId) === 20 && backlog(agent) === 0)

    await broker!.down()
    await waitFor('agent sees the link down', () => !agent.isConnected())
    for (let i = 0; i < 30; i++) agent.sampleNow()
    expect(backlog(agent)).toBe(150)
    await waitFor('a few failed reconnect attempts', () => agent.stats().link.attempts > 1)

    await broker!.up()
    await waitFor('reconnected and drained', () => backlog(agent) === 0 && acker!.highWater(storeId) === 170)
    expect(acker!.seqsOf(storeId)).toEqual(range(1, 170))
    expect(agent.stats().link.epoch).toBeGreaterThan(1)
    expect(acker!.invalid).toEqual([])
  })

  // 31 rows taken offline: 30 samples (5 sensors x 6) and an event, sent 10 to a batch.
  async function backlogRun(inflightBatches: number, accepts: string[] | undefined) {
    await setup(true, accepts)
    await broker!.down()
    const agent = makeAgent({ batchMaxSamples: 10, inflightBatches }, { sensors: countingSensors(5) })
    await agent.start()
    for (let i = 0; i < 6; i++) agent.sampleNow()
    agent.emitEvent('test.marker', 'info', 'while offline')
    expect(backlog(agent)).toBe(31)
    expect(acker!.batchLog).toEqual([])
    await broker!.up()
    const storeId = agent.stats().storeId!
    await waitFor('reconnected and drained', () => backlog(agent) === 0 && acker!.highWater(storeId) === 31)
    expect(acker!.invalid).toEqual([])
    return acker!.batchLog
  }
  const expectedLog = [
    { kind: 'telemetry', seqs: range(1, 10), backlog: 21 },
    { kind: 'telemetry', seqs: range(11, 20), backlog: 11 },
    { kind: 'telemetry', seqs: range(21, 30), backlog: 1 },
    { kind: 'events', seqs: [31], backlog: 0 },
  ]

  it('says in every batch how many rows wait behind it unsent, 0 once it has caught up, one batch in flight', async () => {
    expect(await backlogRun(1, ['backlog'])).toEqual(expectedLog)
  })

  it('counts the rows behind the batch, not the batches in flight before it (four in flight)', async () => {
    expect(await backlogRun(4, ['backlog'])).toEqual(expectedLog)
  })

  it('sends no backlog to a hub whose acks do not say it takes one (an older hub would refuse the batch)', async () => {
    const log = await backlogRun(4, undefined)
    expect(log.map((b) => b.seqs)).toEqual(expectedLog.map((b) => b.seqs))
    expect(log.map((b) => b.backlog)).toEqual([undefined, undefined, undefined, undefined])
  })

  it('keeps trying with backoff while the hub is unreachable, and stops promptly', async () => {
    await setup()
    await broker!.down()
    const agent = makeAgent({ reconnectBaseMs: 20, reconnectMaxMs: 200 }, { sensors: countingSensors(3) })
    await agent.start()
    agent.sampleNow()
    await waitFor('several attempts', () => agent.stats().link.attempts >= 3)
    expect(agent.isConnected()).toBe(false)
    // Refused attempts sent no CONNECT, so no Will of theirs exists: they share one committed epoch (issue #13).
    expect(agent.stats().link.epoch).toBe(1)
    const t0 = Date.now()
    await agent.stop()
    expect(Date.now() - t0).toBeLessThan(5_000)
    expect(agent.stats().outbox).toBeUndefined() // ledger closed
  })
})

describe('restart with the same data dir', () => {
  it('keeps its storeId, raises the epoch, and replays what was not acked', async () => {
    await setup(false)
    const dataDir = tempDir()
    dirs.push(dataDir)
    const first = makeAgent({ dataDir }, { sensors: countingSensors(4) })
    await first.start()
    await waitFor('connected', () => first.isConnected())
    for (let i = 0; i < 5; i++) first.sampleNow()
    const storeId = first.stats().storeId!
    await waitFor('20 received, none acked', () => acker!.received.length >= 20)
    const firstEpoch = first.stats().link.epoch
    await first.stop()
    await first.stop() // safe twice
    // The clean stop published the death itself; the broker discarded the Will.
    await waitFor('the death received', () => acker!.states.some((s) => s.message.type === 'death'))
    await sleep(100) // and no second one (the Will) follows
    expect(acker!.states.filter((s) => s.message.type === 'death').map((s) => s.message)).toEqual([{ type: 'death', v: 1, epoch: firstEpoch, storeId }])

    acker!.received.length = 0
    // Ack from now on, but publish nothing for what arrived before: to the new
    // connection the hub says it holds nothing yet, so the agent must replay.
    acker!.autoAck = true
    const second = makeAgent({ dataDir }, { sensors: countingSensors(4) })
    await second.start()
    expect(second.stats().storeId).toBe(storeId)
    await waitFor('replayed and drained', () => backlog(second) === 0)
    expect(second.stats().link.epoch).toBe(firstEpoch + 1)
    expect(acker!.seqsOf(storeId)).toEqual(range(1, 20))
    const births = acker!.states.filter((s) => s.message.type === 'birth').map((s) => s.message.epoch)
    expect(births).toEqual([firstEpoch, firstEpoch + 1])

    // New rows continue the same seq space.
    second.sampleNow()
    await waitFor('new rows acked', () => acker!.highWater(storeId) === 24 && backlog(second) === 0)
  })

  it('a new data dir is a new store with its own seq space', async () => {
    await setup()
    const a = makeAgent({ id: 'dev-a' }, { sensors: countingSensors(2) })
    const b = makeAgent({ id: 'dev-b' }, { sensors: countingSensors(2) })
    await a.start()
    await b.start()
    expect(a.stats().storeId).not.toBe(b.stats().storeId)
    await waitFor('both connected', () => a.isConnected() && b.isConnected())
    a.sampleNow()
    b.sampleNow()
    await waitFor('both drained', () => backlog(a) === 0 && backlog(b) === 0)
    expect(acker!.seqsOf(a.stats().storeId!)).toEqual([1, 2])
    expect(acker!.seqsOf(b.stats().storeId!)).toEqual([1, 2])
  })
})

describe('Will', () => {
  it('a dead link makes the broker publish the retained death of that epoch', async () => {
    await setup()
    // random() near 1: the first retry waits most of reconnectBaseMs, so the
    // death stays the retained state long enough to read it back.
    const agent = makeAgent({ reconnectBaseMs: 20_000, reconnectMaxMs: 20_000 }, { random: () => 0.99 })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    const epoch = agent.stats().link.epoch
    expect(epoch).toBeGreaterThanOrEqual(1)

    broker!.cutConnections()
    await waitFor('death published', () => acker!.states.some((s) => s.message.type === 'death'))
    expect(acker!.states.filter((s) => s.message.type === 'death').map((s) => s.message)).toEqual([{ type: 'death', v: 1, epoch, storeId: agent.stats().storeId }])
    await waitFor('agent sees the link down', () => !agent.isConnected())

    // A late subscriber sees the death as the retained state.
    const observer = await connectAsync(broker!.url, { clientId: 'observer-1', reconnectPeriod: 0 })
    clients.push(observer)
    const retained = new Promise<{ payload: Buffer; retain: boolean }>((resolve) => {
      observer.on('message', (_t, payload, packet) => resolve({ payload, retain: packet.retain }))
    })
    await observer.subscribeAsync(topics.state('dev-1'), { qos: 1 })
    const got = await retained
    expect(got.retain).toBe(true)
    const d = decode(topics.state('dev-1'), got.payload)
    expect(d.ok && d.message).toEqual({ type: 'death', v: 1, epoch, storeId: agent.stats().storeId })
  })
})
