import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { ownHub, type SimHub } from '../devices-sim/hub-control.js'
import { runSim, type SimProgress } from '../devices-sim/sim.js'
import { tempDir } from './support/hub.js'
import { exclusive } from './support/exclusive.js'

/**
 * Acceptance 3 (issue #5): 2,000 devices connect to one hub on this machine
 * with staggered connects, and the report says all were online within the
 * time the stagger promises.
 */
describe('2,000 simulated devices on one hub', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  // Not beside the dashboard's 2,000-device test: see support/exclusive.ts.
  it('all come online within the stagger\'s promise, and nothing is lost', () => exclusive('fleet-2000', async () => {
    // Cleaned up inside the lock, so the next fleet starts only once this one is gone.
    try {
      const tmp = tempDir('sim-scale')
      cleanups.push(tmp.remove)
      const hub: SimHub = await ownHub(join(tmp.dir, 'hub'))
      cleanups.push(() => hub.stop())
      const seen: SimProgress[] = []
      const report = await runSim({
        hub, devices: 2000, durationMs: 20_000, profile: 'steady', seed: 7, sampleIntervalMs: 5000,
        chaos: [], workDir: join(tmp.dir, 'fleet'), jobEveryMs: 0, commandEveryMs: 250, drainTimeoutMs: 60_000,
        onProgress: (p) => { seen.push(p) },
      })
      // 2,000 at 200 connects/s: every device starts connecting within 10 s.
      expect(report.online.connectsByMs).toBeLessThanOrEqual(10_000)
      expect(report.online.everOnline).toBe(2000)
      expect(report.online.withinPromise, `last online at ${report.online.allOnlineByMs} ms, promised ${report.online.promisedByMs} ms; late after slot ${JSON.stringify(report.online.lateAfterSlotMs)}`).toBe(true)
      expect(Math.max(...seen.map((p) => p.online))).toBe(2000)
      expect(report.totals.generated).toBeGreaterThan(2000 * 4 * 2)
      expect({ lost: report.totals.lost, duplicates: report.totals.duplicates }).toEqual({ lost: 0, duplicates: 0 })
      expect(report.hubAgrees).toBe(true)
      expect(report.totals.commands.byOutcome.succeeded).toBeGreaterThan(0)
    } finally {
      while (cleanups.length) await cleanups.pop()!()
    }
  }), 420_000)
})
