import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyBaseLogger, FastifyInstance, FastifyTypeProvider, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify'
import { ERROR_CODES } from '../../common/errors.js'
import { VERSION } from '../../common/version.js'

/**
 * The API reference (issue #6): an OpenAPI 3.1 document built from the route
 * schemas as they are registered (TypeBox schemas are JSON Schema 2020-12, the
 * dialect 3.1 uses), served at /api/docs/json, with Swagger UI at /api/docs.
 *
 * The docs are public: they describe the routes, not the fleet, and a reader
 * should not need the token to learn how to send it. They are registered at
 * the root, outside the /api plugin whose hook checks the token, so that hook
 * still covers every other route under /api. Every route must be in the
 * document (test/hub.openapi.test.ts): @fastify/swagger collects routes with
 * an onRoute hook, so `registerApiDocs` must run before the routes are added.
 */

export const DOCS_PREFIX = '/api/docs'

const SECURITY_SCHEME = 'adminToken'

/** Areas of the API, in the order the reference lists them. */
const TAGS = [
  { name: 'devices', description: 'Register devices, rotate their tokens, see their presence' },
  { name: 'telemetry', description: "A device's samples (raw or downsampled) and events" },
  { name: 'commands', description: 'Ask a device, or a group, to do something now and wait for the answer' },
  { name: 'jobs', description: 'Durable work for many devices, with rollout, retries and abort rules' },
  { name: 'schedules', description: 'Cron schedules that create jobs' },
  { name: 'rules', description: 'Reactions: rules on telemetry and events that send commands, make jobs and publish events; each firing traced' },
  { name: 'observers', description: 'Read-only MQTT credentials for applications that watch the fleet' },
  { name: 'ops', description: "Dead letters, the hub's counters and health" },
  { name: 'live', description: 'Live updates for the dashboard, as Server-Sent Events' },
] as const

type Tag = (typeof TAGS)[number]['name']

/** A route's area by its URL: the first prefix that matches wins, so the specific ones come first. */
const AREA_BY_PREFIX: ReadonlyArray<readonly [string, Tag]> = [
  ['/api/devices/:id/telemetry', 'telemetry'],
  ['/api/devices/:id/events', 'telemetry'],
  ['/api/devices/:id/commands', 'commands'],
  ['/api/devices/:id/executions', 'jobs'],
  ['/api/devices/:id/firings', 'rules'],
  ['/api/devices', 'devices'],
  ['/api/commands', 'commands'],
  ['/api/jobs', 'jobs'],
  ['/api/executions', 'jobs'],
  ['/api/schedules', 'schedules'],
  ['/api/rules', 'rules'],
  ['/api/firings', 'rules'],
  ['/api/observers', 'observers'],
  ['/api/dead-letters', 'ops'],
  ['/api/stats', 'ops'],
  ['/healthz', 'ops'],
  ['/metrics', 'ops'],
  ['/api/live', 'live'],
]

/** The one error shape (app.ts's error handler); the code list is the catalogue in common/errors.ts. */
const ERROR_SCHEMA = {
  type: 'object' as const,
  required: ['error'],
  properties: {
    error: {
      type: 'object' as const,
      required: ['code', 'message'],
      properties: {
        code: { type: 'string' as const, enum: Object.keys(ERROR_CODES), description: 'Stable: match on it. Each code has one HTTP status (docs/api.md, Errors)' },
        message: { type: 'string' as const, description: 'For people; it may change' },
      },
    },
  },
}

const ERROR_RESPONSE = { $ref: '#/components/responses/Error' }

const OPERATION_KEYS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'])

interface Operation { parameters?: unknown[]; requestBody?: unknown; security?: unknown[]; responses?: Record<string, unknown> }

/**
 * The routes declare only what they take, so the document gets the error
 * responses here: 401 where the token is needed, 4XX where there is input
 * to refuse, 5XX everywhere.
 */
function addErrorResponses(paths: Record<string, Record<string, unknown> | undefined>): void {
  for (const item of Object.values(paths)) {
    for (const [key, value] of Object.entries(item ?? {})) {
      if (!OPERATION_KEYS.has(key)) continue
      const op = value as Operation
      const hasInput = (op.parameters?.length ?? 0) > 0 || op.requestBody !== undefined
      op.responses = {
        ...op.responses,
        ...((op.security?.length ?? 0) > 0 ? { 401: ERROR_RESPONSE } : {}),
        ...(hasInput ? { '4XX': ERROR_RESPONSE } : {}),
        '5XX': ERROR_RESPONSE,
      }
    }
  }
}

function areaOf(url: string): Tag | undefined {
  return AREA_BY_PREFIX.find(([prefix]) => url === prefix || url.startsWith(`${prefix}/`))?.[1]
}

export interface ApiDocsOptions {
  /** The hub option of that name: /metrics then needs no token. */
  readonly metricsPublic: boolean
}

/**
 * Same rules as the hooks that check the token: everything under /api except
 * these docs, and /metrics unless the operator made it public (api/metrics.ts).
 */
function needsToken(url: string, options: ApiDocsOptions): boolean {
  if (url === '/metrics') return !options.metricsPublic
  return url.startsWith('/api/') && !url.startsWith(DOCS_PREFIX)
}

/**
 * Registers the document and its page on the root instance. Call it before any
 * route is added; the routes' own `tags` and `security`, if they set them, win.
 */
export function registerApiDocs<L extends FastifyBaseLogger, P extends FastifyTypeProvider>(
  app: FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, L, P>,
  options: ApiDocsOptions,
): void {
  void app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'rollcall hub API',
        version: VERSION,
        description: 'The HTTP API of the rollcall hub. Routes under /api, except these docs, need the admin token '
          + '(file admin-token in the hub data dir) as `Authorization: Bearer <token>`; errors are '
          + '`{ "error": { "code", "message" } }`. Examples in curl: docs/api.md.',
      },
      tags: TAGS.map((t) => ({ ...t })),
      components: {
        schemas: { Error: ERROR_SCHEMA },
        responses: {
          Error: { description: 'An error, with a stable code', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
        },
        securitySchemes: {
          [SECURITY_SCHEME]: { type: 'http', scheme: 'bearer', description: 'The admin token, from the file admin-token in the hub data dir' },
        },
      },
    },
    transformObject: (doc) => {
      if (!('openapiObject' in doc)) return doc.swaggerObject
      addErrorResponses(doc.openapiObject.paths ?? {})
      return doc.openapiObject
    },
    transform: ({ schema, url }) => {
      const area = areaOf(url)
      return {
        url,
        schema: {
          ...schema,
          ...(schema?.tags === undefined && area !== undefined ? { tags: [area] } : {}),
          ...(schema?.security === undefined ? { security: needsToken(url, options) ? [{ [SECURITY_SCHEME]: [] }] : [] } : {}),
        },
      }
    },
  })
  void app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    // No staticCSP: its policy says upgrade-insecure-requests, which breaks the page on a hub served over plain HTTP.
    uiConfig: { docExpansion: 'list', deepLinking: true, persistAuthorization: false },
  })
}
