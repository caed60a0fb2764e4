import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { DEVICE_ID_PATTERN, DEVICE_ID_RULE, SENSOR_NAME_PATTERN, isDeviceId } from '../../protocol/ids.js'
import { RollcallError } from '../../common/errors.js'
import { summarize, type HubServices } from './services.js'
import { parseDurationParam, parseRange, parseTimeParam } from './time-params.js'

const DeviceParams = Type.Object({ id: Type.String({ maxLength: 64 }) })

export function deviceRoutes(s: HubServices): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post('/devices', {
      schema: {
        summary: 'Register a device and get its MQTT token (shown once)',
        body: Type.Object({
          id: Type.String({ maxLength: 64 }),
          group: Type.Optional(Type.String({ maxLength: 64 })),
        }, { additionalProperties: false }),
      },
    }, async (req, reply) => {
      const { device, token } = await s.addDevice(req.body.id, req.body.group ?? null)
      return reply.status(201).send({ ...device, token, username: device.id, clientId: device.id })
    })

    // Many devices in one request (the simulator, provisioning scripts). An id that exists
    // gets a new token when `existing` is "rotate", and fails the request otherwise.
    app.post('/devices/bulk', {
      schema: {
        summary: 'Register many devices at once, or give existing ones new tokens',
        body: Type.Object({
          devices: Type.Array(Type.Object({
            id: Type.String({ maxLength: 64 }),
            group: Type.Optional(Type.String({ maxLength: 64 })),
          }, { additionalProperties: false }), { minItems: 1, maxItems: 10_000 }),
          existing: Type.Optional(Type.Union([Type.Literal('fail'), Type.Literal('rotate')])),
        }, { additionalProperties: false }),
      },
    }, async (req) => {
      // Checked first, so a bad request creates nothing.
      const ids = req.body.devices.map((d) => d.id)
      const bad = ids.find((id) => !isDeviceId(id))
      if (bad !== undefined) throw new RollcallError('INVALID_DEVICE_ID', `invalid device id ${JSON.stringify(bad)}: ${DEVICE_ID_RULE}`)
      const repeated = ids.find((id, i) => ids.indexOf(id) !== i)
      if (repeated !== undefined) throw new RollcallError('BAD_REQUEST', `device "${repeated}" is listed twice`)
      if (req.body.existing !== 'rotate') {
        const taken = ids.filter((id) => s.registry.getDevice(id) !== undefined)
        if (taken.length > 0) throw new RollcallError('DEVICE_EXISTS', `${taken.length} device(s) exist already, e.g. "${taken[0]}"; send "existing": "rotate" to give them new tokens`)
      }
      const out: Array<{ id: string; token: string; created: boolean }> = []
      for (const d of req.body.devices) {
        if (req.body.existing === 'rotate' && s.registry.getDevice(d.id)) {
          out.push({ id: d.id, token: await s.rotateDeviceToken(d.id), created: false })
          continue
        }
        out.push({ id: d.id, token: (await s.addDevice(d.id, d.group ?? null)).token, created: true })
      }
      return { devices: out }
    })

    app.get('/devices', {
      schema: { summary: 'List devices with their presence, optionally one group', querystring: Type.Object({ group: Type.Optional(Type.String()) }) },
    }, async (req) => {
      const all = s.registry.listDevices()
      const devices = (req.query.group === undefined ? all : all.filter((d) => d.group === req.query.group)).map((d) => summarize(s, d))
      return { devices }
    })

    app.get('/devices/:id', { schema: { summary: 'Show a device, its presence and its telemetry streams', params: DeviceParams } }, async (req) => {
      const d = s.registry.requireDevice(req.params.id)
      return { ...summarize(s, d), streams: await s.telemetry.streamsOf(d.id) }
    })

    app.delete('/devices/:id', { schema: { summary: 'Remove a device', params: DeviceParams } }, async (req, reply) => {
      await s.removeDevice(req.params.id)
      return reply.status(204).send()
    })

    app.post('/devices/:id/token', { schema: { summary: "Give a device a new token (the old one stops working)", params: DeviceParams } }, async (req) => {
      return { id: req.params.id, token: await s.rotateDeviceToken(req.params.id) }
    })

    app.get('/devices/:id/telemetry', {
      schema: {
        summary: "A device's samples in a time range, raw or downsampled into buckets",
        params: DeviceParams,
        querystring: Type.Object({
          sensor: Type.Optional(Type.String({ pattern: SENSOR_NAME_PATTERN })),
          since: Type.Optional(Type.String()),
          until: Type.Optional(Type.String()),
          bucket: Type.Optional(Type.String()),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
        }),
      },
    }, async (req) => {
      const d = s.registry.requireDevice(req.params.id)
      const now = s.clock.now()
      const q = req.query
      const { sinceMs, untilMs } = parseRange(q, now, now - 3_600_000)
      const bucketMs = q.bucket === undefined ? undefined : parseDurationParam('bucket', q.bucket)
      const limit = q.limit ?? 10_000
      // One row more than asked tells whether the range held more than the limit.
      const rows = await s.telemetry.query({ deviceId: d.id, sensor: q.sensor, sinceMs, untilMs, bucketMs, limit: limit + 1 })
      const truncated = rows.length > limit
      const page = truncated ? rows.slice(0, limit) : rows
      // The units the device declared, so a chart can label its axis without another request.
      const units = s.presence.get(d.id)?.info.units ?? {}
      return bucketMs === undefined
        ? { deviceId: d.id, sinceMs, untilMs, truncated, units, samples: page }
        : { deviceId: d.id, sinceMs, untilMs, bucketMs, truncated, units, buckets: page }
    })

    app.get('/devices/:id/events', {
      schema: {
        summary: "A device's events in a time range",
        params: DeviceParams,
        querystring: Type.Object({
          since: Type.Optional(Type.String()),
          until: Type.Optional(Type.String()),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
        }),
      },
    }, async (req) => {
      const d = s.registry.requireDevice(req.params.id)
      const { sinceMs, untilMs } = parseRange(req.query, s.clock.now(), s.clock.now() - 86_400_000)
      return { deviceId: d.id, sinceMs, untilMs, events: await s.telemetry.events(d.id, sinceMs, untilMs, req.query.limit ?? 100) }
    })

    app.get('/devices/:id/presence', {
      schema: {
        summary: "A device's presence now and its history",
        params: DeviceParams,
        querystring: Type.Object({
          since: Type.Optional(Type.String()),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
        }),
      },
    }, async (req) => {
      const d = s.registry.requireDevice(req.params.id)
      const now = s.clock.now()
      const sinceMs = req.query.since === undefined ? 0 : parseTimeParam('since', req.query.since, now)
      return { deviceId: d.id, current: s.presence.get(d.id) ?? null, history: await s.presence.history(d.id, sinceMs, req.query.limit ?? 100) }
    })
  }
}

export { DEVICE_ID_PATTERN }
