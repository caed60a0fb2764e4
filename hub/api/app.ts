import Fastify from 'fastify'
import type { SecureContextOptions } from 'node:tls'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { RollcallError, isRollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import { adminAuthorizer } from './auth.js'
import { deviceRoutes } from './devices.js'
import { jobRoutes } from './jobs.js'
import { observerRoutes } from './observers.js'
import { registerApiDocs } from './openapi.js'
import { opsRoutes } from './ops.js'
import { commandRoutes } from './commands.js'
import { scheduleRoutes } from './schedules.js'
import { ruleRoutes } from './rules.js'
import { metricsRoute } from './metrics.js'
import { liveRoutes, type LiveRouteOptions } from './live.js'
import { dashboardRoutes } from './dashboard.js'
import type { LiveFeed } from '../observe/live-feed.js'
import type { HubMetrics } from '../observe/metrics.js'
import type { HubServices } from './services.js'

/**
 * The HTTP API is built by a function and can be exercised with
 * `app.inject()` without a socket. Everything under /api needs the admin
 * token, except the API reference at /api/docs; /healthz does not. Errors
 * leave as `{ error: { code, message } }` with the status from the catalogue
 * in common/errors.ts.
 */
export interface ApiOptions {
  readonly adminToken: string
  readonly logger: Logger
  readonly metrics?: HubMetrics
  readonly metricsPublic?: boolean
  /** The dashboard's live stream (GET /api/live); without it the route is absent. */
  readonly live?: LiveRouteOptions & { readonly feed: LiveFeed }
  /** Serve HTTPS with this certificate and key (the hub replaces them later with setSecureContext). */
  readonly https?: SecureContextOptions & { readonly handshakeTimeout?: number }
}

/**
 * The body of a RollcallError's answer: its code and message, then its details
 * (a failed command's outcome, say). A detail named like the code or the
 * message is left out: it cannot replace them.
 */
export function errorBody(err: RollcallError): { error: Record<string, unknown> & { code: string; message: string } } {
  const { code: _code, message: _message, ...details } = err.details ?? {}
  return { error: { code: err.code, message: err.message, ...details } }
}

export function buildApi(services: HubServices, options: ApiOptions) {
  // Request logs would be one line per call at info; the http component logs warnings and errors only.
  // forceCloseConnections: stopping the hub closes keep-alive connections too, not only idle ones.
  const app = Fastify({
    loggerInstance: options.logger.child({ component: 'http' }, { level: 'warn' }), bodyLimit: 1024 * 1024, forceCloseConnections: true,
    ...(options.https ? { https: options.https } : {}),
  })
    .setValidatorCompiler(TypeBoxValidatorCompiler)
    .withTypeProvider<TypeBoxTypeProvider>()

  const authorized = adminAuthorizer(options.adminToken)

  app.setErrorHandler((err, req, reply) => {
    if (isRollcallError(err)) {
      return reply.status(err.httpStatus).send(errorBody(err))
    }
    const e = err as { validation?: ValidationIssue[]; validationContext?: string; statusCode?: number; message: string }
    if (e.validation) {
      return reply.status(400).send({ error: { code: 'BAD_REQUEST', message: describeValidation(e.validationContext ?? 'request', e.validation) } })
    }
    if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.status(e.statusCode).send({ error: { code: e.statusCode === 413 ? 'PAYLOAD_TOO_LARGE' : 'BAD_REQUEST', message: e.message } })
    }
    req.log.error({ err }, 'request failed')
    return reply.status(500).send({ error: { code: 'INTERNAL', message: 'internal error; see the hub log' } })
  })

  app.setNotFoundHandler((req, reply) => {
    return reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` } })
  })

  // Before any route: the document is collected from routes as they are added. The docs are public (see openapi.ts).
  registerApiDocs(app, { metricsPublic: options.metricsPublic ?? false })

  // In a plugin, like every route, so that it is added after the docs plugin is loaded and is in the document.
  void app.register(async (open) => {
    open.get('/healthz', { schema: { summary: 'Health: the hub is up (503 while it is away from its external broker); no token needed' } }, async (_req, reply) => {
      const health = services.health()
      return reply.status(health.ok ? 200 : 503).send(health)
    })
  })
  if (options.metrics) void app.register(metricsRoute(options.metrics, { authorized: options.metricsPublic ? undefined : authorized }))
  // The dashboard's files are public (they hold no data); everything they show comes from /api with the token.
  void app.register(dashboardRoutes())

  void app.register(async (api) => {
    api.addHook('onRequest', async (req) => {
      if (!authorized(req.headers.authorization)) {
        throw new RollcallError('UNAUTHORIZED', 'missing or wrong admin token: send "Authorization: Bearer <token>" (the token is in the hub data dir, file admin-token)')
      }
    })
    await api.register(deviceRoutes(services))
    await api.register(observerRoutes(services))
    await api.register(opsRoutes(services))
    await api.register(commandRoutes(services))
    await api.register(jobRoutes(services))
    await api.register(scheduleRoutes(services))
    await api.register(ruleRoutes(services))
    if (options.live) await api.register(liveRoutes(options.live.feed, options.live))
  }, { prefix: '/api' })

  return app
}

interface ValidationIssue { instancePath?: string; message?: string; keyword?: string; params?: Record<string, unknown> }

/**
 * Turns schema errors into one sentence that says what to fix: unknown fields
 * by name, a body that is not a JSON object, and the rest as "where: what".
 */
export function describeValidation(part: string, issues: readonly ValidationIssue[]): string {
  const parts: string[] = []
  for (const i of issues) {
    if (i.message === 'schema is false') continue
    const where = `${part}${(i.instancePath ?? '').replaceAll('/', '.')}`
    const extra = i.params?.additionalProperties
    if (Array.isArray(extra)) parts.push(`${where}: unknown field${extra.length > 1 ? 's' : ''} ${extra.map((k) => JSON.stringify(k)).join(', ')}`)
    else if (i.keyword === 'type' && (i.instancePath ?? '') === '' && part === 'body') parts.push('the body must be a JSON object (send Content-Type: application/json)')
    else parts.push(`${where} ${i.message ?? 'is invalid'}`)
  }
  return [...new Set(parts)].slice(0, 5).join('; ') || `${part} is invalid`
}
