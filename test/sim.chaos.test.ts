import { describe, expect, it } from 'vitest'
import { isRollcallError } from '../common/errors.js'
import {
  CHAOS_EXAMPLE,
  chaosSchedule,
  formatChaosEvent,
  formatSchedule,
  parseChaosSpec,
  scheduleFingerprint,
  shareCount,
  type ChaosAction,
  type ChaosEvent,
} from '../devices-sim/chaos.js'

const fleet = (n: number) => Array.from({ length: n }, (_, i) => `sim-${String(i).padStart(4, '0')}`)

function caught(call: () => unknown): { code: string; message: string; details: Record<string, unknown> } {
  try {
    call()
  } catch (err) {
    if (isRollcallError(err)) return { code: err.code, message: err.message, details: err.details ?? {} }
    throw err
  }
  throw new Error('expected an error')
}

describe('parseChaosSpec', () => {
  it.each<[string, ChaosEvent[]]>([
    ['', []],
    ['  ', []],
    ['partition=20%@10s+15s', [{ kind: 'partition', percent: 20, atMs: 10_000, forMs: 15_000 }]],
    ['hub-kill@30s', [{ kind: 'hub-kill', atMs: 30_000, downMs: 1000 }]],
    ['hub-kill@30s+2.5s', [{ kind: 'hub-kill', atMs: 30_000, downMs: 2500 }]],
    ['agent-crash=5%@40s', [{ kind: 'agent-crash', percent: 5, atMs: 40_000, downMs: 1000 }]],
    ['agent-crash=5@1m+500ms', [{ kind: 'agent-crash', percent: 5, atMs: 60_000, downMs: 500 }]],
    ['reconnect-burst=50%@45s', [{ kind: 'reconnect-burst', percent: 50, atMs: 45_000 }]],
    [' partition = 30% @ 10s + 15s , Hub-Kill@25S ', [
      { kind: 'partition', percent: 30, atMs: 10_000, forMs: 15_000 },
      { kind: 'hub-kill', atMs: 25_000, downMs: 1000 },
    ]],
    [CHAOS_EXAMPLE, [
      { kind: 'partition', percent: 20, atMs: 10_000, forMs: 15_000 },
      { kind: 'hub-kill', atMs: 30_000, downMs: 1000 },
      { kind: 'agent-crash', percent: 5, atMs: 40_000, downMs: 1000 },
      { kind: 'reconnect-burst', percent: 50, atMs: 45_000 },
    ]],
  ])('%j', (spec, expected) => {
    expect(parseChaosSpec(spec)).toEqual(expected)
  })

  it.each<[string, number, number, RegExp]>([
    // spec, event number, column, what the message must say
    ['partition=20%@10s', 1, 1, /needs a length/],
    ['partition@10s+5s', 1, 1, /needs a share/],
    ['partition=0%@10s+5s', 1, 1, /not a share/],
    ['partition=120%@10s+5s', 1, 1, /not a share/],
    ['partition=20%', 1, 1, /say when/],
    ['partition=20%@10+5s', 1, 1, /"10" is not a time; write it with a unit/],
    ['partition=20%@10s+0s', 1, 1, /not a length/],
    ['hub-kill@30s,hub-kil@40s', 2, 14, /unknown event "hub-kil"/],
    ['hub-kill=10%@30s', 1, 1, /takes no share/],
    ['hub-kill@30s+', 1, 1, /not a length/],
    ['agent-crash=5%@soon', 1, 1, /"soon" is not a time/],
    ['reconnect-burst=50%@45s+2s', 1, 1, /has no length/],
    ['hub-kill@30s,,hub-kill@40s', 2, 14, /empty event/],
    ['hub-kill@30s, storm@40s', 2, 15, /unknown event "storm"/],
    ['hub-kill@30s,', 2, 14, /empty event/],
  ])('%j is refused at event %i, column %i', (spec, event, column, message) => {
    const err = caught(() => parseChaosSpec(spec))
    expect(err.code).toBe('BAD_REQUEST')
    expect(err.details).toMatchObject({ event, column, example: CHAOS_EXAMPLE })
    expect(err.message).toMatch(message)
    expect(err.message).toContain(CHAOS_EXAMPLE)
  })

  it('formatChaosEvent writes what parseChaosSpec reads', () => {
    const events = parseChaosSpec('partition=12.5%@1500ms+15s,hub-kill@30s+2s,agent-crash=5%@40s,reconnect-burst=50%@45s')
    expect(events.map(formatChaosEvent)).toEqual(['partition=12.5%@1500ms+15s', 'hub-kill@30s+2s', 'agent-crash=5%@40s+1s', 'reconnect-burst=50%@45s'])
    expect(parseChaosSpec(events.map(formatChaosEvent).join(','))).toEqual(events)
  })
})

