import type pg from 'pg'
import type { Logger } from '../../common/logger.js'
import type { createSampleWatchers } from './sample-watchers.js'
import type { SampleListener, SampleRow } from './store.js'

/**
 * Live samples on a PostgreSQL shared by several hubs: the dashboard's chart
 * of a device gets the samples every hub stores, not only this one's. What
 * this hub stores reaches the watchers at once, after its commit; what other
 * hubs store is read from the database every `everyMs` while the device is
 * watched: each of its streams whose mark moved past what was delivered is
 * read above that point. A sample is delivered once, whichever way it came:
 * per stream, everything up to `seen` was delivered, and the ranges this hub
 * delivered above it are remembered until the next read passes them.
 *
 * The read is bounded in time (from a minute before the newest sample
 * delivered): samples a device stored late with old timestamps (a backlog
 * drained after an outage) are left to the chart's history, which reads the
 * table.
 */

interface Stream {
  /** Every seq up to here was delivered. */
  seen: number
  /** Ranges [from, to] this hub delivered above `seen`. */
  own: Array<readonly [number, number]>
  /** Samples older than this are not read again (ms). */
  tsFloor: number
}

interface Followed {
  /** Null until the device's streams were first read: then every stream starts at its mark, nothing older is delivered. */
  streams: Map<number, Stream> | null
  /** What this hub delivered before that first read: not delivered again if the read's marks were older. */
  early: Array<{ readonly streamKey: number; readonly from: number; readonly to: number }>
}

type Watchers = ReturnType<typeof createSampleWatchers>

const LOOK_BACK_MS = 60_000

export function createSampleFollower(reads: pg.Pool, watchers: Watchers, opts: { everyMs: number }, logger: Logger) {
  const followed = new Map<string, Followed>()
  let timer: NodeJS.Timeout | undefined
  let reading: Promise<void> | undefined
  let stopped = false
  let failures = 0

  const deliver = (deviceId: string, rows: readonly SampleRow[]) => { if (rows.length > 0) watchers.notify(deviceId, rows) }
  const isOwn = (s: Stream, seq: number) => s.own.some(([from, to]) => seq >= from && seq <= to)

  async function readDevice(deviceId: string, f: Followed): Promise<void> {
    const { rows: marks } = await reads.query<{ key: number; up_to: number }>('SELECT key, up_to FROM streams WHERE device_id = $1', [deviceId])
    if (f.streams === null) {
      f.streams = new Map(marks.map((m) => [m.key, { seen: m.up_to, own: [], tsFloor: Date.now() - LOOK_BACK_MS }]))
      for (const e of f.early) {
        const s = f.streams.get(e.streamKey)
        if (s !== undefined && e.to > s.seen) s.own.push([e.from, e.to])
      }
      f.early = []
      return
    }
    for (const m of marks) {
      let s = f.streams.get(m.key)
      // A stream begun since the watch (a device re-flashed): from its start.
      if (!s) f.streams.set(m.key, s = { seen: 0, own: [], tsFloor: Date.now() - LOOK_BACK_MS })
      if (m.up_to <= s.seen) continue
      const { rows } = await reads.query<{ sensor: string; ts: number; seq: number; value: number; unsynced: boolean | null }>(`
        SELECT k.name AS sensor, s.ts, s.seq, s.value, s.unsynced FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
        WHERE s.device_key = (SELECT key FROM device_keys WHERE id = $1) AND s.stream_key = $2 AND s.seq > $3 AND s.seq <= $4 AND s.ts >= $5
        ORDER BY s.ts, s.seq`, [deviceId, m.key, s.seen, m.up_to, s.tsFloor])
      const stream = s
      const fresh = rows.filter((r) => !isOwn(stream, r.seq))
        .map((r): SampleRow => (r.unsynced === true ? { sensor: r.sensor, ts: r.ts, seq: r.seq, value: r.value, unsynced: true } : { sensor: r.sensor, ts: r.ts, seq: r.seq, value: r.value }))
      s.seen = m.up_to
      s.own = s.own.filter(([, to]) => to > m.up_to)
      if (rows.length > 0) s.tsFloor = Math.max(s.tsFloor, Math.max(...rows.map((r) => r.ts)) - LOOK_BACK_MS)
      if (followed.get(deviceId) === f) deliver(deviceId, fresh)
    }
  }

  function schedule(): void {
    if (stopped || timer || followed.size === 0) return
    timer = setTimeout(() => {
      timer = undefined
      reading = (async () => {
        for (const [deviceId, f] of [...followed]) {
          try {
            await readDevice(deviceId, f)
          } catch (err) {
            // The next read tries again; said once in a while, not every second.
            if (failures++ % 60 === 0) logger.warn({ err, deviceId }, 'could not read the samples other hubs stored for a live chart; trying again')
          }
        }
      })().finally(() => { reading = undefined; schedule() })
    }, opts.everyMs)
    timer.unref()
  }

  return {
    /** Adds a live watcher of the device; returns the function that stops it. */
    watch(deviceId: string, listener: SampleListener): () => void {
      if (!followed.has(deviceId)) {
        const f: Followed = { streams: null, early: [] }
        followed.set(deviceId, f)
        // The streams' marks now, so what is delivered is what comes after the watch began.
        void readDevice(deviceId, f).catch((err: unknown) => { logger.warn({ err, deviceId }, 'could not read a watched device\'s streams; tried at the next read') })
        schedule()
      }
      const unwatch = watchers.watch(deviceId, listener)
      return () => {
        unwatch()
        if (!watchers.watched(deviceId)) followed.delete(deviceId)
      }
    },
    /** This hub committed `rows` of the device's stream `streamKey` above `prev`: delivered now, and not again by a read. */
    stored(deviceId: string, streamKey: number, prev: number, rows: readonly SampleRow[]): void {
      const f = followed.get(deviceId)
      if (!f || rows.length === 0) return
      const top = Math.max(...rows.map((r) => r.seq))
      const s = f.streams?.get(streamKey)
      if (s !== undefined) {
        if (prev <= s.seen) s.seen = Math.max(s.seen, top)
        else s.own.push([prev + 1, top])
      } else if (f.streams !== null) {
        f.streams.set(streamKey, { seen: prev <= 0 ? top : 0, own: prev <= 0 ? [] : [[prev + 1, top]], tsFloor: Date.now() - LOOK_BACK_MS })
      } else {
        f.early.push({ streamKey, from: prev + 1, to: top })
      }
      deliver(deviceId, rows)
    },
    watched: (deviceId: string): boolean => followed.has(deviceId),
    async close(): Promise<void> {
      stopped = true
      if (timer) clearTimeout(timer)
      timer = undefined
      await reading
    },
  }
}
