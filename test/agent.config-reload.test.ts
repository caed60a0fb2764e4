import { afterEach, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { createAgent, type Agent } from '../agent/agent.js'
import { removeDir, startBroker, tempDir, type TestBroker } from './agent.support.js'
import { resolveAgentConfig, type AgentConfigInput } from '../agent/config.js'
import { planReload } from '../agent/config-reload.js'
import { HUB_DEFAULTS } from '../hub/config.js'
import { planHubReload } from '../hub/config-reload.js'

/** Issue #13: what a SIGHUP applies live and what it names as needing a restart (decided apart from doing it). */

const base: AgentConfigInput = { hub: 'mqtt://127.0.0.1:1883', id: 'dev-1', token: 't', dataDir: '/tmp/x' }
const cfg = (o: Partial<AgentConfigInput> = {}) => resolveAgentConfig({ ...base, ...o })

describe('planReload (agent)', () => {
  it.each<[string, Partial<AgentConfigInput>, string[], string[]]>([
    ['nothing changed', {}, [], []],
    ['sensors and interval', { sampleIntervalMs: '1s', sensors: [{ name: 'a.b', model: 'constant', min: 1, max: 1 }] }, ['sampleIntervalMs', 'sensors'], []],
    ['shell and concurrency', { shellAllow: ['/usr/bin/uptime'], shellMaxOutputBytes: 1024, jobConcurrency: 4, commandConcurrency: 2 }, ['jobConcurrency', 'commandConcurrency', 'shellAllow', 'shellMaxOutputBytes'], []],
    ['schedules and log level', { logLevel: 'debug', schedules: [{ name: 'tick', cron: '* * * * *', task: 'echo' }] }, ['logLevel', 'schedules'], []],
    ['identity and link', { hub: 'mqtt://other:1883', id: 'dev-2', token: 'u', keepaliveSec: 10 }, [], ['hub', 'id', 'token', 'keepaliveSec']],
    ['ledger and outbox', { dataDir: '/tmp/y', synchronous: 'FULL', outboxMaxRows: 10 }, [], ['dataDir', 'outboxMaxRows', 'synchronous']],
    ['both at once', { builtinSensors: false, pullIntervalMs: '1m' }, ['builtinSensors'], ['pullIntervalMs']],
  ])('%s', (_name, change, live, restart) => {
    const running = cfg()
    const next = cfg(change)
    const plan = planReload(running, next)
    expect([...plan.live].sort()).toEqual([...live].sort())
    expect([...plan.restart].sort()).toEqual([...restart].sort())
    // The running values stay for restart keys; live keys take the new ones.
    for (const k of plan.restart) expect(plan.effective[k]).toEqual(running[k])
    for (const k of plan.live) expect(plan.effective[k]).toEqual(next[k])
  })
})

describe('planHubReload', () => {
  it('applies logLevel, names the rest', () => {
    const plan = planHubReload(HUB_DEFAULTS, { ...HUB_DEFAULTS, logLevel: 'debug', retentionDays: 7, tlsCert: '/x.pem' })
    expect(plan.live).toEqual(['logLevel'])
    expect([...plan.restart].sort()).toEqual(['retentionDays', 'tlsCert'])
    expect(plan.effective).toMatchObject({ logLevel: 'debug', retentionDays: HUB_DEFAULTS.retentionDays })
  })
})

describe('a reloaded log level', () => {
  // The CLI sets only the root's level: this is the pino behaviour it relies on.
  it('reaches every child that has no level of its own, made before or after; a child given its own level keeps it', () => {
    const root = pino({ level: 'warn' }, { write: () => {} })
    const component = root.child({ component: 'a' })
    const perJob = component.child({ execId: 'x' })
    const http = root.child({ component: 'http' }, { level: 'error' })
    root.level = 'debug'
    expect([component.level, perJob.level, root.child({ component: 'b' }).level]).toEqual(['debug', 'debug', 'debug'])
    expect(perJob.isLevelEnabled('debug')).toBe(true)
    expect(http.level).toBe('error')
  })
})

describe('Agent.reconfigure', () => {
  let broker: TestBroker | undefined
  let agent: Agent | undefined
  let dir: string | undefined
  afterEach(async () => {
    await agent?.stop()
    await broker?.close()
    if (dir) removeDir(dir)
    agent = broker = dir = undefined
  })

  it('swaps the sampler for the new sensors, takes the live keys, and keeps the running values of the others', async () => {
    broker = await startBroker()
    dir = tempDir()
    const input: AgentConfigInput = { hub: broker.url, id: 'dev-1', token: 't', dataDir: dir, builtinSensors: false, sampleIntervalMs: 0, sensors: [{ name: 'a.one', model: 'constant', min: 1, max: 1 }] }
    agent = createAgent(resolveAgentConfig(input))
    await agent.start()
    expect(agent.sampleNow()).toBe(1)
    const plan = await agent.reconfigure(resolveAgentConfig({
      ...input, keepaliveSec: 7, jobConcurrency: 5, shellAllow: ['/usr/bin/uptime'],
      sensors: [...input.sensors!, { name: 'b.two', model: 'constant', min: 2, max: 2 }],
    }))
    expect([...plan.live].sort()).toEqual(['jobConcurrency', 'sensors', 'shellAllow'])
    expect(plan.restart).toEqual(['keepaliveSec'])
    // Both sensors now, through the new sampler; the effective config shows the live keys only.
    expect(agent.sampleNow()).toBe(2)
    expect(agent.config).toMatchObject({ jobConcurrency: 5, shellAllow: ['/usr/bin/uptime'], keepaliveSec: 30 })
    // A sensor list the sampler refuses (a name twice) changes nothing.
    const twice = agent.config.sensors[0]!
    await expect(agent.reconfigure({ ...agent.config, sensors: [twice, twice], jobConcurrency: 1 })).rejects.toThrow()
    expect(agent.config.jobConcurrency).toBe(5)
    expect(agent.sampleNow()).toBe(2)
  })
})
