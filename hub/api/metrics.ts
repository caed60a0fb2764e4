import type { FastifyPluginAsync } from 'fastify'
import { RollcallError } from '../../common/errors.js'
import type { HubMetrics } from '../observe/metrics.js'

export interface MetricsRouteOptions {
  /** Checks the Authorization header; undefined when the hub config sets `metricsPublic`. */
  readonly authorized: ((header: string | undefined) => boolean) | undefined
}

/**
 * GET /metrics in the Prometheus text format (issue #6). It sits outside /api
 * because Prometheus scrapes that path by default, but needs the same admin
 * token (Prometheus sends it with `authorization: { credentials_file: ... }`)
 * unless the operator made it public.
 */
export function metricsRoute(metrics: HubMetrics, options: MetricsRouteOptions): FastifyPluginAsync {
  return async (app) => {
    app.get('/metrics', async (req, reply) => {
      if (options.authorized && !options.authorized(req.headers.authorization)) {
        throw new RollcallError('UNAUTHORIZED', 'missing or wrong admin token: send "Authorization: Bearer <token>" (the token is in the hub data dir, file admin-token), or set the hub option metricsPublic')
      }
      const text = await metrics.scrape()
      return reply.type(metrics.contentType).send(text)
    })
  }
}
