import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type, { type Static } from 'typebox'
import { parseDurationMs } from '../../common/duration.js'
import { RollcallError } from '../../common/errors.js'
import { PERCENT_EXAMPLE, RATE_EXAMPLE, parsePercent, parseRatePerMinute } from '../../common/rate.js'
import { EXEC_STATES, type ExecState } from '../jobs/decisions.js'
import { JOB_STATUSES, type JobStatus } from '../jobs/store.js'
import { nestsDeeperThan } from '../../protocol/json-bounds.js'
import { LIMITS } from '../../protocol/limits.js'
import type { JobSpec } from '../jobs/jobs.js'
import type { JobTemplate } from '../jobs/schedules.js'
import type { HubServices } from './services.js'

/**
 * Jobs over HTTP (issue #3). Fields arrive as people write them (durations
 * with units, "60/min", "20%") and are turned into a JobSpec here, at the
 * edge; ranges, targets and the payload cap are the job service's to check.
 * A field that does not parse is a 400 that names it and shows a valid value.
 */

const Duration = Type.String({ maxLength: 32 })
// A number or a string, checked in templateOf: a schema union would answer with three half-messages.
const NumberOrText = Type.Unknown()

/** The fields a job takes, in POST /api/jobs and as a schedule's `job`. */
export const JOB_FIELDS = {
  name: Type.String({ maxLength: 64 }),
  // A device list may name up to 10,000 ids.
  target: Type.String({ maxLength: 700_000 }),
  payload: Type.Optional(Type.Unknown()),
  priority: Type.Optional(Type.Integer()),
  timeout: Type.Optional(Duration),
  timeoutMs: Type.Optional(Type.Integer()),
  expiresIn: Type.Optional(Duration),
  maxAttempts: Type.Optional(Type.Integer()),
  backoffBase: Type.Optional(Duration),
  backoffMax: Type.Optional(Duration),
  rate: Type.Optional(NumberOrText),
  abortAfter: Type.Optional(Type.Integer()),
  abortAt: Type.Optional(NumberOrText),
  continuous: Type.Optional(Type.Boolean()),
}

const JobBody = Type.Object({
  ...JOB_FIELDS,
  expiresAt: Type.Optional(NumberOrText),
}, { additionalProperties: false })

export const JobTemplateBody = Type.Object(JOB_FIELDS, { additionalProperties: false })
type JobFields = Static<typeof JobTemplateBody>

const bad = (message: string) => new RollcallError('BAD_REQUEST', message)

export function durationOf(field: string, text: string, min: number, example: string): number {
  // The unit is required: a bare "30" could mean seconds as easily as milliseconds.
  const ms = /^\d+(\.\d+)?[a-z]+$/.test(text.trim()) ? parseDurationMs(text) : undefined
  if (ms === undefined || ms < min) throw bad(`${field}=${JSON.stringify(text)} is not a duration: write a number with its unit (ms, s, m, h, d), e.g. "${example}"`)
  return ms
}

/** Epoch milliseconds before this (March 1973) are more likely a mistake than a date. */
const MIN_EPOCH_MS = 100_000_000_000

/**
 * A field's value as a message shows it: as JSON, unless it is nested deep
 * enough that JSON.stringify would overflow the stack (H05).
 */
function shown(value: unknown): string {
  if (nestsDeeperThan(value, LIMITS.maxJsonDepth)) return Array.isArray(value) ? 'an array nested too deep to show' : 'an object nested too deep to show'
  return JSON.stringify(value) ?? String(value)
}

/** A number as is, a string as text to parse; anything else (true, {}, null) cannot be either. */
function textOf(value: unknown): string | undefined {
  return typeof value === 'number' || typeof value === 'string' ? String(value).trim() : undefined
}

function expiryOf(field: string, value: unknown): number {
  const hint = 'use an ISO date (2026-01-31T12:00:00Z) or epoch milliseconds, or expiresIn with a duration (e.g. "1h")'
  const text = textOf(value) ?? ''
  if (/^\d+$/.test(text)) {
    const n = Number(text)
    if (n >= MIN_EPOCH_MS) return n
    throw bad(`${field}=${shown(value)}: a bare number must be epoch milliseconds; ${hint}`)
  }
  const t = Date.parse(text)
  if (/^\d{4}-\d{2}-\d{2}/.test(text) && !Number.isNaN(t)) return t
  throw bad(`${field}=${shown(value)} is not a time: ${hint}`)
}

/**
 * The fields common to a job and a schedule's job, parsed. `where` prefixes
 * field names in messages ("job." inside a schedule).
 */
