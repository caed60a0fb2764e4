import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import type { Agent } from '../agent/agent.js'
import { encode, topics } from '../protocol/index.js'
import type { RuleSpec } from '../hub/rules/spec.js'
import { registerDevices, startAgents, waitOnline } from './support/agents.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'

/**
 * Rules on a real hub, with real agents (their command handlers count what
 * they run) and, where a test needs samples from the past, a device speaking
 * the wire protocol by hand.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

async function hub(dataDir?: string, mqttPort?: number): Promise<TestHub> {
  const h = await startTestHub(mqttPort === undefined ? {} : { mqttPort }, dataDir)
  cleanups.push(() => h.stop())
  return h
}

const vibration = (name: string, device: string, extra: Partial<RuleSpec> = {}): RuleSpec => ({
  name,
  for: `device:${device}`,
  when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, clear: { op: '<=', value: 0.06 } } },
  then: [{ command: { name: 'motor.stop' } }],
  ...extra,
})

/** An agent whose sensor `vib` reads `value.now`, and whose `motor.stop` counts its runs. */
async function pump(h: TestHub, id: string, options: { gate?: Promise<void> } = {}) {
  const dir = tempDir('rules-agent')
  cleanups.push(dir.remove)
  const [dev] = await registerDevices(h, id, 1)
  const value = { now: 0.01 }
  const ran: string[] = []
  const [agent] = await startAgents(h.mqttUrl, dir.dir, [dev!], {}, {
    sensors: [{ name: 'vib', read: () => value.now }],
    commands: {
      'motor.stop': async (ctx) => {
        ran.push(ctx.id)
        await options.gate
        return { stopped: true }
      },
    },
  })
  cleanups.push(() => agent!.stop())
  await waitOnline(h, [dev!.id])
  return { id: dev!.id, token: dev!.token, agent: agent!, value, ran, dir: dir.dir }
}

/** Takes one sample per value, in order, and waits until the hub stored them all. */
async function samples(h: TestHub, p: { id: string; agent: Agent; value: { now: number } }, values: readonly number[]): Promise<void> {
  for (const v of values) {
    p.value.now = v
    p.agent.sampleNow()
  }
  const storeId = p.agent.stats().storeId!
  const top = p.agent.stats().outbox!.newestSeq
  await waitFor(async () => (await h.running.services.telemetry.markOf(p.id, storeId)) >= top, `samples up to ${top} stored`)
}

