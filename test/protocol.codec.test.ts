import { describe, expect, it } from 'vitest'
import { decode, encode, parseTopic, topics, isDeviceId, topicDeviceId, type Birth, type TelemetryBatch, type JobsUpdate, type JobsBatch } from '../protocol/index.js'
import { execIdOf, parseExecId } from '../protocol/ids.js'
import { boundJson, nestsDeeperThan } from '../protocol/json-bounds.js'
import { LIMITS } from '../protocol/limits.js'

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

  it('refuses unknown topics', () => {
    const a = decode('devices/dev-1/bogus', encode(good))
    expect(!a.ok && a.error.code).toBe('UNKNOWN_TOPIC')
  })

  it('accepts birth and death on state', () => {
    const birth: Birth = { type: 'birth', v: 1, epoch: 3, bootId: 'b1', agentVersion: '0.1.0', storeId, capabilities: ['telemetry'] }
    expect(decode(topics.state('dev-1'), encode(birth)).ok).toBe(true)
    expect(decode(topics.state('dev-1'), encode({ type: 'death', v: 1, epoch: 3 })).ok).toBe(true)
  })
})

describe('jobs messages', () => {
  const execId = execIdOf('j1a2b3c4', 'dev-1')

  it('builds and splits execution ids', () => {
    expect(execId).toBe('j1a2b3c4.dev-1')
    expect(parseExecId(execId)).toEqual({ jobId: 'j1a2b3c4', deviceId: 'dev-1' })
    expect(parseExecId('j1a2b3c4')).toBeUndefined()
    expect(parseExecId('nope.dev-1')).toBeUndefined()
    expect(parseExecId('j1a2b3c4.Dev/1')).toBeUndefined()
  })

  it('round-trips a pull, a batch and an update', () => {
    expect(decode(topics.jobsPull('dev-1'), encode({ type: 'jobs.pull', v: 1, max: 10 })).ok).toBe(true)
    const batch: JobsBatch = {
      type: 'jobs.batch', v: 1, more: false,
      executions: [{ execId, jobId: 'j1a2b3c4', name: 'echo', payload: { a: 1 }, attempt: 1, version: 1, timeoutMs: 1000, priority: 0 }],
    }
    const d = decode(topics.jobsBatch('dev-1'), encode(batch))
    expect(d.ok && d.message).toEqual(batch)
    const update: JobsUpdate = {
      type: 'jobs.update', v: 1, storeId,
      updates: [
        { id: 1, execId, attempt: 1, version: 1, status: 'in_progress', startedAt: 5 },
        { id: 2, execId, attempt: 1, version: 1, status: 'failed', startedAt: 5, finishedAt: 9, error: { code: 'HANDLER_FAILED', message: 'boom' } },
      ],
    }
    expect(decode(topics.jobsUpdate('dev-1'), encode(update)).ok).toBe(true)
  })

  it.each([
    ['a pull for more than a batch holds', topics.jobsPull('dev-1'), { type: 'jobs.pull', v: 1, max: 100_000 }],
    ['a pull for nothing', topics.jobsPull('dev-1'), { type: 'jobs.pull', v: 1, max: 0 }],
    ['an update with an unknown status', topics.jobsUpdate('dev-1'), { type: 'jobs.update', v: 1, storeId, updates: [{ id: 1, execId, attempt: 1, version: 1, status: 'done' }] }],
    ['updates out of order', topics.jobsUpdate('dev-1'), { type: 'jobs.update', v: 1, storeId, updates: [
      { id: 2, execId, attempt: 1, version: 1, status: 'in_progress' }, { id: 1, execId, attempt: 1, version: 1, status: 'succeeded' }] }],
    ['an execution id that is not job.device', topics.jobsUpdate('dev-1'), { type: 'jobs.update', v: 1, storeId, updates: [{ id: 1, execId: 'dev-1', attempt: 1, version: 1, status: 'succeeded' }] }],
    ['an error code in lowercase', topics.jobsUpdate('dev-1'), { type: 'jobs.update', v: 1, storeId, updates: [{ id: 1, execId, attempt: 1, version: 1, status: 'failed', error: { code: 'oops', message: '' } }] }],
  ])('refuses %s', (_what, topic, body) => {
    const d = decode(topic, encode(body as never))
    expect(!d.ok && d.error.code).toBe('SCHEMA')
  })
})

describe('command messages', () => {
  it('round-trips a request and both kinds of response', () => {
    const req = { type: 'cmd.req', v: 1, id: 'c1a2b3c4d5', name: 'sys.info', args: { verbose: true }, expiresAt: 1_800_000_000_000 } as const
    const d = decode(topics.cmdReq('dev-1'), encode(req))
    expect(d.ok && d.message).toEqual(req)
    expect(decode(topics.cmdRes('dev-1'), encode({ type: 'cmd.res', v: 1, id: 'c1a2b3c4d5', ok: true, result: { up: 1 } })).ok).toBe(true)
    expect(decode(topics.cmdRes('dev-1'), encode({ type: 'cmd.res', v: 1, id: 'c1a2b3c4d5', ok: false, error: { code: 'EXPIRED', message: 'too late' } })).ok).toBe(true)
  })

  it.each([
    ['a request without expiresAt', topics.cmdReq('dev-1'), { type: 'cmd.req', v: 1, id: 'c1a2b3c4d5', name: 'ping' }],
    ['a command id that is not one', topics.cmdReq('dev-1'), { type: 'cmd.req', v: 1, id: 'x/1', name: 'ping', expiresAt: 1 }],
    ['a response without ok', topics.cmdRes('dev-1'), { type: 'cmd.res', v: 1, id: 'c1a2b3c4d5' }],
  ])('refuses %s', (_what, topic, body) => {
    const d = decode(topic, encode(body as never))
    expect(!d.ok && d.error.code).toBe('SCHEMA')
  })
})

