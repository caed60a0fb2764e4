import { describe, expect, it } from 'vitest'
import { decode, encode, parseTopic, topics, isDeviceId, topicDeviceId, type Birth, type TelemetryBatch } from '../protocol/index.js'

const storeId = '6f1c2a8e-0000-4000-8000-000000000001'

describe('device ids', () => {
  it.each([
    ['abc', true], ['dev-01', true], ['a_b-c9', true], ['ab', false], ['Abc', false], ['-abc', false],
    ['a/bc', false], ['a+bc', false], ['a#bc', false], ['$abc', false], ['abcé', false], ['a'.repeat(64), true], ['a'.repeat(65), false],
  ])('%s -> %s', (id, ok) => {
    expect(isDeviceId(id)).toBe(ok)
  })
})

describe('topics', () => {
  it('builds and parses every kind', () => {
    expect(parseTopic(topics.telemetry('dev-1'))).toEqual({ deviceId: 'dev-1', kind: 'telemetry', direction: 'up' })
    expect(parseTopic(topics.telemetryAck('dev-1'))).toEqual({ deviceId: 'dev-1', kind: 'telemetry/ack', direction: 'down' })
    expect(parseTopic(topics.jobsBatch('dev-1'))?.kind).toBe('jobs/batch')
  })
  it.each(['devices/dev-1', 'devices/dev-1/', 'devices/dev-1/nope', 'devices/DEV/state', 'x/dev-1/state', 'devices/dev-1/state/extra', 'devices/dev-1/constructor'])(
    'refuses %s', (t) => { expect(parseTopic(t)).toBeUndefined() })
  it('finds the device of an unknown kind under its prefix', () => {
    expect(topicDeviceId('devices/dev-1/whatever/else')).toBe('dev-1')
    expect(topicDeviceId('devices/+/telemetry')).toBeUndefined()
  })
})

describe('decode', () => {
  const sample = { seq: 1, ts: 1_700_000_000_000, sensor: 'cpu.load', value: 0.5 }
  const good: TelemetryBatch = { type: 'telemetry', v: 1, storeId, samples: [sample] }

  it('round-trips a telemetry batch', () => {
    const d = decode(topics.telemetry('dev-1'), encode(good))
    expect(d.ok).toBe(true)
    if (d.ok) expect(d.message).toEqual(good)
  })

  it.each([
    ['not json', Buffer.from('{nope'), 'NOT_UTF8_JSON'],
    ['invalid utf-8', Buffer.from([0xff, 0xfe, 0x7b]), 'NOT_UTF8_JSON'],
    ['wrong type for topic', encode({ type: 'death', v: 1, epoch: 1 }), 'SCHEMA'],
    ['wrong version', Buffer.from(JSON.stringify({ ...good, v: 2 })), 'SCHEMA'],
    ['extra field', Buffer.from(JSON.stringify({ ...good, x: 1 })), 'SCHEMA'],
    ['empty batch', Buffer.from(JSON.stringify({ ...good, samples: [] })), 'SCHEMA'],
    ['bad sensor', Buffer.from(JSON.stringify({ ...good, samples: [{ ...sample, sensor: 'A B' }] })), 'SCHEMA'],
    ['non-number value', Buffer.from(JSON.stringify({ ...good, samples: [{ ...sample, value: 'x' }] })), 'SCHEMA'],
    ['seq not rising', Buffer.from(JSON.stringify({ ...good, samples: [{ ...sample, seq: 2 }, sample] })), 'SCHEMA'],
    ['too large', Buffer.alloc(70_000, 0x20), 'PAYLOAD_TOO_LARGE'],
  ])('%s -> %s', (_name, payload, code) => {
    const d = decode(topics.telemetry('dev-1'), payload)
    expect(d.ok).toBe(false)
    if (!d.ok) expect(d.error.code).toBe(code)
  })

  it('refuses unknown and unsupported topics', () => {
    const a = decode('devices/dev-1/bogus', encode(good))
    expect(!a.ok && a.error.code).toBe('UNKNOWN_TOPIC')
    const b = decode(topics.jobsPull('dev-1'), Buffer.from('{}'))
    expect(!b.ok && b.error.code).toBe('UNSUPPORTED_TOPIC')
  })

  it('accepts birth and death on state', () => {
    const birth: Birth = { type: 'birth', v: 1, epoch: 3, bootId: 'b1', agentVersion: '0.1.0', storeId, capabilities: ['telemetry'] }
    expect(decode(topics.state('dev-1'), encode(birth)).ok).toBe(true)
    expect(decode(topics.state('dev-1'), encode({ type: 'death', v: 1, epoch: 3 })).ok).toBe(true)
  })
})
