import Type, { type Static } from 'typebox'
import { LIMITS } from '../protocol/limits.js'
import type { SimModel } from './sensors.js'

/**
 * The schema of the agent's config file, and the single source of its
 * validator. The agent itself does not load this module (it would load
 * TypeBox): `npm run generate` turns it into config-validator.generated.ts,
 * which config.ts uses. Field semantics are documented on AgentConfig in
 * config.ts.
 */

const Ms = (min: number, max: number) => Type.Union([Type.Integer({ minimum: min, maximum: max }), Type.String()])

const SensorSchema = Type.Object({
  name: Type.String(),
  // Spelled out: a mapped array would type as never in Static.
  model: Type.Union([Type.Literal('sine'), Type.Literal('random-walk'), Type.Literal('constant')]),
  min: Type.Number(),
  max: Type.Number(),
  unit: Type.Optional(Type.String()),
  periodMs: Type.Optional(Ms(1, 86_400_000)),
  seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 32 - 1 })),
}, { additionalProperties: false })

const ScheduleSchema = Type.Object({
  name: Type.String(),
  cron: Type.String({ minLength: 1, maxLength: 256 }),
  task: Type.String(),
  payload: Type.Optional(Type.Unknown()),
  timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  timeoutMs: Type.Optional(Ms(1, LIMITS.maxJobTimeoutMs)),
}, { additionalProperties: false })

// Fails to compile if the schema's models and SIM_MODELS drift apart.
type SchemaModel = Static<typeof SensorSchema>['model']
const _modelsMatch: [SimModel] extends [SchemaModel] ? ([SchemaModel] extends [SimModel] ? true : never) : never = true

/** What a config file (or a programmatic caller) may set; everything is optional here, required-ness is checked after merging. */
export const AgentConfigFile = Type.Object({
  hub: Type.Optional(Type.String()),
  // TLS (issue #12): PEM files; relative paths are relative to the config file.
  caFile: Type.Optional(Type.String({ minLength: 1 })),
  certFile: Type.Optional(Type.String({ minLength: 1 })),
  keyFile: Type.Optional(Type.String({ minLength: 1 })),
  id: Type.Optional(Type.String()),
  token: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
  // Issue #13: a file holding the token (a trailing newline is dropped), so the
  // token is in neither the unit, the command line nor this file.
  tokenFile: Type.Optional(Type.String({ minLength: 1 })),
  dataDir: Type.Optional(Type.String({ minLength: 1 })),
  keepaliveSec: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_535 })),
  connectTimeoutMs: Type.Optional(Ms(100, 600_000)),
  reconnectBaseMs: Type.Optional(Ms(1, 600_000)),
  reconnectMaxMs: Type.Optional(Ms(1, 3_600_000)),
  reconnectStableMs: Type.Optional(Ms(0, 3_600_000)),
  sampleIntervalMs: Type.Optional(Ms(0, 86_400_000)),
  builtinSensors: Type.Optional(Type.Boolean()),
  sensors: Type.Optional(Type.Array(SensorSchema, { maxItems: 1000 })),
  inflightBatches: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
  batchMaxSamples: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.maxSamplesPerBatch })),
  batchMaxBytes: Type.Optional(Type.Integer({ minimum: 4096, maximum: LIMITS.maxPayloadBytes - 1024 })),
  ackTimeoutMs: Type.Optional(Ms(10, 3_600_000)),
  coalesceMs: Type.Optional(Ms(0, 10_000)),
  outboxCommitMs: Type.Optional(Ms(0, 3_600_000)),
  outboxMaxRows: Type.Optional(Type.Integer({ minimum: 1 })),
  outboxMaxBytes: Type.Optional(Type.Integer({ minimum: 1024 })),
  synchronous: Type.Optional(Type.Union([Type.Literal('NORMAL'), Type.Literal('FULL')])),
  stopTimeoutMs: Type.Optional(Ms(0, 60_000)),
  jobQueueMax: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  jobConcurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
  pullIntervalMs: Type.Optional(Ms(1000, 86_400_000)),
  commandConcurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
  // Three forms (agent/shell-allow.ts): "cmd" (any arguments), ["cmd", "arg", ...]
  // (exactly this argv), {"cmd", "args": ["arg" | {"pattern": "regex"}]} (#12 section 4).
  shellAllow: Type.Optional(Type.Array(Type.Union([
    Type.String({ minLength: 1, maxLength: 4096 }),
    Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 256 }),
    Type.Object({
      cmd: Type.String({ minLength: 1, maxLength: 4096 }),
      args: Type.Array(Type.Union([
        Type.String({ maxLength: 4096 }),
        Type.Object({ pattern: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false }),
      ]), { maxItems: 256 }),
    }, { additionalProperties: false }),
  ]), { maxItems: 1000 })),
  shellMaxOutputBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 * 1024 * 1024 })),
  handlersModule: Type.Optional(Type.String({ minLength: 1 })),
  schedules: Type.Optional(Type.Array(ScheduleSchema, { maxItems: 100 })),
  logLevel: Type.Optional(Type.Union([Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')])),
}, { additionalProperties: false })
export type AgentConfigInput = Static<typeof AgentConfigFile>