export function templateOf(b: JobFields, where = ''): JobTemplate {
  const f = (name: string) => `${where}${name}`
  if (b.timeout !== undefined && b.timeoutMs !== undefined) throw bad(`send ${f('timeout')} ("30s") or ${f('timeoutMs')} (30000), not both`)
  if ((b.abortAfter === undefined) !== (b.abortAt === undefined)) {
    throw bad(`${f('abortAfter')} and ${f('abortAt')} go together: abort once abortAfter executions finished and abortAt of them failed, e.g. "abortAfter": 10, "abortAt": "20%"`)
  }
  let ratePerMinute: number | undefined
  if (b.rate !== undefined) {
    ratePerMinute = typeof b.rate === 'number' ? (b.rate > 0 ? b.rate : undefined) : parseRatePerMinute(textOf(b.rate) ?? '')
    if (ratePerMinute === undefined) throw bad(`${f('rate')}=${shown(b.rate)} is not a rate: write ${RATE_EXAMPLE}, above zero`)
  }
  let abortAtPercent: number | undefined
  if (b.abortAt !== undefined) {
    abortAtPercent = parsePercent(textOf(b.abortAt) ?? '')
    if (abortAtPercent === undefined) throw bad(`${f('abortAt')}=${shown(b.abortAt)} is not a failure percentage: write ${PERCENT_EXAMPLE}`)
  }
  return {
    name: b.name,
    target: b.target,
    ...('payload' in b ? { payload: b.payload } : {}),
    priority: b.priority,
    timeoutMs: b.timeout !== undefined ? durationOf(f('timeout'), b.timeout, 1, '30s') : b.timeoutMs,
    maxAttempts: b.maxAttempts,
    backoffBaseMs: b.backoffBase === undefined ? undefined : durationOf(f('backoffBase'), b.backoffBase, 0, '10s'),
    backoffMaxMs: b.backoffMax === undefined ? undefined : durationOf(f('backoffMax'), b.backoffMax, 0, '10m'),
    ratePerMinute,
    abortAfter: b.abortAfter,
    abortAtPercent,
    continuous: b.continuous,
    expiresInMs: b.expiresIn === undefined ? undefined : durationOf(f('expiresIn'), b.expiresIn, 1, '1h'),
  }
}

function jobSpecOf(b: Static<typeof JobBody>, now: number): JobSpec {
  if (b.expiresAt !== undefined && b.expiresIn !== undefined) throw bad('send expiresAt (a time) or expiresIn (a duration, e.g. "1h"), not both')
  const { expiresInMs, ...spec } = templateOf(b)
  const expiresAt = b.expiresAt !== undefined ? expiryOf('expiresAt', b.expiresAt) : expiresInMs !== undefined ? now + expiresInMs : undefined
  return { ...spec, expiresAt }
}

function oneOf<T extends string>(field: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined
  if ((allowed as readonly string[]).includes(value)) return value as T
  throw bad(`${field}=${JSON.stringify(value)} is not one of ${allowed.join(', ')}`)
}

const JobParams = Type.Object({ id: Type.String({ maxLength: 64 }) })
const DeviceParams = Type.Object({ id: Type.String({ maxLength: 64 }) })

export function jobRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/jobs', { schema: { summary: 'Create a job for a device, a group or a list of devices', body: JobBody } }, async (req, reply) => {
      const job = await s.jobs.create(jobSpecOf(req.body, s.clock.now()))
      // Only a schedule's repeated tick makes create return nothing; an API call always makes its job.
      if (!job) throw new RollcallError('INTERNAL', 'the job was not created')
      return reply.status(201).send(job)
    })

    app.get('/jobs', {
      schema: {
        summary: 'List jobs, optionally by status',
        querystring: Type.Object({
          status: Type.Optional(Type.String()),
          before: Type.Optional(Type.String()),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
        }),
      },
    }, async (req) => {
      const q = req.query
      const status = oneOf<JobStatus>('status', q.status, JOB_STATUSES)
      return { jobs: await s.jobs.list({ status, before: q.before, limit: q.limit ?? 100 }) }
    })

    app.get('/jobs/:id', {
      schema: {
        summary: 'Show a job, its progress and its executions',
        params: JobParams,
        querystring: Type.Object({
          state: Type.Optional(Type.String()),
          after: Type.Optional(Type.String({ maxLength: 64 })),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
        }),
      },
    }, async (req) => {
      const q = req.query
      const state = oneOf<ExecState>('state', q.state, EXEC_STATES)
      const limit = q.limit ?? 1000
      // One row more than asked tells whether there are more.
      const job = await s.jobs.get(req.params.id, { state, after: q.after, limit: limit + 1 })
      const truncated = job.executions.length > limit
      return { ...job, truncated, executions: truncated ? job.executions.slice(0, limit) : job.executions }
    })

    app.post('/jobs/:id/cancel', {
      // The body is optional; without one, the reason is the service's default.
      preValidation: async (req) => { req.body ??= {} },
      schema: {
        summary: 'Cancel a job',
        params: JobParams,
        body: Type.Object({ reason: Type.Optional(Type.String({ minLength: 1, maxLength: 500 })) }, { additionalProperties: false }),
      },
    }, async (req) => s.jobs.cancel(req.params.id, req.body.reason))

    app.get('/devices/:id/executions', {
      schema: {
        summary: "A device's latest executions of any job, newest first",
        params: DeviceParams,
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }),
      },
    }, async (req) => {
      const d = s.registry.requireDevice(req.params.id)
      return { deviceId: d.id, executions: await s.jobs.executionsOfDevice(d.id, req.query.limit ?? 50) }
    })

    app.get('/executions/:execId', {
      schema: { summary: 'Show one execution: a job on one device', params: Type.Object({ execId: Type.String({ maxLength: 160 }) }) },
    }, async (req) => s.jobs.execution(req.params.execId))
  }
}