/**
 * M19b: every free-form field (the schema's `unknown`) is bounded in depth and
 * size at decode time, so nothing past decode can overflow its stack
 * serialising one. Payloads are written by hand: JSON.stringify itself cannot
 * write 30,000 levels.
 */
describe('free-form fields', () => {
  const LIMIT = LIMITS.maxJsonDepth
  /** `[[...]]` nested `depth` deep, as JSON text. */
  const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth)
  const eventsWith = (data: string) => `{"type":"events","v":1,"storeId":"${storeId}","events":[{"seq":1,"ts":1,"kind":"x","level":"info","message":"m"},{"seq":2,"ts":2,"kind":"x","level":"info","message":"m","data":${data}}]}`
  const exec = (payload: string) => `{"type":"jobs.batch","v":1,"more":false,"executions":[{"execId":"jjob1.dev-1","jobId":"jjob1","name":"echo","payload":${payload},"attempt":1,"version":1,"timeoutMs":1000,"priority":0}]}`
  const update = (result: string) => `{"type":"jobs.update","v":1,"storeId":"${storeId}","updates":[{"id":1,"execId":"jjob1.dev-1","attempt":1,"version":1,"status":"succeeded","result":${result}}]}`
  const cmdReq = (args: string) => `{"type":"cmd.req","v":1,"id":"cabc1","name":"ping","args":${args},"expiresAt":1}`
  const cmdRes = (result: string) => `{"type":"cmd.res","v":1,"id":"cabc1","ok":true,"result":${result}}`
  const big = (bytes: number) => JSON.stringify('x'.repeat(bytes - 2))

  it.each([
    ['event data 30,000 deep', topics.events('dev-1'), eventsWith(`{"a":${nested(30_000)}}`), 'TOO_DEEP', '/events/1/data'],
    ['event data one level too deep', topics.events('dev-1'), eventsWith(`{"a":${nested(LIMIT)}}`), 'TOO_DEEP', '/events/1/data'],
    ['event data over its size', topics.events('dev-1'), eventsWith(`{"a":${big(LIMITS.maxEventDataBytes)}}`), 'FIELD_TOO_LARGE', '/events/1/data'],
    ['a job payload too deep', topics.jobsBatch('dev-1'), exec(nested(LIMIT + 1)), 'TOO_DEEP', '/executions/0/payload'],
    ['a job result too deep', topics.jobsUpdate('dev-1'), update(nested(10_000)), 'TOO_DEEP', '/updates/0/result'],
    ['a job result over its size', topics.jobsUpdate('dev-1'), update(big(LIMITS.maxJobResultBytes + 1)), 'FIELD_TOO_LARGE', '/updates/0/result'],
    ['command args too deep', topics.cmdReq('dev-1'), cmdReq(nested(LIMIT + 1)), 'TOO_DEEP', '/args'],
    ['a command result too deep', topics.cmdRes('dev-1'), cmdRes(`{"a":${nested(20_000)}}`), 'TOO_DEEP', '/result'],
    ['a command result over its size', topics.cmdRes('dev-1'), cmdRes(big(LIMITS.maxCommandResultBytes + 1)), 'FIELD_TOO_LARGE', '/result'],
  ])('refuses %s, naming the field and the limit', (_what, topic, json, code, path) => {
    const d = decode(topic, Buffer.from(json), { maxPayloadBytes: 1024 * 1024 })
    expect(d.ok).toBe(false)
    if (d.ok) return
    expect(d.error.code).toBe(code)
    expect(d.error.message).toContain(path)
    expect(d.error.message).toContain(String(code === 'TOO_DEEP' ? LIMIT : ''))
  })

  it.each([
    ['event data exactly at the depth limit', topics.events('dev-1'), eventsWith(`{"a":${nested(LIMIT - 1)}}`)],
    ['event data exactly at its size', topics.events('dev-1'), eventsWith(`{"a":${big(LIMITS.maxEventDataBytes - 6)}}`)],
    ['a job payload at the limit', topics.jobsBatch('dev-1'), exec(nested(LIMIT))],
    ['a scalar job result', topics.jobsUpdate('dev-1'), update('"done"')],
    ['command args at the limit', topics.cmdReq('dev-1'), cmdReq(`{"a":${nested(LIMIT - 1)}}`)],
  ])('accepts %s', (_what, topic, json) => {
    const d = decode(topic, Buffer.from(json), { maxPayloadBytes: 1024 * 1024 })
    expect(d.ok ? 'ok' : d.error.message).toBe('ok')
  })
})

describe('boundJson', () => {
  it.each([
    [null, 0], [1, 0], ['s', 0], [{}, 1], [[], 1], [{ a: [1] }, 2], [[[[]]], 3], [{ a: {}, b: [[{}]] }, 4],
  ])('%j is %i deep', (value, depth) => {
    expect(nestsDeeperThan(value, depth)).toBe(false)
    if (depth > 0) expect(nestsDeeperThan(value, depth - 1)).toBe(true)
  })

  it('measures UTF-8 bytes, not characters', () => {
    expect(boundJson('é'.repeat(10), 21)).toEqual({ ok: false, limit: 'bytes', bytes: 22, max: 21 })
    expect(boundJson('é'.repeat(10), 22)).toEqual({ ok: true, json: JSON.stringify('é'.repeat(10)), bytes: 22 })
  })
})
