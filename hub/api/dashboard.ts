import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync } from 'fastify'
import { RollcallError } from '../../common/errors.js'
import { PACKAGE_ROOT } from '../../common/version.js'

/**
 * The dashboard's files (issue #6): the page, its script modules compiled
 * from hub/ui by `npm run build` into dist/hub/ui, and uPlot for the charts
 * from node_modules. They are public and hold no data: the page asks for the
 * admin token and sends it with every /api call.
 *
 *   /          -> /ui/
 *   /ui/       index.html, app.js, *.js, style.css
 *   /ui/vendor uPlot (minified script and its stylesheet)
 */
export function dashboardRoutes(): FastifyPluginAsync {
  const uiDir = join(PACKAGE_ROOT ?? '.', 'dist', 'hub', 'ui')
  const uplotDir = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'))
  return async (app) => {
    if (!existsSync(join(uiDir, 'index.html'))) {
      app.log.warn({ uiDir }, 'the dashboard is not built (run npm run build); /ui answers 503')
      app.get('/ui/*', { schema: { hide: true } }, async () => {
        throw new RollcallError('UNAVAILABLE', 'the dashboard is not built: run npm run build')
      })
    } else {
      await app.register(fastifyStatic, {
        root: uiDir, prefix: '/ui/', decorateReply: false, index: 'index.html', cacheControl: true, maxAge: 0,
        // The page itself must never be cached stale across an upgrade; modules revalidate by ETag.
        setHeaders: (res) => {
          res.setHeader('cache-control', 'no-cache')
          for (const [k, v] of Object.entries(PAGE_HEADERS)) res.setHeader(k, v)
        },
      })
    }
    await app.register(fastifyStatic, {
      root: uplotDir, prefix: '/ui/vendor/', decorateReply: false, index: false, maxAge: '1d',
      allowedPath: (path) => path === '/uPlot.iife.min.js' || path === '/uPlot.min.css',
    })
    app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'))
    app.get('/ui', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/'))
  }
}

/**
 * The page loads only its own files and talks only to its own hub, runs no
 * inline script or style (sizes set from script go through the CSSOM), and
 * may not be framed (clickjacking).
 */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
}