describe('rules on stored telemetry', () => {
  it('fire once per burst, not once per sample: the command reaches the device once; a clear and a new burst fire again', async () => {
    const h = await hub()
    const p = await pump(h, 'pump')
    const rules = h.running.services.rules
    await rules.add(vibration('pump.vibration', p.id))

    // One burst that hovers at the threshold (the clear at 0.06 is hysteresis), then falls.
    await samples(h, p, [0.01, 0.09, 0.1, 0.079, 0.085, 0.07, 0.05, 0.01])
    await waitFor(() => p.ran.length === 1 && rules.stats().actions.done === 1, 'the command run once')
    expect(rules.get('pump.vibration').counters.fired).toBe(1)

    await samples(h, p, [0.12, 0.2, 0.02])
    await waitFor(() => p.ran.length === 2 && rules.stats().actions.done === 2, 'the second burst\'s command')
    const detail = rules.get('pump.vibration')
    expect(detail.counters).toMatchObject({ fired: 2, suppressedStale: 0, actionsFailed: 0 })
    expect(detail.devices).toEqual([expect.objectContaining({ deviceId: p.id, state: { phase: 'idle' } })])
    expect(new Set(p.ran).size).toBe(2)

    // The chain of the first firing: its trigger sample, the action, the command it made and its reply.
    const first = detail.recentFirings.at(-1)!
    expect(first.trigger).toMatchObject({ kind: 'sample', sensor: 'vib', value: 0.09 })
    const chain = await h.running.services.firingChain(first.id)
    expect(chain.actions).toHaveLength(1)
    expect(chain.actions[0]).toMatchObject({ kind: 'command', status: 'done', command: { status: 'succeeded', cause: { rule: 'pump.vibration', firing: first.id } } })
    expect(chain.actions[0]!.startedAt).not.toBeNull()
    // The API says the same.
    const res = await h.api<{ rule: string; actions: Array<{ status: string }> }>('GET', `/api/firings/${first.id}`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ rule: 'pump.vibration', actions: [{ status: 'done' }] })
  })

  it('sees a replayed batch once, and suppresses the actions of stale samples, counting them', async () => {
    const h = await hub()
    const token = await h.addDevice('pump-raw')
    const dev: MqttClient = await connectDevice(h.mqttUrl, 'pump-raw', token)
    cleanups.push(() => dev.endAsync())
    const rules = h.running.services.rules
    await rules.add(vibration('raw.vibration', 'pump-raw', { then: [{ event: { level: 'warn', message: 'vibration' } }] }))
    // An application watching what rules publish, with observer credentials.
    const obs = await h.api<{ name: string; username: string; token: string }>('POST', '/api/observers', { name: 'ops' })
    const watcher = await connectDevice(h.mqttUrl, 'ops-watch', obs.body.token, { username: obs.body.username })
    cleanups.push(() => watcher.endAsync())
    const published: Array<{ type: string; rule: string; firing: string; deviceId: string; level: string }> = []
    watcher.on('message', (_topic, payload) => published.push(JSON.parse(payload.toString()) as (typeof published)[number]))
    await watcher.subscribeAsync('hub/rules/+/events', { qos: 1 })
    const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000a1'
    const send = (prev: number, items: ReadonlyArray<readonly [number, number]>) => dev.publishAsync(topics.telemetry('pump-raw'),
      encode({ type: 'telemetry', v: 1, storeId, prev, samples: items.map(([ts, value], i) => ({ seq: prev + i + 1, ts, sensor: 'vib', value })) }), { qos: 1 })
    const stored = (upTo: number) => waitFor(async () => (await h.running.services.telemetry.markOf('pump-raw', storeId)) >= upTo, `seq ${upTo} stored`)

    // Ten minutes of backlog: a burst and its clear, all older than maxSampleAgeMs (5 min).
    const old = Date.now() - 10 * 60_000
    await send(0, [[old, 0.01], [old + 1000, 0.2], [old + 2000, 0.01]])
    await stored(3)
    expect(rules.get('raw.vibration').counters).toMatchObject({ fired: 0, suppressedStale: 1 })

    // Fresh: a burst fires; the same batch again (a replay after a lost ack) is below the mark.
    const now = Date.now()
    await send(3, [[now, 0.3]])
    await stored(4)
    await send(3, [[now, 0.3]])
    await send(4, [[now + 1, 0.01], [now + 2, 0.3]])
    await stored(6)
    await waitFor(() => rules.stats().actions.done === 2, 'two events published')
    expect(rules.get('raw.vibration').counters).toMatchObject({ fired: 2, suppressedStale: 1 })
    const firings = rules.get('raw.vibration').recentFirings
    expect(firings.map((f) => f.trigger.kind === 'sample' && f.trigger.seq).sort()).toEqual([4, 6])
    await waitFor(() => published.length === 2, 'both events at the observer')
    expect(published.map((e) => e.firing).sort()).toEqual(firings.map((f) => f.id).sort())
    expect(published[0]).toMatchObject({ type: 'rule.event', rule: 'raw.vibration', deviceId: 'pump-raw', level: 'warn' })
  })

  it('queues the command as a job for a device that is offline during the firing; it runs once when the device returns', async () => {
    const h = await hub()
    const sensor = await pump(h, 'sensor')
    const valve = await pump(h, 'valve')
    await valve.agent.stop()
    await waitFor(() => !h.running.services.presence.isReachable(valve.id), 'the valve offline')
    const rules = h.running.services.rules
    await rules.add(vibration('close.valve', sensor.id, { then: [{ command: { name: 'motor.stop', to: `device:${valve.id}`, ifOffline: 'queue' } }] }))
    await samples(h, sensor, [0.2])
    await waitFor(() => rules.stats().actions.done === 1, 'the action done: the command queued')
    const firing = rules.get('close.valve').recentFirings[0]!
    const jobs = await h.running.services.jobs.list({ limit: 10 })
    expect(jobs).toEqual([expect.objectContaining({ name: 'cmd.motor.stop', target: `device:${valve.id}`, cause: { rule: 'close.valve', firing: firing.id } })])

    // The valve comes back on its own ledger and pulls the job.
    const ran: string[] = []
    const [back] = await startAgents(h.mqttUrl, valve.dir, [{ id: valve.id, token: valve.token }], {}, {
      commands: { 'motor.stop': () => { ran.push('once'); return { stopped: true } } },
    })
    cleanups.push(() => back!.stop())
    await waitFor(async () => (await h.running.services.jobs.get(jobs[0]!.id)).status === 'completed', 'the queued job completed')
    expect(ran).toEqual(['once'])
    expect(sensor.ran).toEqual([])
  })

  it('carries out after a restart an action the stop left under way, as the same command: the device runs it once', async () => {
    let open!: () => void
    const gate = new Promise<void>((resolve) => { open = resolve })
    const dataDir = tempDir('rules-hub')
    cleanups.push(dataDir.remove)
    const first = await startTestHub({}, dataDir.dir)
    let firstStopped = false
    cleanups.push(() => (firstStopped ? undefined : first.stop()))
    const p = await pump(first, 'pump', { gate })
    await first.running.services.rules.add(vibration('pump.vibration', p.id, { then: [{ command: { name: 'motor.stop', timeoutMs: 60_000 } }] }))
    await samples(first, p, [0.2])
    await waitFor(() => p.ran.length === 1, 'the command running on the device')

    // The hub stops while the device still runs it: the action stays pending.
    const port = first.running.mqttPort
    await first.stop()
    firstStopped = true
    const second = await hub(dataDir.dir, port)
    await waitOnline(second, [p.id])
    open()
    await waitFor(() => second.running.services.rules.stats().actions.done === 1, 'the action done after the restart')
    const firing = second.running.services.rules.get('pump.vibration').recentFirings[0]!
    const chain = await second.running.services.firingChain(firing.id)
    expect(chain.actions[0]).toMatchObject({ status: 'done', command: { status: 'succeeded' } })
    // Counted on the device: it ran the command once, and answered the repeat of its id from its ledger.
    expect(p.ran).toHaveLength(1)
    expect(p.agent.stats().commands).toMatchObject({ ran: 1 })
  })
})
