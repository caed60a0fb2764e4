import { afterEach, describe, expect, it } from 'vitest'
import type { AedesPublishPacket } from 'aedes'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig, type AgentConfigInput } from '../agent/config.js'
import { decode, encode, topics, type JobExecution, type JobUpdate, type Message } from '../protocol/index.js'
import { tempDir, waitFor, wireRig, type Acker, type TestBroker } from './agent.support.js'

/**
 * Jobs on the wire: a real agent (real SQLite, real MQTT.js) against a real
 * aedes broker, with the test playing the hub's job side in-process (so it
 * survives the broker cutting connections) and an acker for telemetry/events.
 */

const DEVICE = 'dev-jobs'

let broker: TestBroker | undefined
let acker: Acker | undefined
let hub: JobHub | undefined
const wire = wireRig(startJobHub)
const { agents, dirs } = wire

afterEach(() => wire.stop())

interface JobHub {
  readonly pulls: number[]
  /** Every update in arrival order, duplicates included. */
  readonly updates: JobUpdate[]
  readonly invalid: string[]
  /** Store id of the last jobs.update. */
  storeId: string | undefined
  notify(cancel?: Array<{ execId: string; attempt: number }>): Promise<void>
  batch(executions: JobExecution[], more: boolean): Promise<void>
  ack(ids: number[]): Promise<void>
  close(): Promise<void>
}

async function startJobHub(tb: TestBroker): Promise<JobHub> {
  const { broker: aedes } = tb
  const publish = (topic: string, message: Message) => new Promise<void>((resolve, reject) => {
    aedes.publish({ cmd: 'publish', topic, payload: encode(message), qos: 1, retain: false, dup: false }, (err) => (err ? reject(err) : resolve()))
  })
  const subs: string[] = ['devices/+/jobs/pull', 'devices/+/jobs/update']
  const h: JobHub = {
    pulls: [],
    updates: [],
    invalid: [],
    storeId: undefined,
    notify: (cancel) => publish(topics.jobsNotify(DEVICE), cancel ? { type: 'jobs.notify', v: 1, cancel } : { type: 'jobs.notify', v: 1 }),
    batch: (executions, more) => publish(topics.jobsBatch(DEVICE), { type: 'jobs.batch', v: 1, executions, more }),
    ack: (ids) => publish(topics.jobsAck(DEVICE), { type: 'jobs.ack', v: 1, storeId: h.storeId!, ids }),
    async close() {
      for (const topic of subs) await new Promise<void>((resolve) => aedes.unsubscribe(topic, onData, () => resolve()))
    },
  }
  function onData(packet: AedesPublishPacket, cb: () => void): void {
    const d = decode(packet.topic, Buffer.from(packet.payload))
    if (!d.ok) h.invalid.push(`${packet.topic}: ${d.error.message}`)
    else if (d.message.type === 'jobs.pull') h.pulls.push(d.message.max)
    else if (d.message.type === 'jobs.update') {
      h.storeId = d.message.storeId
      h.updates.push(...d.message.updates)
    }
    cb()
  }
  for (const topic of subs) await new Promise<void>((resolve) => aedes.subscribe(topic, onData, () => resolve()))
  return h
}

function makeAgent(overrides: AgentConfigInput = {}): Agent {
  const dataDir = tempDir()
  dirs.push(dataDir)
  const agent = createAgent(resolveAgentConfig({
    hub: broker!.url,
    id: DEVICE,
    token: 'secret-token',
    builtinSensors: false,
    sampleIntervalMs: 0,
    reconnectBaseMs: 50,
    reconnectMaxMs: 200,
    ackTimeoutMs: 30_000,
    // No fallback pull during a test unless it asks for one.
    pullIntervalMs: '1h',
    ...overrides,
    dataDir,
  }), { random: () => 0.99 })
  agents.push(agent)
  return agent
}

function execution(n: number, over: Partial<JobExecution> = {}): JobExecution {
  return { execId: `jwire${n}.${DEVICE}`, jobId: `jwire${n}`, name: 'echo', payload: { n }, attempt: 1, version: 1, timeoutMs: 5000, priority: 0, ...over }
}

async function setup(): Promise<void> {
  ({ broker, acker, hub } = await wire.start())
}

