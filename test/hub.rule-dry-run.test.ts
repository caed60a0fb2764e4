import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { encode, topics, type TelemetryAck } from '../protocol/index.js'
import type { RuleTestReport } from '../hub/api/rules.js'
import type { RuleSpec } from '../hub/rules/spec.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'

/**
 * POST /api/rules/test (`rollcall rule test`): a rule run on what a device
 * already stored, sent here by a real MQTT client; nothing acts, nothing is
 * written.
 */

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000d1'
const MIN = 60_000

const vib = (over: Partial<RuleSpec> = {}): RuleSpec => ({
  name: 'pump.vib',
  for: 'group:pumps',
  when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, clear: { op: '<=', value: 0.06 } } },
  then: [{ command: { name: 'motor.stop' } }],
  cooldownMs: MIN,
  ...over,
})

describe('POST /api/rules/test', () => {
  let hub: TestHub
  let dev: MqttClient
  /** When the test's recent samples start: 20 minutes ago. */
  let base: number
  beforeAll(async () => {
    hub = await startTestHub()
    const token = await hub.addDevice('pump-1', 'pumps')
    await hub.addDevice('other-1')
    dev = await connectDevice(hub.mqttUrl, 'pump-1', token)
    const acks: TelemetryAck[] = []
    dev.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
    await dev.subscribeAsync(topics.telemetryAck('pump-1'), { qos: 1 })
    const now = Date.now()
    base = now - 20 * MIN
    // Two hours ago a burst (outside the default hour); twenty minutes ago a burst, a dip and a
    // second crossing within the cooldown; three minutes later a third. A temp sample among them.
    const at: Array<readonly [number, string, number]> = [
      [now - 120 * MIN, 'vib', 0.5], [now - 120 * MIN + 1000, 'vib', 0.01],
      [base, 'vib', 0.01], [base + 1000, 'vib', 0.09], [base + 1500, 'temp', 40], [base + 2000, 'vib', 0.1], [base + 3000, 'vib', 0.05],
      [base + 4000, 'vib', 0.09], [base + 5000, 'vib', 0.01], [base + 3 * MIN, 'vib', 0.2], [base + 3 * MIN + 1000, 'vib', 0.01],
    ]
    await dev.publishAsync(topics.telemetry('pump-1'), encode({ type: 'telemetry', v: 1, storeId, prev: 0,
      samples: at.map(([ts, sensor, value], i) => ({ seq: i + 1, ts, sensor, value })) }), { qos: 1 })
    const faults = [['pump.fault', 'error'], ['boot', 'info'], ['pump.fault', 'warn'], ['pump.fault', 'error']] as const
    await dev.publishAsync(topics.events('pump-1'), encode({ type: 'events', v: 1, storeId, prev: at.length,
      events: faults.map(([kind, level], i) => ({ seq: at.length + i + 1, ts: base + i * 1000, kind, level, message: `${kind} ${i}` })) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === at.length + faults.length), 'samples and events stored')
  })
  afterAll(async () => {
    await dev.endAsync()
    await hub.stop()
  })

  const test = (body: Record<string, unknown>) => hub.api<RuleTestReport & { error: { code: string; message: string } }>('POST', '/api/rules/test', body)
  const fires = (r: RuleTestReport) => r.transitions.map((t) => `${t.kind}@${Math.round((t.ts - base) / 1000)}${t.kind === 'fire' ? ` ${t.verdict}` : ''}`)

  it('replays the last hour of the sensor: fires, clears, and what the limits would have held back', async () => {
    const r = await test({ rule: vib(), deviceId: 'pump-1' })
    expect(r.status, JSON.stringify(r.body)).toBe(200)
    expect(r.body).toMatchObject({ rule: 'pump.vib', deviceId: 'pump-1', watches: true, source: { from: 'samples', sensor: 'vib' }, read: 8, evaluated: 8, truncated: false, notes: [] })
    expect(fires(r.body)).toEqual(['fire@1 acts', 'clear@3', 'fire@4 cooldown', 'clear@5', 'fire@180 acts', 'clear@181'])
    expect(r.body.acted).toBe(2)
    expect(r.body.suppressed).toEqual({ stale: 0, paused: 0, cooldown: 1, rate: 0 })
    expect(r.body.finalState).toEqual({ phase: 'idle' })
    expect(r.body.transitions[0]).toMatchObject({ trigger: { type: 'sample', sensor: 'vib', value: 0.09, seq: 4 } })
    // Further back, and with a different threshold: what tuning looks like.
    const wider = await test({ rule: vib({ when: { telemetry: { sensor: 'vib', op: '>', value: 0.15, clear: { op: '<=', value: 0.06 } } } }), deviceId: 'pump-1', since: '3h' })
    expect(wider.body).toMatchObject({ read: 10, evaluated: 10, acted: 2 })
    expect(wider.body.transitions.map((t) => t.kind)).toEqual(['fire', 'clear', 'fire', 'clear'])
  })

  it('replays a bounded number from since on, and says the rest was left out', async () => {
    const r = await test({ rule: vib(), deviceId: 'pump-1', limit: 3 })
    expect(r.body).toMatchObject({ read: 3, evaluated: 3, truncated: true, acted: 1 })
    expect(r.body.notes).toEqual([expect.stringMatching(/^the window held more than 3 "vib" samples: only the first 3, up to .*, were replayed; give a later since, or a higher limit$/)])
    const none = await test({ rule: vib(), deviceId: 'pump-1', since: '10m' })
    expect(none.body).toMatchObject({ read: 0, evaluated: 0, transitions: [] })
    expect(none.body.notes).toEqual([expect.stringMatching(/^pump-1 stored no "vib" samples from .* try an earlier since$/)])
  })

  it('replays an event condition on the device\'s events of that kind and level', async () => {
    const r = await test({ rule: { name: 'pump.fault', for: 'device:pump-1', when: { event: { kind: 'pump.fault', level: 'error' } }, then: [{ event: { level: 'warn', message: 'fault' } }] }, deviceId: 'pump-1' })
    expect(r.status, JSON.stringify(r.body)).toBe(200)
    expect(r.body).toMatchObject({ source: { from: 'events', kind: 'pump.fault', level: 'error' }, read: 3, evaluated: 2, acted: 2 })
    expect(r.body.transitions.map((t) => t.trigger)).toEqual([
      { type: 'event', ts: base, seq: 12, kind: 'pump.fault', level: 'error', message: 'pump.fault 0' },
      { type: 'event', ts: base + 3000, seq: 15, kind: 'pump.fault', level: 'error', message: 'pump.fault 3' },
    ])
  })

  it('runs a rule whose for leaves the device out, and says so', async () => {
    const r = await test({ rule: vib({ for: 'device:other-1' }), deviceId: 'pump-1' })
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ watches: false, acted: 2 })
    expect(r.body.notes).toEqual(['the rule is for device:other-1, which does not include pump-1: added as it is, it would not watch this device; the run shows what it would do if it did'])
  })

  it('acts on nothing and writes nothing, also for a rule of the same name that exists', async () => {
    const rules = hub.running.services.rules
    await rules.add(vib({ enabled: false }))
    const evaluations = rules.stats().evaluations
    const r = await test({ rule: vib(), deviceId: 'pump-1' })
    expect(r.body.acted).toBe(2)
    const shown = rules.get('pump.vib')
    expect(shown).toMatchObject({ enabled: false, counters: { fired: 0, suppressedCooldown: 0 }, devices: [], recentFirings: [] })
    expect(rules.stats()).toMatchObject({ evaluations, fired: 0, actions: { pending: 0, running: 0, done: 0, failed: 0 } })
    expect((await hub.api<{ commands: unknown[] }>('GET', '/api/devices/pump-1/commands')).body.commands).toEqual([])
    await rules.remove('pump.vib')
  })

  it('says what to fix in a wrong request', async () => {
    const noDevice = await test({ rule: vib(), deviceId: 'nope' })
    expect([noDevice.status, noDevice.body.error.code, noDevice.body.error.message]).toEqual([404, 'DEVICE_NOT_FOUND', 'no device "nope"'])
    const both = await test({ rule: vib({ when: { telemetry: { sensor: 'vib', op: '>', value: 1, forMs: 5, samples: 2 } } }), deviceId: 'pump-1' })
    expect([both.status, both.body.error.code]).toEqual([400, 'BAD_REQUEST'])
    expect(both.body.error.message).toContain('forMs or samples, not both')
    const since = await test({ rule: vib(), deviceId: 'pump-1', since: 'yesterday' })
    expect([since.status, since.body.error.message]).toEqual([400, 'since="yesterday" is not a time: use a duration ago with its unit (10m, 2h, 7d), an ISO date (2026-01-31T12:00:00Z) or epoch milliseconds'])
    const small = await test({ rule: vib(), deviceId: 'pump-1', since: 3_600_000 })
    expect(small.status).toBe(400)
    expect(small.body.error.message).toMatch(/^since=3600000: a bare number must be epoch milliseconds/)
    const missing = await test({ rule: vib() })
    expect([missing.status, missing.body.error.code]).toEqual([400, 'BAD_REQUEST'])
    expect(missing.body.error.message).toMatch(/deviceId/)
  })
})
