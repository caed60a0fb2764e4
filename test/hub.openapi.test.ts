import SwaggerParser from '@apidevtools/swagger-parser'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import { VERSION } from '../common/version.js'
import { buildApi } from '../hub/api/app.js'
import { DOCS_PREFIX } from '../hub/api/openapi.js'
import { startTestHub, type TestHub } from './support/hub.js'
import { drained } from './support/leaks.js'

/**
 * The API reference (issue #6, acceptance 3): the OpenAPI document validates
 * and lists every route the app registers; the docs are public while every
 * other route under /api still needs the admin token.
 */

interface OpenApiDoc {
  openapi: string
  info: { title: string; version: string }
  tags?: Array<{ name: string }>
  paths: Record<string, Record<string, { summary?: string; responses?: Record<string, unknown>; tags?: string[]; security?: Array<Record<string, string[]>> }>>
  components?: {
    securitySchemes?: Record<string, { type: string; scheme?: string }>
    schemas?: Record<string, { properties?: { error?: { properties?: { code?: { enum?: string[] } } } } }>
  }
}

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'])

/**
 * "METHOD /path" for each route in fastify's printRoutes tree (commonPrefix
 * off: a node's text is its path after its parent's), without HEAD, which
 * fastify adds to every GET and the document leaves out.
 */
function routesOf(tree: string): string[] {
  const out: string[] = []
  const stack: string[] = []
  for (const line of tree.split('\n')) {
    const m = /^((?:│ {3}| {4})*)(?:├── |└── )(\S+)(?: \(([^)]+)\))?$/.exec(line)
    if (!m) continue
    const depth = m[1]!.length / 4
    stack.length = depth
    stack.push(m[2]!)
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
      if (method !== 'HEAD') out.push(`${method} ${stack.join('')}`)
    }
  }
  return out.sort()
}

/** "METHOD /path" for each operation in the document, with {param} written back as :param. */
function operationsOf(doc: OpenApiDoc): string[] {
  const out: string[] = []
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item).filter((k) => HTTP_METHODS.has(k))) {
      out.push(`${method.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ':$1')}`)
    }
  }
  return out.sort()
}

