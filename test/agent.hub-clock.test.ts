import { describe, expect, it } from 'vitest'
import { manualClock } from '../common/clock.js'
import { silentLogger } from '../common/logger.js'
import { DRIFT_PER_MS, HubClock, MAX_SYNC_RTT_MS, nextEstimate, SKEW_REPORT_TOLERANCE_MS, type ClockEstimate } from '../agent/hub-clock.js'
import { sampleBody } from '../agent/outbox.js'
import { skewText } from '../cli/admin-commands.js'
import { refusal } from '../agent/command-response.js'

/** Issue #13: the agent's estimate of the hub's time, and what it does to outgoing rows. */

const held: ClockEstimate = { offsetMs: 1_000_000, errorMs: 10, atMono: 5_000 }

describe('nextEstimate', () => {
  const cases: Array<[string, ClockEstimate | undefined, { hubTime: number; sentMono: number; receivedMono: number }, string]> = [
    ['first sample is taken', undefined, { hubTime: 1_010_000, sentMono: 9_990, receivedMono: 10_010 }, 'first'],
    ['a tighter sample replaces', held, { hubTime: 1_006_000, sentMono: 5_998, receivedMono: 6_002 }, 'tighter'],
    ['a looser sample that agrees is dropped', held, { hubTime: 1_006_000, sentMono: 5_950, receivedMono: 6_050 }, 'looser'],
    // Held for 1000 s: its error grew by 200 ms, so a 100 ms-wide sample is now the better one.
    ['an aged estimate yields to a looser fresh one', held, { hubTime: 2_005_000, sentMono: 1_004_900, receivedMono: 1_005_100 }, 'tighter'],
    ['a sample 5 s off both bounds wins: the hub\'s clock was stepped', held, { hubTime: 1_011_000, sentMono: 5_950, receivedMono: 6_050 }, 'disagrees'],
    ['a reply before its request is ignored', held, { hubTime: 1_006_000, sentMono: 6_050, receivedMono: 5_950 }, 'out-of-order'],
    ['a reply slower than MAX_SYNC_RTT_MS is ignored', undefined, { hubTime: 1_006_000, sentMono: 0, receivedMono: MAX_SYNC_RTT_MS + 1 }, 'slow-reply'],
  ]
  it.each(cases)('%s', (_name, h, sample, why) => {
    const v = nextEstimate(h, sample)
    expect('ignore' in v ? v.ignore : v.why).toBe(why)
    if ('take' in v) {
      expect(v.take.offsetMs).toBe(sample.hubTime - (sample.sentMono + sample.receivedMono) / 2)
      expect(v.take.errorMs).toBe((sample.receivedMono - sample.sentMono) / 2)
    }
  })

  it('ages at DRIFT_PER_MS', () => {
    // Exactly at the aged bound the fresh sample wins (<=).
    const age = 100_000
    const err = held.errorMs + age * DRIFT_PER_MS
    const v = nextEstimate(held, { hubTime: held.offsetMs + held.atMono + age, sentMono: held.atMono + age - err, receivedMono: held.atMono + age + err })
    expect('take' in v && v.why).toBe('tighter')
  })
})

