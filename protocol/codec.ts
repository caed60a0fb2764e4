import { validationErrors, type Validator } from '../common/validator.js'
import { boundJson, describeBounds } from './json-bounds.js'
import { LIMITS } from './limits.js'
import type { Message } from './messages.js'
import { parseTopic, type ParsedTopic, type TopicKind } from './topics.js'
import {
  CommandRequestValidator, CommandResponseValidator, EventBatchValidator, JobsAckValidator, JobsBatchValidator, JobsNotifyValidator, JobsPullValidator, JobsUpdateValidator,
  StateMessageValidator, TelemetryAckValidator, TelemetryBatchValidator,
} from './validators.generated.js'

/**
 * encode/decode: the edge where untrusted bytes become typed messages.
 * Nothing past decode() sees `unknown`; nothing that fails it is acted on.
 * decode never throws: every failure is a value with a stable reason code,
 * which the hub stores as the dead letter's reason.
 *
 * The checks are generated from the schemas in messages.ts ahead of time
 * (`npm run generate`), so decoding needs no TypeBox compiler at run time;
 * only explaining a failure loads TypeBox's error walker.
 */

export const DECODE_ERRORS = {
  UNKNOWN_TOPIC: 'topic is not devices/{id}/{known kind}',
  UNSUPPORTED_TOPIC: 'this topic carries no messages this version handles',
  PAYLOAD_TOO_LARGE: 'payload exceeds the size limit',
  NOT_UTF8_JSON: 'payload is not valid UTF-8 JSON',
  SCHEMA: 'payload does not match the schema for this topic',
  TOO_DEEP: `a free-form field nests deeper than ${LIMITS.maxJsonDepth} levels`,
  FIELD_TOO_LARGE: 'a free-form field is over its size limit',
} as const

export type DecodeErrorCode = keyof typeof DECODE_ERRORS

export interface DecodeError {
  readonly code: DecodeErrorCode
  /** Human-readable: which field is wrong and how, for the dead letter. */
  readonly message: string
}

export type Decoded =
  | { readonly ok: true; readonly topic: ParsedTopic; readonly message: Message }
  | { readonly ok: false; readonly topic: ParsedTopic | undefined; readonly error: DecodeError }

/** Which schema each topic kind carries; kinds without one are not handled by this version. */
const SCHEMA_BY_KIND: Partial<Record<TopicKind, Validator<Message>>> = {
  'state': StateMessageValidator,
  'telemetry': TelemetryBatchValidator,
  'events': EventBatchValidator,
  'telemetry/ack': TelemetryAckValidator,
  'jobs/notify': JobsNotifyValidator,
  'jobs/pull': JobsPullValidator,
  'jobs/batch': JobsBatchValidator,
  'jobs/update': JobsUpdateValidator,
  'jobs/ack': JobsAckValidator,
  'cmd/req': CommandRequestValidator,
  'cmd/res': CommandResponseValidator,
}

export interface DecodeOptions {
  readonly maxPayloadBytes?: number
  /**
   * Whether a SCHEMA error names the offending fields (default true). Naming
   * them loads TypeBox's error walker (~20 MB RSS) on the first failure, which
   * the hub can afford for its dead letters and a device should not.
   */
  readonly schemaDetail?: boolean
}

function fail(topic: ParsedTopic | undefined, code: DecodeErrorCode, detail?: string): Decoded {
  return { ok: false, topic, error: { code, message: detail ? `${DECODE_ERRORS[code]}: ${detail}` : DECODE_ERRORS[code] } }
}

export function decode(topicName: string, payload: Uint8Array, options: DecodeOptions = {}): Decoded {
  const topic = parseTopic(topicName)
  if (!topic) return fail(undefined, 'UNKNOWN_TOPIC')
  const max = options.maxPayloadBytes ?? LIMITS.maxPayloadBytes
  if (payload.byteLength > max) return fail(topic, 'PAYLOAD_TOO_LARGE', `${payload.byteLength} > ${max} bytes`)
  const checker = SCHEMA_BY_KIND[topic.kind]
  if (!checker) return fail(topic, 'UNSUPPORTED_TOPIC', topic.kind)
  let value: unknown
  try {
    value = JSON.parse(textDecoder.decode(payload))
  } catch (err) {
    return fail(topic, 'NOT_UTF8_JSON', (err as Error).message)
  }
  if (!checker.Check(value)) {
    if (options.schemaDetail === false) return fail(topic, 'SCHEMA')
    const first = validationErrors(checker, value).slice(0, 3)
    const detail = first.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ')
    return fail(topic, 'SCHEMA', detail)
  }
  const order = checkSeqOrder(value)
  if (order) return fail(topic, 'SCHEMA', order)
  for (const [path, field, maxBytes] of freeformFields(value)) {
    const b = boundJson(field, maxBytes)
    if (!b.ok) return fail(topic, b.limit === 'depth' ? 'TOO_DEEP' : 'FIELD_TOO_LARGE', describeBounds(path, b))
  }
  return { ok: true, topic, message: value }
}

/**
 * The fields the schemas leave free-form (`unknown`), with their size caps:
 * the one list of what a sender may nest. Bounding them here means nothing
 * past decode (the hub's group commit, its API, the agent's ledger) can be
 * made to overflow its stack serialising one (M19b).
 */
function* freeformFields(m: Message): Generator<readonly [path: string, value: unknown, maxBytes: number]> {
  switch (m.type) {
    case 'events':
      for (const [i, e] of m.events.entries()) if (e.data !== undefined) yield [`/events/${i}/data`, e.data, LIMITS.maxEventDataBytes]
      return
    case 'jobs.batch':
      for (const [i, e] of m.executions.entries()) yield [`/executions/${i}/payload`, e.payload, LIMITS.maxJobPayloadBytes]
      return
    case 'jobs.update':
      for (const [i, u] of m.updates.entries()) if (u.result !== undefined) yield [`/updates/${i}/result`, u.result, LIMITS.maxJobResultBytes]
      return
    case 'cmd.req':
      if (m.args !== undefined) yield ['/args', m.args, LIMITS.maxCommandArgsBytes]
      return
    case 'cmd.res':
      if (m.result !== undefined) yield ['/result', m.result, LIMITS.maxCommandResultBytes]
      return
    case 'birth': case 'death': case 'telemetry': case 'telemetry.ack':
    case 'jobs.notify': case 'jobs.pull': case 'jobs.ack':
      return
    default: {
      const never: never = m
      return never
    }
  }
}

/**
 * The hub's dedup relies on seq rising within a batch, as the agent's outbox
 * always sends them; job updates likewise come in the order they happened.
 */
function checkSeqOrder(message: Message): string | undefined {
  if (message.type === 'jobs.update') {
    const u = message.updates
    for (let i = 1; i < u.length; i++) {
      if (u[i]!.id <= u[i - 1]!.id) return `/updates/${i}/id must be greater than the one before it`
    }
    return undefined
  }
  const items = message.type === 'telemetry' ? message.samples : message.type === 'events' ? message.events : undefined
  if (!items) return undefined
  for (let i = 1; i < items.length; i++) {
    if (items[i]!.seq <= items[i - 1]!.seq) return `/${message.type === 'telemetry' ? 'samples' : 'events'}/${i}/seq must be greater than the one before it`
  }
  return undefined
}

// fatal: a payload that is not UTF-8 is an error, not a string of U+FFFD.
const textDecoder = new TextDecoder('utf-8', { fatal: true })

export function encode(message: Message): Buffer {
  return Buffer.from(JSON.stringify(message))
}
