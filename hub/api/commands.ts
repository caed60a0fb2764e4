import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { RollcallError } from '../../common/errors.js'
import type { CommandSpec } from '../commands/commands.js'
import type { HubServices } from './services.js'
import { durationOf } from './jobs.js'
import type { OutcomeCode } from '../../protocol/outcome-codes.js'

/**
 * Commands over HTTP (issue #4). One device: the reply is the device's
 * outcome (200, `ok` true or false), or the hub's reason there is none:
 * DEVICE_OFFLINE (409, at once), COMMAND_TIMEOUT (504), DEVICE_DISCONNECTED
 * (502). With ifOffline "queue", an offline device's command becomes a job
 * (202). A group command answers 200 with each member's outcome and who was
 * skipped.
 */

const COMMAND_FIELDS = {
  name: Type.String({ maxLength: 64 }),
  args: Type.Optional(Type.Unknown()),
  timeout: Type.Optional(Type.String({ maxLength: 32 })),
  timeoutMs: Type.Optional(Type.Integer()),
  ifOffline: Type.Optional(Type.Union([Type.Literal('fail'), Type.Literal('queue')])),
}
const CommandBody = Type.Object(COMMAND_FIELDS, { additionalProperties: false })
const GroupBody = Type.Object({ target: Type.String({ maxLength: 700_000 }), ...COMMAND_FIELDS }, { additionalProperties: false })

function specOf(b: { name: string; args?: unknown; timeout?: string; timeoutMs?: number; ifOffline?: 'fail' | 'queue' }): CommandSpec {
  if (b.timeout !== undefined && b.timeoutMs !== undefined) throw new RollcallError('BAD_REQUEST', 'send timeout ("5s") or timeoutMs (5000), not both')
  const timeoutMs = b.timeout !== undefined ? durationOf('timeout', b.timeout, 1, '5s') : b.timeoutMs
  return { name: b.name, ...(b.args !== undefined ? { args: b.args } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(b.ifOffline ? { ifOffline: b.ifOffline } : {}) }
}

export function commandRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/devices/:id/commands', {
      schema: { summary: 'Send a command to a device and wait for its reply', params: Type.Object({ id: Type.String({ maxLength: 64 }) }), body: CommandBody },
    }, async (req, reply) => {
      const o = await s.commands.send(req.params.id, specOf(req.body))
      switch (o.status) {
        case 'queued':
          return reply.status(202).send(o)
        case 'succeeded':
          return { ...o, ok: true }
        case 'failed':
          return { ...o, ok: false }
        case 'timed_out':
          throw new RollcallError('COMMAND_TIMEOUT', o.error.message, { id: o.id, deviceId: o.deviceId })
        case 'disconnected':
          if (o.error.code === ('HUB_STOPPING' satisfies OutcomeCode)) throw new RollcallError('UNAVAILABLE', o.error.message, { id: o.id, deviceId: o.deviceId })
          throw new RollcallError('DEVICE_DISCONNECTED', o.error.message, { id: o.id, deviceId: o.deviceId })
        default: {
          const never: never = o
          return never
        }
      }
    })

    app.post('/commands', { schema: { summary: 'Send a command to a group or a list of devices and wait for their replies', body: GroupBody } }, async (req) => {
      const { target, ...rest } = req.body
      return s.commands.sendGroup(target, specOf(rest))
    })

    app.get('/commands/:id', { schema: { summary: "Show a command, or a group command's members", params: Type.Object({ id: Type.String({ maxLength: 64 }) }) } }, async (req) => {
      try {
        return await s.commands.get(req.params.id)
      } catch (err) {
        // A group command's id names its members' records.
        const members = await s.commands.ofGroup(req.params.id)
        if (members.length === 0) throw err
        return { groupId: req.params.id, commands: members }
      }
    })

    app.get('/devices/:id/commands', {
      schema: {
        summary: "A device's recent commands",
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }),
      },
    }, async (req) => ({ commands: await s.commands.ofDevice(req.params.id, req.query.limit ?? 50) }))
  }
}
