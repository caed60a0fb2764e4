import type pg from 'pg'
import type { Logger } from '../../common/logger.js'
import { sampleRowOfPg, type createSampleWatchers, type PgSampleRow } from './sample-watchers.js'
import type { SampleListener } from './store.js'

/**
 * Live samples on a PostgreSQL shared by several hubs: the dashboard's chart
 * of a device gets the samples every hub stores, not only this one's. Every
 * delivery comes from one place, a read of the database: right after this
 * hub commits samples of a watched device, and every `everyMs` for what other
 * hubs stored. A read takes each of the device's streams whose mark moved
 * past what was delivered and delivers the samples between, in seq order.
 * Reads of one device run one after another, so each sample is delivered
 * once; the first one, as the watch begins, only notes the marks (what was
 * stored before is the chart's history).
 *
 * A read looks at samples timestamped in the last few minutes (or later):
 * the table is ordered by device and time, and a device's whole history must
 * not be scanned every second. Samples a device sends late with old
 * timestamps (a backlog after an outage) show in the chart's history, not
 * live; so do those past `MAX_ROWS` in one read.
 */

type Watchers = ReturnType<typeof createSampleWatchers>

interface Followed {
  /** Stream key → the seq up to which its samples were delivered; null until the first read. */
  streams: Map<number, number> | null
  /** The device's reads, one after another. */
  chain: Promise<void>
}

const WINDOW_MS = 5 * 60_000
const MAX_ROWS = 10_000

export function createSampleFollower(reads: pg.Pool, watchers: Watchers, opts: { everyMs: number }, logger: Logger) {
  const followed = new Map<string, Followed>()
  let timer: NodeJS.Timeout | undefined
  let ticking = false
  let stopped = false
  let failures = 0

  async function readDevice(deviceId: string, f: Followed): Promise<void> {
    if (stopped || followed.get(deviceId) !== f) return
    const { rows: marks } = await reads.query<{ key: number; up_to: number }>('SELECT key, up_to FROM streams WHERE device_id = $1', [deviceId])
    if (f.streams === null) {
      f.streams = new Map(marks.map((m) => [m.key, m.up_to]))
      return
    }
    for (const m of marks) {
      // A stream begun since the watch (a device re-flashed) is read from its start.
      const seen = f.streams.get(m.key) ?? 0
      if (m.up_to <= seen) continue
      const { rows } = await reads.query<PgSampleRow>(`
        SELECT k.name AS sensor, s.ts, s.seq, s.value, s.unsynced FROM samples s JOIN sensor_keys k ON k.key = s.sensor_key
        WHERE s.device_key = (SELECT key FROM device_keys WHERE id = $1) AND s.stream_key = $2 AND s.seq > $3 AND s.seq <= $4 AND s.ts >= $5
        ORDER BY s.seq LIMIT ${MAX_ROWS}`, [deviceId, m.key, seen, m.up_to, Date.now() - WINDOW_MS])
      f.streams.set(m.key, m.up_to)
      if (rows.length === 0 || stopped || followed.get(deviceId) !== f) continue
      watchers.notify(deviceId, rows.map(sampleRowOfPg))
    }
  }

  /** A read of the device after those already asked for; resolves when it is done, failed or not. */
  function read(deviceId: string): Promise<void> {
    const f = followed.get(deviceId)
    if (f === undefined) return Promise.resolve()
    const run = f.chain.then(() => readDevice(deviceId, f)).catch((err: unknown) => {
      // The next read tries again; said once in a while, not every second.
      if (failures++ % 60 === 0) logger.warn({ err, deviceId }, 'could not read the samples stored for a live chart; trying again')
    })
    f.chain = run
    return run
  }

  const readAll = async (): Promise<void> => { await Promise.all([...followed.keys()].map(read)) }

  function tick(): void {
    if (ticking || stopped || followed.size === 0) return
    ticking = true
    timer = setTimeout(() => {
      timer = undefined
      void readAll().finally(() => {
        ticking = false
        tick()
      })
    }, opts.everyMs)
    timer.unref()
  }

  return {
    /** Adds a live watcher of the device; returns the function that stops it. */
    watch(deviceId: string, listener: SampleListener): () => void {
      if (!followed.has(deviceId)) {
        followed.set(deviceId, { streams: null, chain: Promise.resolve() })
        // The streams' marks now: what is delivered is what is stored after the watch began.
        void read(deviceId)
        tick()
      }
      const unwatch = watchers.watch(deviceId, listener)
      return () => {
        unwatch()
        if (!watchers.watched(deviceId)) followed.delete(deviceId)
      }
    },
    /** This hub committed samples of these devices: the watched ones are read now. */
    committed(deviceIds: Iterable<string>): void {
      for (const id of new Set(deviceIds)) if (followed.has(id)) void read(id)
    },
    watched: (deviceId: string): boolean => followed.has(deviceId),
    /** Reads every watched device now, after the reads under way (the store's flush: what is committed has reached the watchers). */
    readAll,
    async close(): Promise<void> {
      stopped = true
      if (timer) clearTimeout(timer)
      timer = undefined
      await Promise.all([...followed.values()].map((f) => f.chain))
    },
  }
}
