import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { EVENT_LEVELS } from '../../protocol/limits.js'
import { targetIncludes } from '../fleet/targets.js'
import { isHubCaused } from '../presence/machine.js'
import { COMPARISONS, JOB_FAILURES } from '../rules/machine.js'
import { replay, replaySource, type ReplayItem, type ReplayResult } from '../rules/replay.js'
import { checkRuleSpec, type RuleSpec } from '../rules/spec.js'
import type { SampleRow } from '../telemetry/store.js'
import type { HubServices } from './services.js'
import { parseRange } from './time-params.js'

/** A dry run's window by default, and how many items it replays at most. */
const DEFAULT_TEST_WINDOW_MS = 3_600_000
const DEFAULT_TEST_ITEMS = 10_000
const MAX_TEST_ITEMS = 100_000

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

const TimeParam = Type.Union([Type.String({ maxLength: 64 }), Type.Integer()], {
  description: 'a duration ago (10m, 2h, 7d), an ISO date or epoch milliseconds (docs/api.md, "Time parameters")',
})

const TestBody = Type.Object({
  rule: RuleBody,
  deviceId: Type.String({ maxLength: 64, description: 'the device whose stored samples, events, presence changes or failed jobs the rule is run on' }),
  since: Type.Optional(TimeParam),
  until: Type.Optional(TimeParam),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TEST_ITEMS, description: `at most this many samples or events, from since on (default ${DEFAULT_TEST_ITEMS})` })),
}, { additionalProperties: false })

/** What a dry run answers: the replay, and what it ran on. */
export interface RuleTestReport extends ReplayResult {
  readonly rule: string
  readonly deviceId: string
  readonly sinceMs: number
  readonly untilMs: number
  /** Whether the rule's `for` includes the device: added as it is, would it watch it? */
  readonly watches: boolean
  /** What was read: the sensor's samples, or the events of a kind (and level). */
  readonly source: ReturnType<typeof replaySource>
  /** Items read from the store (all of the sensor or event kind, before a level filter). */
  readonly read: number
  /** The window held more than `limit` items: only the first `limit` were replayed. */
  readonly truncated: boolean
  /** Things to know about this run, in plain words. */
  readonly notes: readonly string[]
}

/**
 * `rollcall rule test`: the rule run on what the device already stored
 * (hub/rules/replay.ts), acting on nothing and writing nothing.
 */
async function testRule(s: HubServices, body: { rule: RuleSpec; deviceId: string; since?: string | number; until?: string | number; limit?: number }): Promise<RuleTestReport> {
  // The same checks and messages as adding it; a name that exists is fine (trying a change to a rule).
  const rule = checkRuleSpec(body.rule)
  const source = replaySource(rule.when)
  const device = s.registry.requireDevice(body.deviceId)
  const now = s.clock.now()
  const text = (v: string | number | undefined) => (v === undefined ? undefined : String(v))
  const { sinceMs, untilMs } = parseRange({ since: text(body.since), until: text(body.until) }, now, now - DEFAULT_TEST_WINDOW_MS)
  const limit = body.limit ?? DEFAULT_TEST_ITEMS
  // One more than the limit tells whether the window held more.
  let items: ReplayItem[]
  switch (source.from) {
    case 'samples': {
      // Raw rows (no bucketMs), so SampleRow.
      const rows = (await s.telemetry.query({ deviceId: device.id, sensor: source.sensor, sinceMs, untilMs, limit: limit + 1 })) as SampleRow[]
      items = rows.map((r) => ({ type: 'sample', ...r }))
      break
    }
    case 'events':
      items = (await s.telemetry.eventsOfKind(device.id, source.kind, sinceMs, untilMs, limit + 1))
        .map((e) => ({ type: 'event', ts: e.ts, seq: e.seq, kind: e.kind, level: e.level, message: e.message }))
      break
    case 'presence':
      items = (await s.presence.historyBetween(device.id, sinceMs, untilMs, limit + 1)).map((h) => ({ type: 'presence', ts: h.ts, status: h.status, reason: h.reason, hubCaused: isHubCaused(h.reason) }))
      break
    case 'jobs':
      items = (await s.jobs.failuresOfDevice(device.id, sinceMs, untilMs, limit + 1)).map((f) => ({
        type: 'job', ts: f.finished_at, jobId: f.job_id, name: f.job_name, outcome: f.state, attempt: f.attempt,
        error: f.error_code === null ? null : `${f.error_code}: ${f.error_message ?? ''}`, causeRule: f.cause_rule,
      }))
      break
    default: {
      const never: never = source
      return never
    }
  }
  const truncated = items.length > limit
  if (truncated) items = items.slice(0, limit)
  const result = replay(rule, items, truncated ? items.at(-1)!.ts : Math.min(untilMs, now))
  const watches = targetIncludes(rule.target, device.id, device.group)
  const what = source.from === 'samples' ? `"${source.sensor}" samples` : source.from === 'events' ? `"${source.kind}" events` : source.from === 'presence' ? 'presence changes' : 'job failures'
  const notes: string[] = []
  if (!watches) notes.push(`the rule is for ${rule.for}, which does not include ${device.id}: added as it is, it would not watch this device; the run shows what it would do if it did`)
  if (items.length === 0) notes.push(`${device.id} stored no ${what} from ${new Date(sinceMs).toISOString()} to ${new Date(untilMs).toISOString()}: try an earlier since`)
  if (truncated) notes.push(`the window held more than ${limit} ${what}: only the first ${limit}, up to ${new Date(items.at(-1)!.ts).toISOString()}, were replayed; give a later since, or a higher limit`)
  return { rule: rule.name, deviceId: device.id, sinceMs, untilMs, watches, source, read: items.length, truncated, notes, ...result }
}

export function ruleRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/rules', { schema: { summary: 'Add a rule', body: RuleBody } }, async (req, reply) => {
      return reply.status(201).send(await s.rules.add(req.body))
    })
    app.post('/rules/test', {
      schema: { summary: 'Try a rule on what a device already stored: what it would have fired and cleared, and which firings its limits would have suppressed; acts on nothing, writes nothing', body: TestBody },
    }, async (req) => testRule(s, req.body))
    app.get('/rules', { schema: { summary: 'List rules with their counters' } }, async () => ({ rules: s.rules.list() }))
    app.get('/rules/:name', { schema: { summary: 'Show a rule: its devices\' states and recent firings', params: NameParams } }, async (req) => s.rules.get(req.params.name))
    app.post('/rules/:name/enable', { schema: { summary: 'Enable a rule', params: NameParams } }, async (req) => s.rules.setEnabled(req.params.name, true))
    app.post('/rules/:name/disable', { schema: { summary: 'Disable a rule (its states are kept)', params: NameParams } }, async (req) => s.rules.setEnabled(req.params.name, false))
    app.delete('/rules/:name', { schema: { summary: 'Remove a rule (its firings stay for their trace)', params: NameParams } }, async (req, reply) => {
      await s.rules.remove(req.params.name)
      return reply.status(204).send()
    })
    app.get('/devices/:id/firings', {
      schema: {
        summary: "The rules that fired for a device: its firings by any rule, newest first",
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }),
      },
    }, async (req) => {
      const d = s.registry.requireDevice(req.params.id)
      return { deviceId: d.id, firings: s.rules.firingsOfDevice(d.id, req.query.limit ?? 50) }
    })
    app.get('/firings/:id', {
      schema: { summary: 'A firing\'s chain: what triggered it, each action with its outcome and timings, and the command or job it made', params: Type.Object({ id: Type.String({ maxLength: 32 }) }) },
    }, async (req) => s.firingChain(req.params.id))
  }
}
