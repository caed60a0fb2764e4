import { afterEach, describe, expect, it } from 'vitest'
import { probeReactions, reactionRule } from '../bench/reaction-probe.js'
import { startTestHub } from './support/hub.js'

/**
 * The rules bench's reaction probe (bench/reaction-probe.ts) against a real
 * hub: every crossing of its rule brings one command, timed, none missed;
 * and a crossing whose rule does not act (the rule is off) is counted as
 * missed, not timed.
 */
describe('the reaction probe', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('times one command per crossing, and counts a crossing without one as missed', async () => {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('probe-1')
    const r = await hub.api('POST', '/api/rules', reactionRule('probe.reaction', 'probe-1', 'probe'))
    expect(r.status).toBe(201)
    const spec = { url: hub.mqttUrl, deviceId: 'probe-1', token, sensor: 'probe', warmup: 2, budgetMs: 30_000, commandTimeoutMs: 1000 }

    const timed = await probeReactions({ ...spec, crossings: 8 })
    expect(timed).toMatchObject({ count: 8, missed: 0 })
    expect(timed.p50Ms).toBeGreaterThan(0)
    expect(timed.maxMs).toBeGreaterThanOrEqual(timed.p99Ms)
    const rule = await hub.api<{ counters: { fired: number } }>('GET', '/api/rules/probe.reaction')
    expect(rule.body.counters.fired).toBe(10)

    expect((await hub.api('POST', '/api/rules/probe.reaction/disable')).status).toBe(200)
    expect(await probeReactions({ ...spec, warmup: 0, crossings: 2 })).toMatchObject({ count: 0, missed: 2 })
  }, 60_000)
})
