import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { OBSERVER_USER_PREFIX } from '../../protocol/ids.js'
import type { HubServices } from './services.js'

/** Observers: read-only MQTT credentials for applications that watch the fleet. */
export function observerRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/observers', {
      schema: { summary: 'Create an observer: read-only MQTT credentials (the token is shown once)', body: Type.Object({ name: Type.String({ maxLength: 64 }) }, { additionalProperties: false }) },
    }, async (req, reply) => {
      const { observer, token } = await s.addObserver(req.body.name)
      return reply.status(201).send({
        ...observer, token, username: `${OBSERVER_USER_PREFIX}${observer.name}`,
        topics: ['devices/+/telemetry', 'devices/+/state', 'devices/+/events'],
      })
    })

    app.get('/observers', { schema: { summary: 'List observers' } }, async () => ({
      observers: s.registry.listObservers().map((o) => ({ ...o, username: `${OBSERVER_USER_PREFIX}${o.name}` })),
    }))

    app.delete('/observers/:name', { schema: { summary: 'Remove an observer', params: Type.Object({ name: Type.String({ maxLength: 64 }) }) } }, async (req, reply) => {
      await s.removeObserver(req.params.name)
      return reply.status(204).send()
    })
  }
}
