import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createAgent, type Agent } from '../agent/agent.js'
import type { CommandContext, CommandHandler } from '../agent/command-handlers.js'
import { INTERRUPTED_COMMAND_MESSAGE } from '../agent/command-response.js'
import { resolveAgentConfig, type AgentConfigInput } from '../agent/config.js'
import { Ledger } from '../agent/ledger.js'
import { manualClock, type Clock } from '../common/clock.js'
import { createLogger } from '../common/logger.js'
import { decode, encode, topics, type CommandResponse } from '../protocol/index.js'
import { sleep, tempDir, waitFor, wireRig, type Acker, type TestBroker } from './agent.support.js'

/**
 * Commands on the wire (issue #4): a real agent (real SQLite ledger, real
 * MQTT.js) against a real aedes broker on port 0, with a real MQTT.js client
 * playing the hub's command side, and an acker for telemetry.
 */

const DEVICE = 'dev-cmds'
const TOKEN = 'secret-token-do-not-leak'

let broker: TestBroker | undefined
let acker: Acker | undefined
let hub: CommandHub | undefined
const wire = wireRig((tb) => startCommandHub(tb.url))
const { agents, dirs } = wire

afterEach(() => wire.stop())

interface CommandHub {
  /** Every response in arrival order, repeats included. */
  readonly responses: CommandResponse[]
  readonly pulls: number[]
  /** Up-payloads that failed decode (must stay empty). */
  readonly invalid: string[]
  send(id: string, name: string, options?: { args?: unknown; expiresInMs?: number }): Promise<void>
  /** Sends and waits for the next response with this id. */
  call(id: string, name: string, options?: { args?: unknown; expiresInMs?: number }): Promise<CommandResponse>
  responsesFor(id: string): CommandResponse[]
  close(): Promise<void>
}

async function startCommandHub(url: string): Promise<CommandHub> {
  const client: MqttClient = await mqtt.connectAsync(url, { clientId: 'test-hub', reconnectPeriod: 0, connectTimeout: 5_000 })
  // As the hub's own sockets: a request is one small packet that Nagle would hold back.
  ;(client.stream as { setNoDelay?: (on: boolean) => unknown }).setNoDelay?.(true)
  await client.subscribeAsync([topics.cmdRes(DEVICE), topics.jobsPull(DEVICE)], { qos: 1 })
  const h: CommandHub = {
    responses: [],
    pulls: [],
    invalid: [],
    async send(id, name, options = {}) {
      const req = { type: 'cmd.req' as const, v: 1 as const, id, name, expiresAt: Date.now() + (options.expiresInMs ?? 30_000), ...(options.args !== undefined ? { args: options.args } : {}) }
      await client.publishAsync(topics.cmdReq(DEVICE), encode(req), { qos: 1 })
    },
    async call(id, name, options) {
      const before = h.responsesFor(id).length
      await h.send(id, name, options)
      await waitFor(`response to ${id}`, () => h.responsesFor(id).length > before, 30_000, 1)
      return h.responsesFor(id)[before]!
    },
    responsesFor: (id) => h.responses.filter((r) => r.id === id),
    async close() {
      await client.endAsync()
    },
  }
  client.on('message', (topic, payload) => {
    const d = decode(topic, payload)
    if (!d.ok) h.invalid.push(`${topic}: ${d.error.code} ${d.error.message}`)
    else if (d.message.type === 'cmd.res') h.responses.push(d.message)
    else if (d.message.type === 'jobs.pull') h.pulls.push(d.message.max)
  })
  return h
}

function makeAgent(options: { config?: AgentConfigInput; commands?: Record<string, CommandHandler>; dataDir?: string; clock?: Clock } = {}): Agent {
  const dataDir = options.dataDir ?? tempDir()
  if (!dirs.includes(dataDir)) dirs.push(dataDir)
  const agent = createAgent(resolveAgentConfig({
    hub: broker!.url,
    id: DEVICE,
    token: TOKEN,
    builtinSensors: false,
    sampleIntervalMs: 0,
    reconnectBaseMs: 50,
    reconnectMaxMs: 200,
    pullIntervalMs: '1h',
    ...options.config,
    dataDir,
  }), { random: () => 0.99, ...(process.env.DBG ? { logger: createLogger({ level: 'debug' }) } : {}), ...(options.commands ? { commands: options.commands } : {}), ...(options.clock ? { clock: options.clock } : {}) })
  agents.push(agent)
  return agent
}

async function setup(): Promise<void> {
  ({ broker, acker, hub } = await wire.start())
}

async function started(agent: Agent): Promise<Agent> {
  await agent.start()
  await waitFor('connected', () => agent.isConnected())
  return agent
}

