import type { DeviceEvent, Sample } from '../../protocol/messages.js'
import type { AfterCommit, OnFailed } from '../storage/group-commit.js'

/**
 * What every telemetry store does, whichever database holds it: the hub's
 * own SQLite file (sqlite.ts) or a PostgreSQL shared by several hubs
 * (postgres.ts). The rest of the hub sees only this.
 *
 * Exactly-once storage: a batch's rows and the advance of its stream's
 * high-water mark commit in the same transaction, and only seq > mark is
 * stored, so a replay after any crash (agent, hub, network) is dropped as a
 * duplicate. The mark is cumulative because the agent sends in seq order and
 * replays from its oldest unacknowledged row; a batch whose `prev` is above
 * the mark is refused (an earlier one was lost on the way), so an ack never
 * covers a gap. After the commit, an ack with the new mark goes to the sink
 * given to `onAcks`, also when everything was a duplicate, so the agent can
 * let go.
 */

export interface StoredAck {
  readonly deviceId: string
  readonly storeId: string
  readonly upTo: number
}

export interface TelemetryQuery {
  readonly deviceId: string
  readonly sensor?: string | undefined
  readonly sinceMs: number
  readonly untilMs: number
  /** Downsample into buckets of this width (avg/min/max/count per sensor and bucket). */
  readonly bucketMs?: number | undefined
  readonly limit: number
}

/** `unsynced`: ts is the device's own clock, unchecked against the hub's (docs/protocol.md, "Clocks"); absent otherwise. */
export interface SampleRow { readonly sensor: string; readonly ts: number; readonly seq: number; readonly value: number; readonly unsynced?: true }
export interface EventRow { readonly ts: number; readonly seq: number; readonly kind: string; readonly level: string; readonly message: string; readonly data: unknown }
export interface BucketRow { readonly sensor: string; readonly ts: number; readonly count: number; readonly avg: number; readonly min: number; readonly max: number }

/**
 * What reacts to a batch inside the write that stores it (the rules): called
 * with the items above the stream's mark, in seq order, so a replay never
 * reaches it; what it writes commits with the batch, and what it returns runs
 * after the commit.
 */
export interface StoredReaction {
  /** Whether anything reacts to this kind now: when nothing does, a batch pays no copy. */
  watching(kind: 'samples' | 'events'): boolean
  samples(deviceId: string, storeId: string, samples: readonly Sample[], now: number): AfterCommit | void
  events(deviceId: string, storeId: string, events: readonly DeviceEvent[], now: number): AfterCommit | void
}

/** Samples of one device just committed, for live views (the dashboard). */
export type SampleListener = (samples: readonly SampleRow[]) => void

export interface IngestCounters {
  samplesStored: number
  samplesDuplicate: number
  eventsStored: number
  eventsDuplicate: number
  batches: number
  /** Batches refused because the mark was below their `prev`: an earlier batch was lost on the way. */
  gapsRefused: number
}

export interface StreamRow { readonly storeId: string; readonly upTo: number; readonly updatedAt: number }

export interface TelemetryStore {
  /** Stores a batch of samples (see above); `onFailed` hears after the commit that this batch's write failed on its own (no ack is sent for it). */
  storeSamples(deviceId: string, storeId: string, prev: number, now: number, samples: readonly Sample[], onFailed?: OnFailed): void
  storeEvents(deviceId: string, storeId: string, prev: number, now: number, events: readonly DeviceEvent[], onFailed?: OnFailed): void
  /**
   * Sends the stream's mark as an ack once everything written before this
   * call is durable (an agent asking where to resume): never a mark that
   * covers rows not yet durable.
   */
  announceMark(deviceId: string, storeId: string): void
  /** A stream's committed mark (0 for a stream never written). */
  markOf(deviceId: string, storeId: string): Promise<number>
  /** What reacts to each stored batch inside its write (the rules; see StoredReaction). */
  reactWith(r: StoredReaction): void
  /** Where acks go after each commit (the hub publishes them on telemetry/ack). */
  onAcks(sink: (acks: StoredAck[]) => void): void
  counters(): Readonly<IngestCounters>
  /**
   * Calls `listener` after each commit that stored new samples of the
   * device through this hub (duplicates never reach it), and on a database
   * shared by several hubs with those the others stored, read from it
   * within a second (follow-others.ts); returns the function that stops it.
   */
  watchSamples(deviceId: string, listener: SampleListener): () => void
  /** The device's streams, most recently written first. */
  streamsOf(deviceId: string): Promise<StreamRow[]>
  query(q: TelemetryQuery): Promise<SampleRow[] | BucketRow[]>
  /** A device's events in a time range, newest first. */
  events(deviceId: string, sinceMs: number, untilMs: number, limit: number): Promise<EventRow[]>
  /** A device's events of one kind in a time range, oldest first. */
  eventsOfKind(deviceId: string, kind: string, sinceMs: number, untilMs: number, limit: number): Promise<EventRow[]>
  /** Deletes samples and events older than the cutoff, in chunks that let the hub go on working. */
  prune(cutoffMs: number, chunkRows?: number): Promise<{ samples: number; events: number }>
}
