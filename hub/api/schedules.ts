import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { HubServices } from './services.js'
import { JobTemplateBody, templateOf } from './jobs.js'

/**
 * Cron schedules that create jobs (issue #3). A schedule's job takes the same
 * fields as POST /api/jobs, except that its expiry is relative to each tick
 * (`expiresIn`), never an absolute `expiresAt`.
 */

const ScheduleParams = Type.Object({ nameOrId: Type.String({ maxLength: 64 }) })

export function scheduleRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/schedules', {
      schema: {
        summary: 'Create a cron schedule that creates a job at each tick',
        body: Type.Object({
          name: Type.String({ maxLength: 64 }),
          cron: Type.String({ maxLength: 200 }),
          timezone: Type.Optional(Type.String({ maxLength: 64 })),
          job: JobTemplateBody,
        }, { additionalProperties: false }),
      },
    }, async (req, reply) => {
      const b = req.body
      const schedule = await s.schedules.add({ name: b.name, cron: b.cron, timezone: b.timezone, job: templateOf(b.job, 'job.') })
      return reply.status(201).send(schedule)
    })

    app.get('/schedules', { schema: { summary: 'List schedules' } }, async () => ({ schedules: await s.schedules.list() }))

    app.get('/schedules/:nameOrId', { schema: { summary: 'Show a schedule', params: ScheduleParams } }, async (req) => s.schedules.get(req.params.nameOrId))

    app.delete('/schedules/:nameOrId', { schema: { summary: 'Remove a schedule', params: ScheduleParams } }, async (req, reply) => {
      await s.schedules.remove(req.params.nameOrId)
      return reply.status(204).send()
    })
  }
}