describe('agent jobs on the wire', () => {
  it('pulls on the doorbell with its room, runs the batch, and reports updates in order', async () => {
    await setup()
    const agent = makeAgent({ jobQueueMax: 7, jobConcurrency: 1 })
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    expect(hub!.pulls).toEqual([])

    await hub!.notify()
    await waitFor('first pull', () => hub!.pulls.length === 1)
    expect(hub!.pulls).toEqual([7])
    // The hub has more than fits: the agent asks again with what room is left.
    await hub!.batch([execution(1), execution(2), execution(3)], true)
    await waitFor('second pull', () => hub!.pulls.length === 2)
    expect(hub!.pulls[1]).toBeLessThanOrEqual(4)
    expect(hub!.pulls[1]).toBeGreaterThanOrEqual(1)
    await hub!.batch([], false)

    await waitFor('three results', () => hub!.updates.filter((u) => u.status === 'succeeded').length === 3)
    expect(hub!.invalid).toEqual([])
    const ids = hub!.updates.map((u) => u.id)
    expect(ids).toEqual([...ids].sort((a, b) => a - b))
    const succeeded = hub!.updates.filter((u) => u.status === 'succeeded')
    expect(succeeded.map((u) => u.execId)).toEqual([1, 2, 3].map((n) => `jwire${n}.${DEVICE}`))
    expect(succeeded[0]).toMatchObject({ attempt: 1, version: 1, result: { n: 1 } })
    expect(hub!.storeId).toBe(agent.stats().storeId)
    await waitFor('second batch in', () => agent.stats().jobs!.batchesReceived === 2)
    expect(agent.stats().jobs).toMatchObject({ pulls: 2, batchesReceived: 2, outcomes: { succeeded: 3 } })
  })

  it('resends unacked updates after a reconnect and deletes them on jobs.ack', async () => {
    await setup()
    const agent = makeAgent()
    await agent.start()
    await waitFor('connected', () => agent.isConnected())
    await hub!.notify()
    await waitFor('pull', () => hub!.pulls.length === 1)
    await hub!.batch([execution(11), execution(12, { payload: { big: 'x'.repeat(100) } })], false)
    await waitFor('results sent', () => hub!.updates.filter((u) => u.status === 'succeeded').length === 2)
    const firstRound = hub!.updates.length
    expect(agent.stats().jobs!.updatesPending).toBeGreaterThanOrEqual(2)

    // The link drops before any ack: everything unacked goes again on the next connection.
    const connects = agent.stats().link.connects
    broker!.cutConnections()
    await waitFor('reconnected', () => agent.stats().link.connects > connects && agent.isConnected())
    await waitFor('resent', () => hub!.updates.length >= firstRound + 2)
    const resent = hub!.updates.slice(firstRound)
    expect(resent.filter((u) => u.status === 'succeeded').map((u) => u.execId).sort()).toEqual([`jwire11.${DEVICE}`, `jwire12.${DEVICE}`])

    // An ack for another store (a re-flashed device's old ledger) is not applied.
    const pending = agent.stats().jobs!.updatesPending
    const realStore = hub!.storeId
    hub!.storeId = '00000000-0000-0000-0000-000000000000'
    await hub!.ack([...new Set(hub!.updates.map((u) => u.id))])
    hub!.storeId = realStore
    await hub!.ack([...new Set(hub!.updates.map((u) => u.id))])
    await waitFor('deleted', () => agent.stats().jobs!.updatesPending === 0)
    expect(agent.stats().jobs!.reporter.updatesAcked).toBe(pending)
    expect(agent.jobQueue!.readUpdatesAfter(0, 10)).toEqual([])
  })

  it('runs a local schedule offline and reports its result as a job.local event once connected', async () => {
    await setup()
    await broker!.down()
    const agent = makeAgent({ schedules: [{ name: 'every-second', cron: '* * * * * *', task: 'echo', payload: { from: 'cron' } }] })
    await agent.start()
    expect(agent.isConnected()).toBe(false)
    await waitFor('a local job ran offline', () => (agent.stats().jobs?.outcomes.succeeded ?? 0) >= 1, 10_000)
    expect(agent.stats().jobs!.updatesPending).toBe(0)

    await broker!.up()
    await waitFor('job.local event', () => acker!.received.some((r) => r.kind === 'events' && r.item.kind === 'job.local'), 15_000)
    const event = acker!.received.find((r) => r.item.kind === 'job.local')!.item
    expect(event).toMatchObject({ level: 'info', data: { schedule: 'every-second', task: 'echo', outcome: 'succeeded', result: { from: 'cron' } } })
    const data = event.data as { startedAt: number; finishedAt: number }
    expect(data.finishedAt).toBeGreaterThanOrEqual(data.startedAt)
    // Local jobs never become hub job updates.
    expect(hub!.updates).toEqual([])
  })
})
