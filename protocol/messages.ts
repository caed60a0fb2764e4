import Type, { type Static } from 'typebox'
import { COMMAND_ID_PATTERN, DEVICE_ID_PATTERN, EXEC_ID_PATTERN, JOB_ID_PATTERN, SENSOR_NAME_PATTERN, TASK_NAME_PATTERN } from './ids.js'
import { LIMITS } from './limits.js'
import { ERROR_CODE_PATTERN } from './outcome-codes.js'

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
/**
 * Rows (telemetry and events) waiting in the sender's outbox behind this
 * batch, not sent yet: how far the device is behind (issue #6); 0 for an
 * agent that keeps up. Optional, and sent only to a hub whose acks list
 * "backlog" in `accepts`: a hub older than the field would refuse the batch
 * (objects are closed), so agents and hubs can be upgraded in any order.
 */
const Backlog = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
/** The ledger's store id: a random UUID made when the device's database is created. */
const StoreId = Type.String({ minLength: 8, maxLength: 64, pattern: '^[A-Za-z0-9-]+$' })
/** A unit as people write it ("°C", "%", "hPa", "s"); any characters but control ones, since dashboards print it. */
const Unit = Type.String({ minLength: 1, maxLength: LIMITS.maxUnitChars, pattern: '^[^\\u0000-\\u001f\\u007f]+$' })

export const Birth = Type.Object({
  type: Type.Literal('birth'),
  v: Type.Literal(1),
  epoch: Epoch,
  bootId: Type.String({ minLength: 1, maxLength: 64 }),
  agentVersion: Type.String({ minLength: 1, maxLength: 32 }),
  storeId: StoreId,
  capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: LIMITS.maxCapabilities }),
  /**
   * The unit of each sensor the device samples, by sensor name (issue #11):
   * what a chart labels its axis with. Optional, and sent only to a hub
   * whose acks list "units" in `accepts` (a hub older than the field would
   * refuse the birth: objects are closed), so agents and hubs can be
   * upgraded in any order; see docs/protocol.md.
   */
  units: Type.Optional(Type.Record(Type.String({ pattern: SENSOR_NAME_PATTERN }), Unit, { maxProperties: LIMITS.maxSensorUnits, additionalProperties: false })),
  /**
   * The device's wall clock when it sent this birth (issue #13): the hub
   * subtracts its own time on receipt and shows the difference as the
   * device's clock skew. Optional, and sent only to a hub whose acks list
   * "clock" in `accepts`, as for `units`.
   */
  clock: Type.Optional(Timestamp),
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
  /**
   * `ts` is the device's own clock, which had not been checked against the
   * hub's when the sample was taken, and could not be corrected later (the
   * device rebooted before it reached the hub): it may be hours off (a
   * Raspberry Pi without network boots with a stale clock). Optional, and
   * sent only to a hub whose acks list "unsynced" in `accepts` (issue #13).
   */
  unsynced: Type.Optional(Type.Literal(true)),
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
  backlog: Type.Optional(Backlog),
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
  backlog: Type.Optional(Backlog),
  events: Type.Array(DeviceEvent, { minItems: 1, maxItems: LIMITS.maxEventsPerBatch }),
}, { additionalProperties: false })
export type EventBatch = Static<typeof EventBatch>

/** Cumulative: every seq <= upTo of this store is durably stored by the hub. */
export const TelemetryAck = Type.Object({
  type: Type.Literal('telemetry.ack'),
  v: Type.Literal(1),
  storeId: StoreId,
  upTo: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  /**
   * Optional batch fields this hub takes (so far only "backlog"). Sent only
   * to devices whose birth lists the capability "telemetry.backlog", so an
   * older agent never sees a field it would refuse; an agent sends the field
   * only to a hub that said it takes it, so an older hub never sees one.
   */
  accepts: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 16 })),
  /**
   * The hub's clock when it sent this ack, ms since epoch (issue #13). Sent
   * only to devices whose birth lists the capability "time"; the agent times
   * it against the birth or batch the ack answers and keeps the hub's time
   * against its monotonic clock, for deadlines and sample timestamps.
   */
  hubTime: Type.Optional(Timestamp),
}, { additionalProperties: false })
export type TelemetryAck = Static<typeof TelemetryAck>

export const StateMessage = Type.Union([Birth, Death])
export type StateMessage = Static<typeof StateMessage>

// ---- Jobs (DESIGN.md, "Jobs"; docs/jobs.md) ----

/** `{jobId}.{deviceId}`: one execution per job and device, readable in logs. */
const ExecId = Type.String({ minLength: 8, maxLength: 120, pattern: EXEC_ID_PATTERN })
const Attempt = Type.Integer({ minimum: 1, maximum: 1000 })
const Version = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
const ExecRef = Type.Object({ execId: ExecId, attempt: Attempt }, { additionalProperties: false })
export type ExecRef = Static<typeof ExecRef>

/**
 * Hub -> device doorbell: work is waiting, pull it. `cancel` names executions
 * the device may hold that were canceled since they were delivered; the agent
 * drops them if queued and fires the AbortSignal if running.
 */
export const JobsNotify = Type.Object({
  type: Type.Literal('jobs.notify'),
  v: Type.Literal(1),
  cancel: Type.Optional(Type.Array(ExecRef, { maxItems: LIMITS.maxJobsPerBatch })),
}, { additionalProperties: false })
export type JobsNotify = Static<typeof JobsNotify>

