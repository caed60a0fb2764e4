import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
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