/** A promise the test settles by hand. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}

describe('agent commands on the wire', () => {
  it('answers ping, advertises commands in its birth, and answers 50 pings in a row once each', async () => {
    await setup()
    const agent = await started(makeAgent())
    // Connected means subscribed; the birth follows on its way to the broker.
    await waitFor('the birth', () => acker!.states.some((s) => s.message.type === 'birth'))
    const birth = acker!.states.find((s) => s.message.type === 'birth')!.message
    expect(birth.type === 'birth' && birth.capabilities).toContain('commands')

    const before = Date.now()
    const res = await hub!.call('cping1', 'ping')
    expect(res).toMatchObject({ type: 'cmd.res', v: 1, id: 'cping1', ok: true, result: { pong: true } })
    const ts = (res.result as { ts: number }).ts
    expect(ts).toBeGreaterThanOrEqual(before)
    expect(ts).toBeLessThanOrEqual(Date.now())

    // How fast is for the benchmark (`npm run bench -- commands`), not for a test on a shared machine.
    for (let i = 0; i < 50; i++) {
      expect(await hub!.call(`cpingr${i}`, 'ping')).toMatchObject({ id: `cpingr${i}`, ok: true })
    }
    expect(agent.stats().commands).toMatchObject({ received: 51, ran: 51, duplicates: 0, failed: 0, running: 0 })
    expect(hub!.invalid).toEqual([])
  })

  it('refuses a command whose expiresAt has passed with EXPIRED, without running it', async () => {
    await setup()
    let calls = 0
    const agent = await started(makeAgent({ commands: { probe: () => ++calls } }))
    const res = await hub!.call('cexp1', 'probe', { expiresInMs: -1_000 })
    expect(res.ok).toBe(false)
    expect(res.error?.code).toBe('EXPIRED')
    expect(calls).toBe(0)
    expect(agent.stats().commands).toMatchObject({ received: 1, ran: 0, expired: 1 })
    // Its id is recorded: a repeat is not run either, and gets the same answer.
    expect(await hub!.call('cexp1', 'probe', { expiresInMs: 5_000 })).toEqual(res)
    expect(calls).toBe(0)
  })

  it('runs a repeated id once and returns the first outcome, also after a restart on the same ledger', async () => {
    await setup()
    let calls = 0
    const commands = { count: () => ({ n: ++calls }) }
    const dataDir = tempDir()
    const first = await started(makeAgent({ commands, dataDir }))
    const a = await hub!.call('cdup1', 'count')
    const b = await hub!.call('cdup1', 'count')
    expect(a).toMatchObject({ ok: true, result: { n: 1 } })
    expect(b).toEqual(a)
    expect(calls).toBe(1)
    expect(first.stats().commands).toMatchObject({ received: 2, ran: 1, duplicates: 1 })
    await first.stop()

    const second = await started(makeAgent({ commands, dataDir }))
    expect(await hub!.call('cdup1', 'count')).toEqual(a)
    expect(calls).toBe(1)
    expect(second.stats().commands).toMatchObject({ received: 1, ran: 0, duplicates: 1 })
    // A new id runs.
    expect(await hub!.call('cdup2', 'count')).toMatchObject({ ok: true, result: { n: 2 } })
  })

  it('ignores a repeat while the command runs; its one response goes out when it ends', async () => {
    await setup()
    const g = gate()
    let calls = 0
    const agent = await started(makeAgent({ commands: { hold: async () => { calls++; await g.promise; return 'done' } } }))
    await hub!.send('crun1', 'hold')
    await waitFor('running', () => agent.stats().commands?.running === 1)
    await hub!.send('crun1', 'hold')
    await waitFor('repeat seen', () => agent.stats().commands?.duplicates === 1)
    g.open()
    await waitFor('response', () => hub!.responsesFor('crun1').length === 1)
    await sleep(50)
    expect(hub!.responsesFor('crun1')).toEqual([expect.objectContaining({ ok: true, result: 'done' })])
    expect(calls).toBe(1)
  })

  it('answers a repeat of an id a crash left running with INTERRUPTED, and does not run it', async () => {
    await setup()
    const dataDir = tempDir()
    dirs.push(dataDir)
    // What a crash mid-command leaves in the ledger: the id recorded running, no response.
    const ledger = new Ledger({ dataDir })
    ledger.db.prepare('INSERT INTO commands (id, name, received_at, expires_at, state) VALUES (?, ?, ?, ?, ?)')
      .run('ccrash1', 'probe', Date.now() - 1_000, Date.now() + 60_000, 'running')
    ledger.close()
    let calls = 0
    await started(makeAgent({ dataDir, commands: { probe: () => ++calls } }))
    const res = await hub!.call('ccrash1', 'probe')
    expect(res).toMatchObject({ ok: false, error: { code: 'INTERRUPTED', message: INTERRUPTED_COMMAND_MESSAGE } })
    expect(calls).toBe(0)
  })

  it('answers a command still running at stop with INTERRUPTED, and never runs it again', async () => {
    await setup()
    let calls = 0
    let sawAbort = false
    const dataDir = tempDir()
    const commands: Record<string, CommandHandler> = {
      stuck: (ctx) => {
        calls++
        ctx.signal.addEventListener('abort', () => { sawAbort = true })
        return new Promise(() => {})
      },
    }
    const agent = await started(makeAgent({ dataDir, commands, config: { stopTimeoutMs: 100 } }))
    await hub!.send('cstop1', 'stuck')
    await waitFor('running', () => agent.stats().commands?.running === 1)
    await agent.stop()
    await waitFor('interrupted response', () => hub!.responsesFor('cstop1').length === 1)
    expect(hub!.responsesFor('cstop1')[0]).toMatchObject({ ok: false, error: { code: 'INTERRUPTED' } })
    expect(sawAbort).toBe(true)

    await started(makeAgent({ dataDir, commands }))
    expect(await hub!.call('cstop1', 'stuck')).toMatchObject({ ok: false, error: { code: 'INTERRUPTED' } })
    expect(calls).toBe(1)
  })

  it('answers an unknown name with UNKNOWN_COMMAND naming the commands it has', async () => {
    await setup()
    const agent = await started(makeAgent())
    const res = await hub!.call('cunk1', 'no.such')
    expect(res.ok).toBe(false)
    expect(res.error?.code).toBe('UNKNOWN_COMMAND')
    for (const name of ['ping', 'sys.info', 'sensors.sample', 'config.get', 'jobs.pull']) expect(res.error?.message).toContain(name)
    expect(agent.stats().commands).toMatchObject({ unknown: 1, ran: 0 })
  })

  it('turns a throwing handler into its error code, contains bad results, and keeps answering', async () => {
    await setup()
    const coded = (code: string, message: string) => Object.assign(new Error(message), { code })
    const agent = await started(makeAgent({
      commands: {
        'fail.sync': () => { throw coded('SENSOR_OFFLINE', 'the sensor is unplugged') },
        'fail.async': async () => { await sleep(1); throw coded('not a code', 'x'.repeat(5_000)) },
        'fail.string': () => Promise.reject(new Error('plain')),
        'bad.result': () => ({ n: 10n }),
        'big.result': () => ({ blob: 'y'.repeat(40_000) }),
        'nothing': () => undefined,
        'echo.args': (ctx: CommandContext) => ctx.args,
      },
    }))
    expect(await hub!.call('cfail1', 'fail.sync')).toMatchObject({ ok: false, error: { code: 'SENSOR_OFFLINE', message: 'the sensor is unplugged' } })
    const long = await hub!.call('cfail2', 'fail.async')
    expect(long.error?.code).toBe('HANDLER_FAILED')
    expect(long.error?.message.length).toBe(1024)
    expect(await hub!.call('cfail3', 'fail.string')).toMatchObject({ ok: false, error: { code: 'HANDLER_FAILED', message: 'plain' } })
    expect(await hub!.call('cfail4', 'bad.result')).toMatchObject({ ok: false, error: { code: 'BAD_RESULT' } })
    expect(await hub!.call('cfail5', 'big.result')).toMatchObject({ ok: true, result: { truncated: true, bytes: expect.any(Number) as number } })
    const none = await hub!.call('cfail6', 'nothing')
    expect(none).toEqual({ type: 'cmd.res', v: 1, id: 'cfail6', ok: true })
    expect(await hub!.call('cfail7', 'echo.args', { args: { a: [1, 'two'] } })).toMatchObject({ ok: true, result: { a: [1, 'two'] } })
    expect(await hub!.call('cfail8', 'ping')).toMatchObject({ ok: true })
    expect(agent.stats().commands).toMatchObject({ ran: 8, failed: 4 })
    expect(hub!.invalid).toEqual([])
  })

  it('sys.info reports the agent, its store and epoch, its backlog and its job queue', async () => {
    await setup()
    const agent = await started(makeAgent())
    const res = await hub!.call('csys1', 'sys.info')
    const s = agent.stats()
    expect(res.ok).toBe(true)
    expect(res.result).toMatchObject({
      deviceId: DEVICE,
      agentVersion: expect.any(String) as string,
      uptimeMs: expect.any(Number) as number,
      bootId: agent.bootId,
      storeId: s.storeId,
      epoch: s.link.epoch,
      outbox: { backlogRows: expect.any(Number) as number, droppedTelemetry: 0, droppedEvents: 0 },
      jobs: { queued: 0, running: 0, done: 0, updatesPending: 0 },
    })
  })

  it('config.get returns the effective config without the token', async () => {
    await setup()
    await started(makeAgent({ config: { jobConcurrency: 3 } }))
    const res = await hub!.call('ccfg1', 'config.get')
    expect(res.ok).toBe(true)
    expect(res.result).toMatchObject({ id: DEVICE, hub: broker!.url, jobConcurrency: 3, commandConcurrency: 16, token: '[redacted]' })
    expect(JSON.stringify(res)).not.toContain(TOKEN)
  })

  it('sensors.sample returns the values and they also reach the outbox as telemetry', async () => {
    await setup()
    const agent = await started(makeAgent({ config: { sensors: [{ name: 'env.temp', model: 'constant', min: 21.5, max: 21.5 }] } }))
    const res = await hub!.call('csense1', 'sensors.sample')
    expect(res).toMatchObject({ ok: true, result: { values: { 'env.temp': 21.5 }, stored: 1, ts: expect.any(Number) as number } })
    const ts = (res.result as { ts: number }).ts
    await waitFor('telemetry', () => acker!.received.some((r) => r.item.sensor === 'env.temp'))
    expect(acker!.received.find((r) => r.item.sensor === 'env.temp')!.item).toMatchObject({ value: 21.5, ts })
    expect(agent.stats().sampler?.samples).toBe(1)
  })

  it('jobs.pull makes a jobs/pull go out and says what it did', async () => {
    await setup()
    await started(makeAgent({ config: { jobQueueMax: 9 } }))
    const res = await hub!.call('cpull1', 'jobs.pull')
    expect(res).toMatchObject({ ok: true, result: { pulled: true, room: 9 } })
    await waitFor('pull', () => hub!.pulls.length === 1)
    expect(hub!.pulls).toEqual([9])
    // The hub has not answered: a second ask says a pull is in flight.
    expect(await hub!.call('cpull2', 'jobs.pull')).toMatchObject({ ok: true, result: { pulled: false, reason: 'pull-in-flight' } })
  })

  it('answers BUSY over commandConcurrency', async () => {
    await setup()
    const g = gate()
    const agent = await started(makeAgent({ config: { commandConcurrency: 2 }, commands: { hold: () => g.promise.then(() => 'held') } }))
    await hub!.send('cbusy1', 'hold')
    await hub!.send('cbusy2', 'hold')
    await waitFor('two running', () => agent.stats().commands?.running === 2)
    expect(await hub!.call('cbusy3', 'hold')).toMatchObject({ ok: false, error: { code: 'BUSY' } })
    g.open()
    await waitFor('both done', () => hub!.responsesFor('cbusy1').length + hub!.responsesFor('cbusy2').length === 2)
    expect(hub!.responses.filter((r) => r.ok).map((r) => r.result)).toEqual(['held', 'held'])
    expect(agent.stats().commands).toMatchObject({ busy: 1, ran: 2, running: 0 })
    expect(await hub!.call('cbusy4', 'hold')).toMatchObject({ ok: true, result: 'held' })
  })

  it('fires the signal of a command still running at its expiresAt, and answers TIMEOUT', async () => {
    await setup()
    let reason: unknown
    // The deadline runs on the agent's clock, which the test moves: the request cannot expire on
    // the way however busy the machine is, and the signal fires when the clock says, not before.
    const clock = manualClock(Date.now())
    const agent = await started(makeAgent({
      clock,
      commands: {
        wait: (ctx) => new Promise((resolve) => {
          ctx.signal.addEventListener('abort', () => { reason = ctx.signal.reason; resolve('too late') })
        }),
      },
    }))
    await hub!.send('csig1', 'wait', { expiresInMs: 2_000 })
    await waitFor('running', () => agent.stats().commands?.running === 1)
    clock.advance(1_500)
    await sleep(50)
    expect(reason).toBeUndefined()
    expect(hub!.responsesFor('csig1')).toEqual([])
    clock.advance(1_000)
    await waitFor('the TIMEOUT answer', () => hub!.responsesFor('csig1').length === 1)
    const res = hub!.responsesFor('csig1')[0]!
    expect(res).toMatchObject({ ok: false, error: { code: 'TIMEOUT' } })
    expect(reason).toBe('expired')
    await waitFor('the late result counted', () => agent.stats().commands?.lateResults === 1)
    expect(agent.stats().commands).toMatchObject({ running: 0, failed: 1, lateResults: 1 })
  })

  it('loads commands from the handlersModule\'s `commands` export', async () => {
    await setup()
    const dir = tempDir()
    dirs.push(dir)
    const file = join(dir, 'handlers.mjs')
    writeFileSync(file, 'export const commands = { hello: (ctx) => ({ hi: ctx.args, device: ctx.deviceId }) }\n')
    await started(makeAgent({ config: { handlersModule: file } }))
    expect(await hub!.call('cmod1', 'hello', { args: 'there' })).toMatchObject({ ok: true, result: { hi: 'there', device: DEVICE } })
  })
})
