import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { HubServices } from './services.js'

/** Dead letters and the hub's own counters. */
export function opsRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/dead-letters', {
      schema: {
        summary: 'Dead letters (messages the hub refused) and their counts by reason',
        querystring: Type.Object({
          device: Type.Optional(Type.String({ maxLength: 64 })),
          before: Type.Optional(Type.Integer({ minimum: 1 })),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
        }),
      },
    }, async (req) => ({
      deadLetters: await s.deadLetters.list({ deviceId: req.query.device, beforeId: req.query.before, limit: req.query.limit ?? 100 }),
      countsByReason: s.deadLetters.countsByReason(),
    }))

    app.get('/stats', { schema: { summary: "The hub's counters" } }, async () => s.stats())
  }
}
