import { afterEach, describe, expect, it } from 'vitest'
import { Ledger } from '../agent/ledger.js'
import { Outbox, sampleBody } from '../agent/outbox.js'
import { TelemetryBatcher } from '../agent/telemetry-batcher.js'
import { silentLogger } from '../common/logger.js'
import { removeDir, tempDir } from './agent.support.js'
import { waitFor } from './support/hub.js'

/**
 * The group commit in front of the outbox (issue #13): ticks held in memory,
 * committed together at most every commitMs; the first tick after a quiet
 * stretch, an explicit commit and a clean stop go in at once; a crash loses
 * only what was held. A hand-moved monotonic clock decides "how long since
 * the last commit"; the one timer is real and short.
 */
const dirs: string[] = []
const ledgers: Ledger[] = []
const batchers: TelemetryBatcher[] = []
afterEach(() => {
  for (const b of batchers.splice(0)) b.discard()
  for (const l of ledgers.splice(0)) l.close()
  for (const d of dirs.splice(0)) removeDir(d)
})

function setup(commitMs: number, maxRows = 100): { outbox: Outbox; batcher: TelemetryBatcher; clock: { t: number } } {
  const dir = tempDir()
  dirs.push(dir)
  const ledger = new Ledger({ dataDir: dir })
  ledgers.push(ledger)
  const outbox = new Outbox(ledger)
  const clock = { t: 1000 }
  const batcher = new TelemetryBatcher(outbox, { commitMs, maxRows, logger: silentLogger(), monotonicNow: () => clock.t })
  batchers.push(batcher)
  return { outbox, batcher, clock }
}

const tick = (b: TelemetryBatcher, ts: number, n = 3) => {
  b.appendTelemetry(ts, Array.from({ length: n }, (_, i) => sampleBody(`s${i}`, ts, i)))
}

describe('TelemetryBatcher', () => {
  it('commits the first tick at once, holds the next ones, and commits them together when commitMs is up', async () => {
    const { outbox, batcher, clock } = setup(200)
    let commits = 0
    outbox.onAppend(() => { commits++ })
    tick(batcher, 1)
    expect({ rows: outbox.backlogRows, commits, held: batcher.heldCount }).toEqual({ rows: 3, commits: 1, held: 0 })
    clock.t += 50
    tick(batcher, 2)
    clock.t += 50
    tick(batcher, 3)
    expect({ rows: outbox.backlogRows, commits, held: batcher.heldCount }).toEqual({ rows: 3, commits: 1, held: 6 })
    // The timer was set for 200 ms after the first commit.
    clock.t += 100
    await waitFor(() => batcher.heldCount === 0, 'held ticks committed', 5000)
    expect({ rows: outbox.backlogRows, commits }).toEqual({ rows: 9, commits: 2 })
    expect(outbox.readAfter(0, 100).map((r) => r.ts)).toEqual([1, 1, 1, 2, 2, 2, 3, 3, 3])
  })

  it('commits a tick that comes after commitMs at once, with what it held', () => {
    const { outbox, batcher, clock } = setup(60_000)
    tick(batcher, 1)
    clock.t += 10_000
    tick(batcher, 2)
    clock.t += 50_000
    tick(batcher, 3)
    expect({ rows: outbox.backlogRows, held: batcher.heldCount }).toEqual({ rows: 9, held: 0 })
  })

  it('commits early when maxRows are held', () => {
    const { outbox, batcher, clock } = setup(60_000, 5)
    tick(batcher, 1)
    clock.t += 1
    tick(batcher, 2)
    expect(batcher.heldCount).toBe(3)
    clock.t += 1
    tick(batcher, 3)
    expect({ rows: outbox.backlogRows, held: batcher.heldCount }).toEqual({ rows: 9, held: 0 })
  })

  it('commits on commit() and stop(); discard() loses only what is held', () => {
    const { outbox, batcher, clock } = setup(60_000)
    tick(batcher, 1)
    clock.t += 1
    tick(batcher, 2)
    batcher.commit()
    expect(outbox.backlogRows).toBe(6)
    clock.t += 1
    tick(batcher, 3)
    batcher.stop()
    expect(outbox.backlogRows).toBe(9)
    clock.t += 1
    tick(batcher, 4)
    batcher.discard()
    expect({ rows: outbox.backlogRows, held: batcher.heldCount, newest: outbox.newestSeq }).toEqual({ rows: 9, held: 0, newest: 9 })
  })

  it('with commitMs 0 commits every tick', () => {
    const { outbox, batcher } = setup(0)
    for (let t = 1; t <= 4; t++) tick(batcher, t)
    expect({ rows: outbox.backlogRows, held: batcher.heldCount }).toEqual({ rows: 12, held: 0 })
  })
})
