import Type, { type Static } from 'typebox'
import { DEVICE_ID_PATTERN, SENSOR_NAME_PATTERN } from './ids.js'
import { LIMITS } from './limits.js'

/**
 * Every payload on the wire is one member of a discriminated union on `type`,
 * with a version `v`. A v2 of a message is a new member, so old and new agents
 * can share a hub during a rollout.
 *
 * These schemas are the single source of the contract. The agent does not load
 * TypeBox: `npm run generate` turns them into plain check functions in
 * validators.generated.ts, which protocol/codec.ts uses everywhere.
 */
export { LIMITS, EVENT_LEVELS } from './limits.js'

const Seq = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
/** Milliseconds since the Unix epoch; bounded so a garbage clock cannot poison range queries. */
const Timestamp = Type.Integer({ minimum: 0, maximum: 8_640_000_000_000 })
const Epoch = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
/** The ledger's store id: a random UUID made when the device's database is created. */
const StoreId = Type.String({ minLength: 8, maxLength: 64, pattern: '^[A-Za-z0-9-]+$' })

export const Birth = Type.Object({
  type: Type.Literal('birth'),
  v: Type.Literal(1),
  epoch: Epoch,
  bootId: Type.String({ minLength: 1, maxLength: 64 }),
  agentVersion: Type.String({ minLength: 1, maxLength: 32 }),
  storeId: StoreId,
  capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: LIMITS.maxCapabilities }),
}, { additionalProperties: false })
export type Birth = Static<typeof Birth>

export const Death = Type.Object({
  type: Type.Literal('death'),
  v: Type.Literal(1),
  epoch: Epoch,
  /** The ledger the epoch counts in; lets the hub ignore a late Will of a re-flashed device's old store. */
  storeId: Type.Optional(StoreId),
}, { additionalProperties: false })
export type Death = Static<typeof Death>

export const Sample = Type.Object({
  seq: Seq,
  ts: Timestamp,
  sensor: Type.String({ pattern: SENSOR_NAME_PATTERN }),
  value: Type.Number(),
}, { additionalProperties: false })
export type Sample = Static<typeof Sample>

export const TelemetryBatch = Type.Object({
  type: Type.Literal('telemetry'),
  v: Type.Literal(1),
  storeId: StoreId,
  /**
   * The seq the sender expects the hub to hold already: the last seq it sent
   * before this batch on this connection (0 when nothing it sent is still
   * unacknowledged). A hub whose mark is below it missed an earlier batch and
   * refuses this one, so a cumulative ack can never cover a gap.
   */
  prev: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  samples: Type.Array(Sample, { minItems: 1, maxItems: LIMITS.maxSamplesPerBatch }),
}, { additionalProperties: false })
export type TelemetryBatch = Static<typeof TelemetryBatch>

export const DeviceEvent = Type.Object({
  seq: Seq,
  ts: Timestamp,
  kind: Type.String({ pattern: SENSOR_NAME_PATTERN }),
  level: Type.Union([Type.Literal('debug'), Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')]),
  message: Type.String({ maxLength: LIMITS.maxEventMessageChars }),
  data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: false })
export type DeviceEvent = Static<typeof DeviceEvent>

export const EventBatch = Type.Object({
  type: Type.Literal('events'),
  v: Type.Literal(1),
  storeId: StoreId,
  /** As in a telemetry batch: telemetry and events share one sequence. */
  prev: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
  events: Type.Array(DeviceEvent, { minItems: 1, maxItems: LIMITS.maxEventsPerBatch }),
}, { additionalProperties: false })
export type EventBatch = Static<typeof EventBatch>

/** Cumulative: every seq <= upTo of this store is durably stored by the hub. */
export const TelemetryAck = Type.Object({
  type: Type.Literal('telemetry.ack'),
  v: Type.Literal(1),
  storeId: StoreId,
  upTo: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
}, { additionalProperties: false })
export type TelemetryAck = Static<typeof TelemetryAck>

export const StateMessage = Type.Union([Birth, Death])
export type StateMessage = Static<typeof StateMessage>

export type Message = Birth | Death | TelemetryBatch | EventBatch | TelemetryAck
export type MessageType = Message['type']

export { DEVICE_ID_PATTERN }
