import { afterEach, describe, expect, it } from 'vitest'
import { clockWithTime, systemMonotonic } from '../common/clock.js'
import type { RuleSpec } from '../hub/rules/spec.js'
import { registerDevices, startAgents, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { startProxy } from './support/proxy.js'

/**
 * Acceptance (issue #17): a device draining 10 minutes of backlog fires no
 * push actions for its stale samples, and the rule's counters say how many
 * were suppressed.
 *
 * A real agent samples its sensor while its link is cut (a TCP proxy between
 * it and the hub), one sample every 30 s for 10 minutes, with vibration
 * bursts in it; then the link comes back and it drains. Ten minutes pass
 * without waiting for them: the hub's clock, the device's wall clock and its
 * monotonic clock all move forward together, as time would (the agent stamps
 * samples with the hub's time it estimates from its monotonic clock, so the
 * samples are spread over the ten minutes in the hub's time). With the rule's
 * maxSampleAgeMs at its default, 5 minutes, the bursts of the first half
 * only move the rule's state (counted as suppressedStale) and the one of the
 * last minutes acts, late but within the rule's bound.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

const STEP_MS = 30_000
/** The sensor's value at each step of the outage (21 samples, 0 to 10 minutes): bursts at 1:00-1:30, 3:00 and 4:00 (older than 5 minutes at the drain) and from 8:00 on (fresh). */
const OUTAGE = [0.01, 0.01, 0.2, 0.3, 0.01, 0.01, 0.2, 0.01, 0.2, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.2, 0.25, 0.2, 0.3, 0.2] as const
const STALE_BURSTS = 3

describe('a device draining a backlog', () => {
  it('fires no push action for the samples older than maxSampleAgeMs, counts them as suppressed, and acts for the fresh ones', async () => {
    // Time the test moves forward, on every clock of hub and device alike.
    const skipped = { ms: 0 }
    const h = await startTestHub({}, undefined, undefined, clockWithTime(() => Date.now() + skipped.ms))
    cleanups.push(() => h.stop())
    const proxy = await startProxy(h.running.mqttPort)
    cleanups.push(() => proxy.close())
    const dir = tempDir('rules-backlog')
    cleanups.push(dir.remove)
    const [dev] = await registerDevices(h, 'backlog', 1)
    const id = dev!.id
    const value = { now: 0.01 }
    const ran: Array<{ id: string; at: number }> = []
    const [agent] = await startAgents(proxy.url, dir.dir, [dev!], {}, {
      clock: clockWithTime(() => Date.now() + skipped.ms),
      monotonic: { now: () => systemMonotonic.now() + skipped.ms },
      sensors: [{ name: 'vib', read: () => value.now }],
      commands: { 'motor.stop': (ctx) => { ran.push({ id: ctx.id, at: Date.now() + skipped.ms }); return { stopped: true } } },
    })
    cleanups.push(() => agent!.stop())
    await waitOnline(h, [id])
    await waitFor(() => agent!.stats().clock.synced, 'the agent to know the hub\'s time')
    const rules = h.running.services.rules
    const rule: RuleSpec = {
      name: 'backlog.vibration', for: `device:${id}`,
      when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, clear: { op: '<=', value: 0.06 } } },
      then: [{ command: { name: 'motor.stop' } }],
    }
    await rules.add(rule)
    const storeId = agent!.stats().storeId!
    const stored = () => waitFor(async () => (await h.running.services.telemetry.markOf(id, storeId)) >= agent!.stats().outbox!.newestSeq, 'the samples stored')

    // The outage: the link cut, ten minutes of samples kept in the device's outbox.
    proxy.cut()
    await waitFor(() => !h.running.services.presence.isReachable(id), 'the device offline')
    const outageStart = h.running.services.clock.now()
    const firstSeq = agent!.stats().outbox!.newestSeq + 1
    for (const [i, v] of OUTAGE.entries()) {
      if (i > 0) skipped.ms += STEP_MS
      value.now = v
      expect(agent!.sampleNow()).toBe(1)
    }
    expect(agent!.stats().outbox!.backlogRows).toBe(OUTAGE.length)

    // Back: the device drains its backlog, and the hub sees each sample once, in order, at its own time.
    proxy.restore()
    await stored()
    await waitFor(() => rules.stats().actions.done >= 1 && ran.length >= 1, 'the fresh burst\'s command')
    await rules.idle()
    expect(ran).toHaveLength(1)
    const afterDrain = rules.get(rule.name)
    expect(afterDrain.counters).toMatchObject({ fired: 1, suppressedStale: STALE_BURSTS, suppressedCooldown: 0, suppressedRate: 0, actionsFailed: 0 })
    // The one firing is the fresh burst's first sample (at 8:00 of the outage), not a stale one.
    expect(afterDrain.recentFirings).toHaveLength(1)
    const firing = afterDrain.recentFirings[0]!
    expect(firing.trigger).toMatchObject({ kind: 'sample', sensor: 'vib', value: 0.2, seq: firstSeq + 16 })
    // Stamped at its time in the outage (on the hub's clock, as the device estimated it), and acted on within the rule's bound.
    const { ts } = firing.trigger
    expect(Math.abs(ts - (outageStart + 16 * STEP_MS))).toBeLessThan(STEP_MS / 2)
    expect(firing.at - ts).toBeGreaterThan(STEP_MS)
    expect(firing.at - ts).toBeLessThan(300_000)
    // No push for a stale burst: one command recorded, the one the device ran.
    const commands = await h.running.services.commands.ofDevice(id)
    expect(commands.map((c) => c.id)).toEqual([ran[0]!.id])
    expect(commands[0]).toMatchObject({ status: 'succeeded', cause: { rule: rule.name, firing: firing.id } })

    // Live again: the burst the backlog ended in is still on, so holding fires nothing; a clear and a new burst fire.
    const sample = async (v: number) => {
      value.now = v
      agent!.sampleNow()
      await stored()
    }
    await sample(0.3)
    await sample(0.01)
    await sample(0.2)
    await waitFor(() => rules.stats().actions.done === 2 && ran.length === 2, 'the live burst\'s command')
    expect(rules.get(rule.name).counters).toMatchObject({ fired: 2, suppressedStale: STALE_BURSTS })
    expect(new Set(ran.map((r) => r.id)).size).toBe(2)
  })
})