/** Device -> hub: lease up to `max` executions (what the local queue has room for). */
export const JobsPull = Type.Object({
  type: Type.Literal('jobs.pull'),
  v: Type.Literal(1),
  max: Type.Integer({ minimum: 1, maximum: LIMITS.maxJobsPerBatch }),
}, { additionalProperties: false })
export type JobsPull = Static<typeof JobsPull>

export const JobExecution = Type.Object({
  execId: ExecId,
  jobId: Type.String({ pattern: JOB_ID_PATTERN }),
  /** The task the agent runs: a handler name. */
  name: Type.String({ pattern: TASK_NAME_PATTERN }),
  payload: Type.Unknown(),
  attempt: Attempt,
  /** The execution's version when this attempt was queued; every update echoes it. */
  version: Version,
  timeoutMs: Type.Integer({ minimum: 1, maximum: LIMITS.maxJobTimeoutMs }),
  /** The attempt must start by then (ms since epoch), or it is `expired`. */
  expiresAt: Type.Optional(Timestamp),
  priority: Type.Integer({ minimum: -1000, maximum: 1000 }),
}, { additionalProperties: false })
export type JobExecution = Static<typeof JobExecution>

/** Hub -> device: the answer to a pull; `more` says due work was left behind for lack of room. */
export const JobsBatch = Type.Object({
  type: Type.Literal('jobs.batch'),
  v: Type.Literal(1),
  executions: Type.Array(JobExecution, { maxItems: LIMITS.maxJobsPerBatch }),
  cancel: Type.Optional(Type.Array(ExecRef, { maxItems: LIMITS.maxJobsPerBatch })),
  more: Type.Boolean(),
}, { additionalProperties: false })
export type JobsBatch = Static<typeof JobsBatch>


const ErrorInfo = Type.Object({
  code: Type.String({ pattern: ERROR_CODE_PATTERN }),
  message: Type.String({ maxLength: LIMITS.maxJobErrorChars }),
}, { additionalProperties: false })

export const JobUpdate = Type.Object({
  /** The agent's id for this update (its ledger row); the hub's ack names it. */
  id: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  execId: ExecId,
  attempt: Attempt,
  /** The version the attempt was delivered with (JobExecution.version). */
  version: Version,
  // Spelled out: a mapped array would type as never in Static.
  status: Type.Union([
    Type.Literal('in_progress'), Type.Literal('succeeded'), Type.Literal('failed'),
    Type.Literal('timed_out'), Type.Literal('rejected'), Type.Literal('expired'),
  ]),
  /** ms since epoch, by the hub's clock as the device knows it, else its own (agent/hub-clock.ts). */
  startedAt: Type.Optional(Timestamp),
  finishedAt: Type.Optional(Timestamp),
  result: Type.Optional(Type.Unknown()),
  error: Type.Optional(ErrorInfo),
}, { additionalProperties: false })
export type JobUpdate = Static<typeof JobUpdate>
export type JobUpdateStatus = JobUpdate['status']

/** Device -> hub: execution updates in the order they happened, from the ledger's update outbox. */
export const JobsUpdate = Type.Object({
  type: Type.Literal('jobs.update'),
  v: Type.Literal(1),
  storeId: StoreId,
  updates: Type.Array(JobUpdate, { minItems: 1, maxItems: LIMITS.maxJobsPerBatch }),
}, { additionalProperties: false })
export type JobsUpdate = Static<typeof JobsUpdate>


/**
 * Hub -> device: these updates are dealt with and stored (applied, already
 * applied, or refused for good); the agent deletes them. `refused` explains
 * the ones that were not applied.
 */
export const JobsAck = Type.Object({
  type: Type.Literal('jobs.ack'),
  v: Type.Literal(1),
  storeId: StoreId,
  ids: Type.Array(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }), { maxItems: LIMITS.maxJobsPerBatch * 4 }),
  refused: Type.Optional(Type.Array(Type.Object({
    id: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    code: Type.Union([Type.Literal('STALE_VERSION'), Type.Literal('UNKNOWN_EXECUTION'), Type.Literal('NOT_YOURS')]),
  }, { additionalProperties: false }), { maxItems: LIMITS.maxJobsPerBatch * 4 })),
}, { additionalProperties: false })
export type JobsAck = Static<typeof JobsAck>
export type JobRefusal = NonNullable<JobsAck['refused']>[number]['code']

// ---- Commands (DESIGN.md, "Commands"; docs/commands.md) ----

const CommandId = Type.String({ pattern: COMMAND_ID_PATTERN })

/** Hub -> device: run `name` now; a device refuses it once `expiresAt` (hub clock) has passed. */
export const CommandRequest = Type.Object({
  type: Type.Literal('cmd.req'),
  v: Type.Literal(1),
  id: CommandId,
  name: Type.String({ pattern: TASK_NAME_PATTERN }),
  args: Type.Optional(Type.Unknown()),
  expiresAt: Timestamp,
}, { additionalProperties: false })
export type CommandRequest = Static<typeof CommandRequest>

/** Device -> hub: the outcome of a command; `result` when ok, `error` when not. */
export const CommandResponse = Type.Object({
  type: Type.Literal('cmd.res'),
  v: Type.Literal(1),
  id: CommandId,
  ok: Type.Boolean(),
  result: Type.Optional(Type.Unknown()),
  error: Type.Optional(ErrorInfo),
}, { additionalProperties: false })
export type CommandResponse = Static<typeof CommandResponse>

export type Message = Birth | Death | TelemetryBatch | EventBatch | TelemetryAck
  | JobsNotify | JobsPull | JobsBatch | JobsUpdate | JobsAck
  | CommandRequest | CommandResponse
export type MessageType = Message['type']

export { DEVICE_ID_PATTERN }