describe('hub API reference (OpenAPI)', () => {
  let hub: TestHub
  let base: string
  beforeAll(async () => {
    hub = await startTestHub()
    base = `http://127.0.0.1:${hub.running.httpPort}`
  })
  afterAll(async () => { await hub.stop() })

  async function fetchDoc(): Promise<OpenApiDoc> {
    const res = await fetch(`${base}${DOCS_PREFIX}/json`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/application\/json/)
    return await res.json() as OpenApiDoc
  }

  it('serves a document that validates, without the admin token', async () => {
    const doc = await fetchDoc()
    expect(doc.openapi).toMatch(/^3\.1\./)
    expect(doc.info).toMatchObject({ title: 'rollcall hub API', version: VERSION })
    // validate() dereferences the object it is given, so it gets a copy.
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeDefined()
  })

  it('lists every route the app registers, except the docs themselves', async () => {
    // The same app the hub runs, built on the test hub's services, so its route table can be read.
    const app = buildApi(hub.running.services, { adminToken: hub.running.adminToken, logger: silentLogger() })
    // Every route as it is added, with whether it hides itself from the document.
    const added: Array<{ route: string; hidden: boolean }> = []
    app.addHook('onRoute', (r) => {
      for (const m of [r.method].flat()) if (m !== 'HEAD') added.push({ route: `${m} ${r.url}`, hidden: r.schema?.hide === true })
    })
    let routes: string[]
    try {
      await app.ready()
      // The printed route table agrees with what was added.
      expect(routesOf(app.printRoutes({ commonPrefix: false })).length).toBe(new Set(added.map((a) => a.route)).size)
      // Hidden: only the docs' own files and the dashboard's (its page and files are not API).
      const hidden = [...new Set(added.filter((a) => a.hidden).map((a) => a.route))].filter((r) => !r.split(' ')[1]!.startsWith(DOCS_PREFIX)).sort()
      expect(hidden).toEqual(['GET /', 'GET /ui', 'GET /ui/*', 'GET /ui/vendor/*'])
      routes = [...new Set(added.filter((a) => !a.hidden && !a.route.split(' ')[1]!.startsWith(DOCS_PREFIX)).map((a) => a.route))].sort()
      const doc = app.swagger() as unknown as OpenApiDoc
      expect(operationsOf(doc)).toEqual(routes)
      // Each says what it does in the page's list.
      const unsummarized = Object.entries(doc.paths).flatMap(([path, item]) => Object.entries(item)
        .filter(([method, op]) => HTTP_METHODS.has(method) && !op.summary).map(([method]) => `${method} ${path}`))
      expect(unsummarized).toEqual([])
    } finally {
      await app.close()
    }
    expect(routes.length).toBeGreaterThan(25)
    expect(routes).toContain('GET /healthz')
    expect(routes).toContain('POST /api/devices/:id/commands')
    // The running hub's document has them all too (and may hold more, from options the test app leaves out).
    expect(operationsOf(await fetchDoc())).toEqual(expect.arrayContaining(routes))
  })

  it('tags every operation with its area and marks the /api ones as needing the bearer token', async () => {
    const doc = await fetchDoc()
    expect(doc.components?.securitySchemes?.adminToken).toMatchObject({ type: 'http', scheme: 'bearer' })
    expect(doc.components?.schemas?.Error?.properties?.error?.properties?.code?.enum).toEqual(expect.arrayContaining(['UNAUTHORIZED', 'BAD_REQUEST', 'DEVICE_OFFLINE']))
    const areas = new Set((doc.tags ?? []).map((t) => t.name))
    expect([...areas].sort()).toEqual(['commands', 'devices', 'jobs', 'live', 'observers', 'ops', 'rules', 'schedules', 'telemetry'])
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item).filter(([k]) => HTTP_METHODS.has(k))) {
        const where = `${method.toUpperCase()} ${path}`
        expect(op.tags, where).toHaveLength(1)
        expect(areas.has(op.tags![0]!), where).toBe(true)
        const needsToken = path.startsWith('/api/') || path === '/metrics'
        if (needsToken) expect(op.security, where).toEqual([{ adminToken: [] }])
        // Successes are the default 200; errors are described, in their one shape.
        expect(op.responses?.['200'], where).toBeDefined()
        expect(op.responses?.['5XX'], where).toEqual({ $ref: '#/components/responses/Error' })
        if (needsToken) expect(op.responses?.['401'], where).toEqual({ $ref: '#/components/responses/Error' })
      }
    }
    expect(doc.paths['/api/devices/{id}/telemetry']?.get?.tags).toEqual(['telemetry'])
    expect(doc.paths['/api/devices/{id}/commands']?.post?.tags).toEqual(['commands'])
    expect(doc.paths['/healthz']?.get?.security).toEqual([])
    // The test hub keeps the default: /metrics behind the token.
    expect(doc.paths['/metrics']?.get?.tags).toEqual(['ops'])
  })

  it('serves a readable page at /api/docs without the token', async () => {
    const res = await fetch(`${base}${DOCS_PREFIX}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/text\/html/)
    const html = await res.text()
    expect(html).toMatch(/swagger-ui/i)
    // The page's own script and style load without the token too.
    const asset = /<script src="([^"]*swagger-ui-bundle\.js)"/.exec(html)?.[1]
    expect(asset).toBeDefined()
    const js = await fetch(new URL(asset!, `${base}${DOCS_PREFIX}/`)).then(drained)
    expect(js.status).toBe(200)
    const yaml = await fetch(`${base}${DOCS_PREFIX}/yaml`)
    expect(yaml.status).toBe(200)
    expect(await yaml.text()).toMatch(/^openapi: 3\.1\./)
  })

  it('leaves every route under /api but the docs, and /metrics, behind the token', async () => {
    const doc = await fetchDoc()
    let checked = 0
    for (const [path, item] of Object.entries(doc.paths)) {
      if (!path.startsWith('/api/') && path !== '/metrics') continue
      for (const method of Object.keys(item).filter((k) => HTTP_METHODS.has(k))) {
        // The token is checked before the request is parsed, so placeholder ids and no body will do.
        const res = await fetch(`${base}${path.replace(/\{[^}]+\}/g, 'x')}`, { method: method.toUpperCase() })
        expect(res.status, `${method} ${path}`).toBe(401)
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED')
        checked++
      }
    }
    expect(checked).toBeGreaterThan(25)
    expect((await hub.api('GET', '/api/devices')).status).toBe(200)
  })
})
