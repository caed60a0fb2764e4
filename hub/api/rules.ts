import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { EVENT_LEVELS } from '../../protocol/limits.js'
import { COMPARISONS, JOB_FAILURES } from '../rules/machine.js'
import type { HubServices } from './services.js'

/**
 * Rules (issue #17, docs/rules.md): the shape of a rule is checked here, what
 * it means (names, targets, limits) by hub/rules/spec.ts, so both the API and
 * the CLI get the same messages.
 */

const Op = Type.Union(COMPARISONS.map((op) => Type.Literal(op)))
const Level = Type.Union(EVENT_LEVELS.map((l) => Type.Literal(l)))
const Threshold = Type.Object({ op: Op, value: Type.Number() }, { additionalProperties: false })
const CommandAction = Type.Object({
  name: Type.String({ maxLength: 64 }),
  args: Type.Optional(Type.Unknown()),
  to: Type.Optional(Type.String({ maxLength: 1024, description: '"trigger" (the default): the device that fired the rule; or a target: device:ID, group:NAME, all' })),
  timeoutMs: Type.Optional(Type.Integer()),
  ifOffline: Type.Optional(Type.Union([Type.Literal('fail'), Type.Literal('queue')])),
}, { additionalProperties: false })
const JobAction = Type.Object({
  name: Type.String({ maxLength: 64 }),
  payload: Type.Optional(Type.Unknown()),
  to: Type.Optional(Type.String({ maxLength: 1024 })),
  timeoutMs: Type.Optional(Type.Integer()),
}, { additionalProperties: false })

export const RuleBody = Type.Object({
  name: Type.String({ maxLength: 64 }),
  for: Type.String({ maxLength: 1024, description: 'device:ID, device:A,B, group:NAME or all' }),
  when: Type.Union([
    Type.Object({
      telemetry: Type.Object({
        sensor: Type.String({ maxLength: 64 }),
        op: Op,
        value: Type.Number(),
        forMs: Type.Optional(Type.Integer()),
        samples: Type.Optional(Type.Integer()),
        clear: Type.Optional(Threshold),
      }, { additionalProperties: false }),
    }, { additionalProperties: false }),
    Type.Object({
      event: Type.Object({ kind: Type.String({ maxLength: 64 }), level: Type.Optional(Level) }, { additionalProperties: false }),
    }, { additionalProperties: false }),
    Type.Object({
      presence: Type.Object({
        status: Type.Union([Type.Literal('offline'), Type.Literal('online')], { description: '"offline": went offline; "online": came back' }),
        forMs: Type.Optional(Type.Integer({ description: 'fires once the status has held this long (hub clock): "offline for longer than 10 min"' })),
      }, { additionalProperties: false }),
    }, { additionalProperties: false }),
    Type.Object({
      job: Type.Object({
        outcome: Type.Optional(Type.Union(JOB_FAILURES.map((o) => Type.Literal(o)), { description: 'leave out for either' })),
        name: Type.Optional(Type.String({ maxLength: 64, description: 'only executions of this task' })),
      }, { additionalProperties: false }),
    }, { additionalProperties: false }),
  ]),
  then: Type.Array(Type.Union([
    Type.Object({ command: CommandAction }, { additionalProperties: false }),
    Type.Object({ job: JobAction }, { additionalProperties: false }),
    Type.Object({ event: Type.Object({ level: Level, message: Type.String({ maxLength: 500 }) }, { additionalProperties: false }) }, { additionalProperties: false }),
    Type.Object({
      webhook: Type.Object({
        url: Type.String({ maxLength: 2048, description: 'http:// or https://; receives a POST of the firing as JSON' }),
        secret: Type.Optional(Type.String({ maxLength: 256, description: 'signs each call: X-Rollcall-Signature (docs/rules.md); shown only as "(set)"' })),
        maxAttempts: Type.Optional(Type.Integer()),
        timeoutMs: Type.Optional(Type.Integer()),
      }, { additionalProperties: false }),
    }, { additionalProperties: false }),
  ]), { minItems: 1, maxItems: 8 }),
  enabled: Type.Optional(Type.Boolean()),
  maxSampleAgeMs: Type.Optional(Type.Integer()),
  cooldownMs: Type.Optional(Type.Integer()),
  maxFiringsPerMinute: Type.Optional(Type.Integer()),
}, { additionalProperties: false })

const NameParams = Type.Object({ name: Type.String({ maxLength: 64 }) })

export function ruleRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/rules', { schema: { summary: 'Add a rule', body: RuleBody } }, async (req, reply) => {
      return reply.status(201).send(await s.rules.add(req.body))
    })
    app.get('/rules', { schema: { summary: 'List rules with their counters' } }, async () => ({ rules: s.rules.list() }))
    app.get('/rules/:name', { schema: { summary: 'Show a rule: its devices\' states and recent firings', params: NameParams } }, async (req) => s.rules.get(req.params.name))
    app.post('/rules/:name/enable', { schema: { summary: 'Enable a rule', params: NameParams } }, async (req) => s.rules.setEnabled(req.params.name, true))
    app.post('/rules/:name/disable', { schema: { summary: 'Disable a rule (its states are kept)', params: NameParams } }, async (req) => s.rules.setEnabled(req.params.name, false))
    app.delete('/rules/:name', { schema: { summary: 'Remove a rule (its firings stay for their trace)', params: NameParams } }, async (req, reply) => {
      await s.rules.remove(req.params.name)
      return reply.status(204).send()
    })
    app.get('/firings/:id', {
      schema: { summary: 'A firing\'s chain: what triggered it, each action with its outcome and timings, and the command or job it made', params: Type.Object({ id: Type.String({ maxLength: 32 }) }) },
    }, async (req) => s.firingChain(req.params.id))
  }
}
