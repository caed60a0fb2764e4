import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { RollcallError } from '../../common/errors.js'
import { isDeviceId } from '../../protocol/ids.js'
import { parseTopics, type LiveFeed } from '../observe/live-feed.js'

export interface LiveRouteOptions {
  /** Throws DEVICE_NOT_FOUND for an unknown device (a device topic must name a registered one). */
  readonly requireDevice: (id: string) => unknown
  /** Streams open at once; one more gets 503 rather than slowing the others. */
  readonly maxStreams: number
  /** A client this far behind (bytes buffered and not yet sent) is cut off; it reconnects to a snapshot. */
  readonly maxBufferedBytes: number
}

// One event goes to every subscriber of its topic as the same object: it is serialised once.
const frames = new WeakMap<object, string>()

/** An event as the stream carries it; the same data object is serialised once for all its streams. */
export function sseFrame(event: string, data: unknown): string {
  if (typeof data !== 'object' || data === null) return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
  let frame = frames.get(data)
  if (frame === undefined) {
    frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
    frames.set(data, frame)
  }
  return frame
}

/**
 * GET /api/live: Server-Sent Events from the live feed (hub/observe/live-feed.ts).
 * It needs the admin token like the rest of /api, in the Authorization
 * header: the dashboard reads the stream with fetch(), so the token never
 * goes into a URL (and a server log). `curl -N` works the same way.
 */
export function liveRoutes(feed: LiveFeed, options: LiveRouteOptions): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get('/live', {
      schema: {
        summary: 'Live updates as Server-Sent Events: fleet changes, jobs, and stored samples of chosen devices',
        description: 'Events: `fleet` (snapshot of the devices), `devices` (rows that changed, ids removed), `jobs` (the newest jobs with their counts, when they change), '
          + '`samples` (samples of a watched device, after they are stored) and `tick` (every second, with the hub clock). Send `Accept: text/event-stream`.',
        querystring: Type.Object({ topics: Type.String({ maxLength: 1000, description: 'comma-separated: fleet, jobs, device:ID (up to 8 devices)' }) }),
      },
    }, async (req, reply) => {
      const topics = parseTopics(req.query.topics, isDeviceId)
      for (const id of topics.devices) options.requireDevice(id)
      if (feed.subscribers >= options.maxStreams) {
        throw new RollcallError('UNAVAILABLE', `${options.maxStreams} live streams are open already; close a dashboard tab or raise liveMaxStreams`)
      }
      const res = reply.raw
      reply.hijack()
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // Reverse proxies (nginx) would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      })
      res.write('retry: 2000\n\n')
      // The limit is checked before writing: a snapshot may be larger than it on its own,
      // and what counts is whether the client reads what it was sent before.
      const unsubscribe = feed.subscribe(topics, (event, data) => {
        if (res.destroyed || res.writableLength > options.maxBufferedBytes) return false
        res.write(sseFrame(event, data))
        return true
      }, () => { res.end() })
      req.raw.once('close', unsubscribe)
    })
  }
}