describe('HubClock', () => {
  function make(bootRef = '0123abcd-4567-89ef-0123-456789abcdef') {
    const wall = manualClock(1_800_000_000_000 + 7_200_000) // 2 h ahead of the hub
    const mono = manualClock(50_000)
    const clock = new HubClock({ wall, monotonic: mono, bootRef, logger: silentLogger() })
    return { wall, mono, clock }
  }

  it('uses the device clock until an ack timed against the birth, then monotonic + offset', () => {
    const { mono, clock } = make()
    expect(clock.now()).toBe(1_800_007_200_000)
    clock.onBirthSent()
    mono.advance(40)
    clock.onAck({ upTo: 0, hubTime: 1_800_000_000_020, accepts: ['unsynced'] }, () => undefined)
    expect(clock.synced).toBe(true)
    expect(clock.now()).toBe(1_800_000_000_040)
    expect(clock.stats()).toMatchObject({ synced: true, offsetFromDeviceMs: -7_199_960, errorMs: 20 })
    mono.advance(1000)
    expect(clock.now()).toBe(1_800_000_001_040)
  })

  it('says when the skew a birth told the hub is stale: the wall clock stepped by more than SKEW_REPORT_TOLERANCE_MS since', () => {
    const { wall, mono, clock } = make()
    // The birth carries the wall clock before the first sync: nothing to judge it on yet.
    clock.onBirthClock(wall.now())
    clock.onBirthSent()
    expect(clock.birthSkewStale()).toBe(false)
    mono.advance(40)
    wall.advance(40)
    clock.onAck({ upTo: 0, hubTime: 1_800_000_000_020 }, () => undefined)
    // Synced: what the hub worked out from that birth (2 h ahead) is what the device is now.
    expect(clock.birthSkewStale()).toBe(false)
    // Time passes and the wall clock drifts by less than the tolerance: still current.
    mono.advance(60_000)
    wall.advance(60_000 + SKEW_REPORT_TOLERANCE_MS - 1)
    expect(clock.birthSkewStale()).toBe(false)
    // NTP steps the wall clock back by 2 h: stale until a birth carries the new reading.
    wall.advance(-7_200_000)
    expect(clock.birthSkewStale()).toBe(true)
    clock.onBirthClock(wall.now())
    expect(clock.birthSkewStale()).toBe(false)
    // A new connection sends a new birth; until it does, nothing is judged.
    clock.onDisconnected()
    wall.advance(-5_000)
    expect(clock.birthSkewStale()).toBe(false)
  })

  it('needs a request to time an ack against: an ack it cannot place is not used', () => {
    const { clock } = make()
    clock.onAck({ upTo: 5, hubTime: 1_800_000_000_000 }, () => undefined)
    expect(clock.synced).toBe(false)
  })

  it('rewrites unsynced rows when sent: corrected in this boot, flagged from another, stripped for a hub without the flag', () => {
    const { mono, clock } = make()
    const stored = (s: string) => s.slice(0, -1) + clock.unsyncedSuffix() + '}'
    const sample = stored(sampleBody('cpu.load', 1_800_007_200_000, 0.5))
    const event = stored(JSON.stringify({ ts: 1_800_007_200_000, kind: 'boot', level: 'info', message: 'say "ts":1' }))
    expect(sample).toMatch(/,"clk":"0123abcd4567@50000"}$/)
    // Not synced: the suffix goes, the device's ts stays; flagged once the hub takes the flag.
    expect(clock.wireBody('telemetry', sample)).toBe(sampleBody('cpu.load', 1_800_007_200_000, 0.5))
    mono.advance(10_000)
    clock.onBirthSent()
    clock.onAck({ upTo: 0, hubTime: 1_800_000_010_000, accepts: ['unsynced'] }, () => undefined)
    // Taken 10 s before the hub said 1_800_000_010_000.
    expect(clock.wireBody('telemetry', sample)).toBe(sampleBody('cpu.load', 1_800_000_000_000, 0.5))
    expect(JSON.parse(clock.wireBody('event', event))).toEqual({ ts: 1_800_000_000_000, kind: 'boot', level: 'info', message: 'say "ts":1' })
    // Synced: nothing more is added to new rows, and plain rows pass untouched.
    expect(clock.unsyncedSuffix()).toBe('')
    const plain = sampleBody('x', 1, 2)
    expect(clock.wireBody('telemetry', plain)).toBe(plain)
    // A row from another boot cannot be corrected: flagged (samples) or sent as stamped (events, which have no flag).
    const other = sampleBody('cpu.load', 1_800_007_200_000, 0.5).slice(0, -1) + ',"clk":"ffffffffffff@40000"}'
    expect(clock.wireBody('telemetry', other)).toBe('{"sensor":"cpu.load","ts":1800007200000,"value":0.5,"unsynced":true}')
    expect(clock.wireBody('event', other)).toBe(sampleBody('cpu.load', 1_800_007_200_000, 0.5))
  })

  it('adds no note to rows once the hub is known not to tell its time (an older hub)', () => {
    const { clock } = make()
    expect(clock.unsyncedSuffix()).not.toBe('')
    clock.onBirthSent()
    clock.onAck({ upTo: 0 }, () => undefined)
    expect(clock.unsyncedSuffix()).toBe('')
    expect(clock.synced).toBe(false)
  })
})

describe('EXPIRED says which clock judged it', () => {
  const input = { now: 10_000, known: true, running: 0, maxRunning: 4, names: () => [] }
  it.each([
    [undefined, 'hub clock'],
    ['hub' as const, 'hub clock'],
    ['device' as const, 'device clock: the hub\'s time was not known yet'],
  ])('%s', (clock, text) => {
    const r = refusal({ name: 'x', expiresAt: 9_000 }, { ...input, ...(clock ? { clock } : {}) })
    expect(r?.code).toBe('EXPIRED')
    expect(r?.message).toContain(text)
  })
})

describe('device show: the skew line', () => {
  it.each([
    [null, 'skew not reported'],
    [-250, 'in step with the hub (-250 ms)'],
    [7_200_000, '2.0 h ahead of the hub'],
    [-90_000, '1.5 min behind the hub'],
    [-3 * 86_400_000, '3.0 days behind the hub'],
  ])('%s', (ms, text) => {
    expect(skewText(ms)).toContain(text)
  })
})