describe('chaosSchedule', () => {
  const spec = 'partition=30%@10s+15s,hub-kill@25s,agent-crash=10%@35s,reconnect-burst=20%@45s'

  it('turns events into sorted actions, devices picked by seed', () => {
    const schedule = chaosSchedule(parseChaosSpec(spec), 42, fleet(50), 60_000)
    expect(schedule.map((a) => [a.atMs, a.action, a.devices?.length])).toEqual([
      [10_000, 'cut', 15],
      [25_000, 'restore', 15],
      [25_000, 'hub-kill', undefined],
      [26_000, 'hub-start', undefined],
      [35_000, 'agent-crash', 5],
      [36_000, 'agent-start', 5],
      [45_000, 'drop', 10],
    ])
    const [cut, restore] = schedule
    expect(restore!.devices).toEqual(cut!.devices)
    // Devices are listed in fleet order.
    expect([...cut!.devices!].sort()).toEqual(cut!.devices)
    expect(schedule[0]!.event).toBe('partition=30%@10s+15s')
    expect(schedule[2]).toEqual({ atMs: 25_000, action: 'hub-kill', event: 'hub-kill@25s+1s' })
  })

  it('the same seed gives the same schedule; another seed picks other devices', () => {
    const events = parseChaosSpec(spec)
    const a = chaosSchedule(events, 42, fleet(50), 60_000)
    expect(chaosSchedule(events, 42, fleet(50), 60_000)).toEqual(a)
    expect(formatSchedule(chaosSchedule(events, 42, fleet(50), 60_000))).toEqual(formatSchedule(a))
    const b = chaosSchedule(events, 43, fleet(50), 60_000)
    expect(b.map((x) => x.devices)).not.toEqual(a.map((x) => x.devices))
    expect(scheduleFingerprint(b)).not.toBe(scheduleFingerprint(a))
  })

  it('an added event does not change the devices the others pick', () => {
    const a = chaosSchedule(parseChaosSpec('partition=30%@10s+15s'), 7, fleet(100), 60_000)
    const b = chaosSchedule(parseChaosSpec('partition=30%@10s+15s,reconnect-burst=50%@5s'), 7, fleet(100), 60_000)
    expect(b.find((x) => x.action === 'cut')!.devices).toEqual(a[0]!.devices)
  })

  it.each<[number, number, number]>([
    [20, 50, 10],
    [5, 10, 1],
    [1, 10, 1], // never nobody
    [100, 7, 7],
    [50, 3, 2],
  ])('shareCount(%d%%, %i) = %i', (percent, n, expected) => {
    expect(shareCount(percent, n)).toBe(expected)
  })

  it('overlapping partitions take different devices; restore undoes only its own cut', () => {
    const schedule = chaosSchedule(parseChaosSpec('partition=60%@10s+20s,partition=60%@20s+20s'), 1, fleet(10), 60_000)
    const cuts = schedule.filter((a) => a.action === 'cut')
    expect(cuts[0]!.devices).toHaveLength(6)
    expect(cuts[1]!.devices).toHaveLength(4) // only 4 are not already cut
    expect(cuts[1]!.devices!.filter((d) => cuts[0]!.devices!.includes(d))).toEqual([])
  })

  it('a device freed at t can be taken again at t: ends sort before starts', () => {
    const schedule = chaosSchedule(parseChaosSpec('partition=100%@10s+10s,partition=100%@20s+10s'), 1, fleet(4), 60_000)
    expect(schedule.map((a) => [a.atMs, a.action, a.devices?.length])).toEqual([
      [10_000, 'cut', 4], [20_000, 'restore', 4], [20_000, 'cut', 4], [30_000, 'restore', 4],
    ])
  })

  it.each<[string, number, RegExp]>([
    ['hub-kill@60s', 60_000, /starts at 1m, not before the end of the run \(1m\)/],
    ['partition=20%@50s+15s', 60_000, /ends at 1m 5s, after the end of the run/],
    ['agent-crash=5%@59.5s+1s', 60_000, /ends at/],
    ['hub-kill@20s+10s,hub-kill@25s', 60_000, /hub-kill@25s\+1s kills the hub while hub-kill@20s\+10s has it down/],
  ])('refuses %j in a %i ms run', (text, durationMs, message) => {
    const err = caught(() => chaosSchedule(parseChaosSpec(text), 1, fleet(10), durationMs))
    expect(err.code).toBe('BAD_REQUEST')
    expect(err.message).toMatch(message)
  })

  it('refuses a share of an empty fleet, allows a hub kill', () => {
    expect(caught(() => chaosSchedule(parseChaosSpec('partition=20%@1s+1s'), 1, [], 10_000)).message).toMatch(/fleet is empty/)
    expect(chaosSchedule(parseChaosSpec('hub-kill@1s'), 1, [], 10_000)).toHaveLength(2)
  })
})

describe('formatSchedule', () => {
  it('prints one line per action with its devices and the event it comes from', () => {
    const schedule: ChaosAction[] = [
      { atMs: 10_000, action: 'cut', devices: ['a-1', 'a-2', 'a-3'], event: 'partition=30%@10s+15s' },
      { atMs: 25_000, action: 'hub-kill', event: 'hub-kill@25s+1s' },
      { atMs: 125_500, action: 'drop', devices: ['a-1'], event: 'reconnect-burst=10%@125.5s' },
    ]
    expect(formatSchedule(schedule, { maxDevices: 2 })).toEqual([
      `chaos schedule: 3 actions, fingerprint ${scheduleFingerprint(schedule)}`,
      '   10.000s  cut              3 devices  a-1 a-2 … and 1 more  (partition=30%@10s+15s)',
      '   25.000s  hub-kill     (hub-kill@25s+1s)',
      '  125.500s  drop             1 device   a-1  (reconnect-burst=10%@125.5s)',
    ])
    expect(formatSchedule([])).toEqual(['chaos schedule: none'])
  })
})
