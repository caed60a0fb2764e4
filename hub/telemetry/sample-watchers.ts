import type { Logger } from '../../common/logger.js'
import type { Sample } from '../../protocol/messages.js'
import type { SampleListener, SampleRow } from './store.js'

/**
 * The live watchers of each device's samples (the dashboard's charts), for
 * either telemetry store: told after each commit that stored new samples of
 * their device. A batch of an unwatched device pays one Map lookup.
 */
export function createSampleWatchers(logger: Logger) {
  const watchers = new Map<string, Set<SampleListener>>()
  return {
    /** Whether anyone watches the device now: when nobody does, a batch pays no copy. */
    watched: (deviceId: string): boolean => watchers.has(deviceId),
    /** A watcher's failure is its own: the acks and other after-commit steps still go out. */
    notify(deviceId: string, fresh: readonly SampleRow[]): void {
      for (const listener of watchers.get(deviceId) ?? []) {
        try {
          listener(fresh)
        } catch (err) {
          logger.error({ err, deviceId }, 'a sample watcher failed')
        }
      }
    },
    /** Adds a watcher; returns the function that stops it. */
    watch(deviceId: string, listener: SampleListener): () => void {
      let set = watchers.get(deviceId)
      if (!set) watchers.set(deviceId, set = new Set())
      set.add(listener)
      return () => {
        set.delete(listener)
        if (set.size === 0 && watchers.get(deviceId) === set) watchers.delete(deviceId)
      }
    },
  }
}

/** A stored sample as a watcher or a query sees it: `unsynced` only when set. */
export const sampleRow = (s: Sample): SampleRow =>
  (s.unsynced ? { sensor: s.sensor, ts: s.ts, seq: s.seq, value: s.value, unsynced: true } : { sensor: s.sensor, ts: s.ts, seq: s.seq, value: s.value })

/** A sample row read from PostgreSQL, whose `unsynced` column is true or null. */
export interface PgSampleRow { readonly sensor: string; readonly ts: number; readonly seq: number; readonly value: number; readonly unsynced: boolean | null }

export const sampleRowOfPg = (r: PgSampleRow): SampleRow => sampleRow({ sensor: r.sensor, ts: r.ts, seq: r.seq, value: r.value, ...(r.unsynced === true ? { unsynced: true } : {}) })
