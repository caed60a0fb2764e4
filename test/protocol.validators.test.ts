import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { validationErrors, type Validator } from '../common/validator.js'
import { AgentConfigFile } from '../agent/config-schema.js'
import { AgentConfigFileValidator } from '../agent/config-validator.generated.js'
import { decode, encode, topics } from '../protocol/index.js'
import { EventBatch, StateMessage, TelemetryAck, TelemetryBatch } from '../protocol/messages.js'
import { EventBatchValidator, StateMessageValidator, TelemetryAckValidator, TelemetryBatchValidator } from '../protocol/validators.generated.js'
import { generateAll } from '../scripts/generate-validators.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const storeId = '6f1c2a8e-0000-4000-8000-000000000001'

describe('generated validators', () => {
  it.each(generateAll().map((m) => [m.path, m.text] as const))('%s is up to date with its schema (else run `npm run generate`)', (path, text) => {
    expect(readFileSync(`${root}${path}`, 'utf8')).toBe(text)
  })

  const sample = { seq: 1, ts: 1_700_000_000_000, sensor: 'cpu.load', value: 0.5 }
  const event = { seq: 1, ts: 1_700_000_000_000, kind: 'boot', level: 'info', message: 'up' }
  const telemetry = { type: 'telemetry', v: 1, storeId, samples: [sample] }
  const events = { type: 'events', v: 1, storeId, events: [event] }
  const birth = { type: 'birth', v: 1, epoch: 3, bootId: 'b1', agentVersion: '0.1.0', storeId, capabilities: ['telemetry'] }

  // Each generated check must agree with TypeBox's own compiled check, and
  // explain failures the same way (the hub stores the explanation).
  const table: Array<[string, Validator<unknown>, TSchema, unknown[]]> = [
    ['StateMessage', StateMessageValidator, StateMessage, [
      birth, { type: 'death', v: 1, epoch: 3 }, { ...birth, epoch: 0 }, { ...birth, capabilities: Array(65).fill('x') },
      { ...birth, bootId: '' }, { ...birth, storeId: 'no spaces allowed' },
      { ...birth, units: {} }, { ...birth, units: { 'cpu.temp': '°C', 'mem.used': 'ratio' } }, { ...birth, units: { 'Bad Name': 'V' } },
      { ...birth, units: { 'env.temp': '' } }, { ...birth, units: { 'env.temp': 'x'.repeat(17) } }, { ...birth, units: { 'env.temp': 'a\nb' } },
      { ...birth, units: { 'env.temp': 3 } }, { ...birth, units: ['°C'] }, { ...birth, units: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`s${i}`, 'V'])) }, { type: 'death', v: 2, epoch: 1 }, { type: 'death', v: 1 }, null, [], 'birth',
    ]],
    ['TelemetryBatch', TelemetryBatchValidator, TelemetryBatch, [
      telemetry, { ...telemetry, samples: [] }, { ...telemetry, samples: [{ ...sample, seq: 0 }] }, { ...telemetry, samples: [{ ...sample, sensor: 'A B' }] },
      { ...telemetry, samples: [{ ...sample, value: 'x' }] }, { ...telemetry, samples: [{ ...sample, ts: 1.5 }] }, { ...telemetry, x: 1 },
      { ...telemetry, samples: Array(2001).fill(sample) }, { ...telemetry, storeId: 'ünïcödé-ïd' },
      { ...telemetry, backlog: 0 }, { ...telemetry, backlog: 150 }, { ...telemetry, backlog: -1 }, { ...telemetry, backlog: 1.5 }, { ...telemetry, backlog: '3' },
    ]],
    ['EventBatch', EventBatchValidator, EventBatch, [
      events, { ...events, events: [{ ...event, data: { a: 1, b: [1, 'x'] } }] }, { ...events, events: [{ ...event, level: 'loud' }] },
      { ...events, events: [{ ...event, message: 'x'.repeat(1025) }] }, { ...events, events: [{ ...event, extra: true }] }, { ...events, events: [{ ...event, data: [] }] },
      { ...events, backlog: 7 }, { ...events, backlog: -3 }, { ...events, backlog: 2.25 },
    ]],
    ['TelemetryAck', TelemetryAckValidator, TelemetryAck, [
      { type: 'telemetry.ack', v: 1, storeId, upTo: 0 }, { type: 'telemetry.ack', v: 1, storeId, upTo: -1 }, { type: 'telemetry.ack', v: 1, storeId },
    ]],
    ['AgentConfigFile', AgentConfigFileValidator, AgentConfigFile, [
      {}, { hub: 'mqtt://x:1', sampleIntervalMs: '10s', sensors: [{ name: 's.a', model: 'sine', min: 0, max: 1, unit: 'hPa', periodMs: 500 }] },
      { keepaliveSec: 0 }, { sampleInterval: 5 }, { sensors: [{ name: 's', model: 'square', min: 0, max: 1 }] }, { logLevel: 'loud' },
      { batchMaxBytes: 70_000 }, { token: '' }, { sensors: [{ name: 's', model: 'sine', min: 0, max: 1, periodMs: true }] },
    ]],
  ]
  it.each(table)('%s agrees with TypeBox Compile() on valid and invalid values', (_name, generated, schema, values) => {
    const compiled = Compile(schema)
    for (const value of values) {
      expect(generated.Check(value), JSON.stringify(value)).toBe(compiled.Check(value))
      expect(validationErrors(generated, value)).toEqual(compiled.Errors(value))
    }
    expect(values.some((v) => generated.Check(v))).toBe(true)
    expect(values.some((v) => !generated.Check(v))).toBe(true)
  })

  it('takes an outbox backlog on telemetry and events batches: an integer from 0, optional', () => {
    for (const [topic, batch] of [[topics.telemetry('dev-1'), telemetry], [topics.events('dev-1'), events]] as const) {
      for (const backlog of [0, 1, 150, Number.MAX_SAFE_INTEGER]) {
        const d = decode(topic, Buffer.from(JSON.stringify({ ...batch, backlog })))
        expect(d.ok && d.message, `${batch.type} backlog ${backlog}`).toMatchObject({ type: batch.type, backlog })
      }
      const without = decode(topic, Buffer.from(JSON.stringify(batch)))
      expect(without.ok).toBe(true)
      expect(without.ok && 'backlog' in without.message).toBe(false)
      const refused = (backlog: unknown) => {
        const d = decode(topic, Buffer.from(JSON.stringify({ ...batch, backlog })))
        return d.ok ? 'accepted' : d.error.message
      }
      expect(refused(-1)).toMatch(/\/backlog must be >= 0/)
      expect(refused(1.5)).toMatch(/\/backlog must be integer/)
      expect(refused(Number.MAX_SAFE_INTEGER + 2)).toMatch(/\/backlog must be <= 9007199254740991/)
      expect(refused('12')).toMatch(/\/backlog must be integer/)
      expect(refused(null)).toMatch(/\/backlog must be integer/)
    }
  })

  it('keeps the field-level detail the hub stores with a dead letter', () => {
    const bad = { type: 'telemetry', v: 1, storeId, samples: [{ seq: 0, ts: 1, sensor: 'cpu.load', value: 1 }] }
    const d = decode(topics.telemetry('dev-1'), encode(bad as never))
    expect(!d.ok && d.error).toEqual({ code: 'SCHEMA', message: 'payload does not match the schema for this topic: /samples/0/seq must be >= 1' })
    const brief = decode(topics.telemetry('dev-1'), encode(bad as never), { schemaDetail: false })
    expect(!brief.ok && brief.error).toEqual({ code: 'SCHEMA', message: 'payload does not match the schema for this topic' })
  })
})
