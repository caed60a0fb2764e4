import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { ownHub, type SimHub } from '../devices-sim/hub-control.js'
import { renderReport } from '../devices-sim/report.js'
import { runSim } from '../devices-sim/sim.js'
import { tempDir } from './support/hub.js'

/**
 * The simulator's reactions scenario (issue #17): a small steady fleet whose
 * vibration models burst often, a rule added through the hub's API that
 * answers each burst with `sensors.sample` to the device and a job to the
 * fleet's group, and the pattern report's reactions line. Counted: each
 * burst fires the rule once (fired + suppressed = bursts), every firing's
 * command reached its device or says why not, every firing made its job,
 * and nothing (samples, the rule's job executions) is lost or duplicated.
 */
describe('rollcall sim --scenario reactions', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('fires once per burst, delivers the commands and reports sample -> fired -> command at the device', async () => {
    const tmp = tempDir('sim-reactions')
    cleanups.push(tmp.remove)
    const hub: SimHub = await ownHub(join(tmp.dir, 'hub'))
    cleanups.push(() => hub.stop())
    // 4 devices, 5 readings a second, a burst per device every 10 readings on average: a dozen bursts in 6 s.
    const report = await runSim({
      hub, devices: 4, durationMs: 6000, profile: 'steady', seed: 17, sampleIntervalMs: 200, chaos: [], workDir: join(tmp.dir, 'fleet'),
      jobEveryMs: 0, commandEveryMs: 0, drainTimeoutMs: 30_000, reactions: { burstsEveryTicks: 10 },
    })
    const rx = report.patterns.reactions
    expect(rx).toBeDefined()
    if (!rx) return
    expect(rx.fired).toBeGreaterThan(0)
    // Once per transition: every burst the models made fired the rule once, or was held back by its limits.
    expect(rx.fired + rx.suppressed).toBe(rx.bursts)
    // Every firing's command reached its device, or its record says why not; every firing made its job.
    expect(rx.delivered).toBeGreaterThan(0)
    expect(rx.delivered + Object.values(rx.notDelivered).reduce((a, b) => a + b, 0)).toBe(rx.fired)
    expect(rx.jobs).toBe(rx.fired)
    expect(rx.sampledToFiredMs.count).toBe(rx.fired)
    expect(rx.sampledToDeliveredMs.count).toBe(rx.delivered)
    expect(rx.firedToDeliveredMs.count).toBe(rx.delivered)
    // The rule's jobs went to the whole group (4 devices each) and finished, counted with the others.
    expect(report.totals.jobs.issued).toBe(rx.jobs * 4)
    expect(report.totals.jobs).toMatchObject({ lost: 0, duplicates: 0 })
    expect(report.totals).toMatchObject({ lost: 0, duplicates: 0 })

    const text = renderReport(report).join('\n')
    expect(text).toMatch(/reactions \(rules\) +sampled -> fired +\S+ ms +\S+ ms +\d+/)
    expect(text).toMatch(/sampled -> command at device +\S+ ms +\S+ ms +\d+/)
    expect(text).toContain(`reactions: rule sim.vibration-burst: bursts ${rx.bursts}, fired ${rx.fired}`)
  }, 120_000)
})
