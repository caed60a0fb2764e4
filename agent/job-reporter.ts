import type { Clock, ClockTimer } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { LIMITS } from '../protocol/limits.js'
import type { JobsAck } from '../protocol/messages.js'
import { topics } from '../protocol/topics.js'
import type { JobQueue } from './job-queue.js'
import type { JobUpdateRow } from './job-store.js'

/**
 * Sends the ledger's job updates to the hub and deletes each one the hub's
 * jobs.ack names (persist first, delete on the peer's ack).
 *
 * States (per connection):
 *   offline  -> sending   connected: the cursor goes back to the start, so
 *                         everything unacked is sent again, in id order
 *   sending: send JobsUpdate batches (<= LIMITS.maxJobsPerBatch updates and
 *            <= batchMaxBytes) while fewer than `inflightBatches` are
 *            unacked; a batch is done when the acks named all its ids; no
 *            ack for `ackTimeoutMs` with batches in flight rewinds the cursor
 *            to the start and resends
 *   sending  -> offline   disconnected: in-flight batches are forgotten (their
 *                         rows are still in the ledger)
 *
 * Resending is always safe: the hub applies updates idempotently by version
 * and acks duplicates. Acks are per id, not cumulative, because the hub may
 * settle updates of different executions independently.
 */

export interface ReporterTransport {
  isConnected(): boolean
  /** QoS 1 publish; false when not connected. */
  publish(topic: string, payload: string): boolean
}

export interface JobReporterOptions {
  readonly deviceId: string
  readonly storeId: string
  readonly inflightBatches: number
  readonly batchMaxBytes: number
  readonly ackTimeoutMs: number
  readonly logger: Logger
  /** Whose timer runs the ack timeout (a test's manual clock). */
  readonly clock: Clock
}

export interface JobReporterStats {
  readonly inflightBatches: number
  readonly batchesSent: number
  readonly updatesSent: number
  readonly updatesAcked: number
  readonly refused: number
  readonly ackTimeouts: number
}

/** `{"id":` + `,` + a comma between items. */
const ROW_OVERHEAD_BYTES = 8

export class JobReporter {
  private readonly queue: JobQueue
  private readonly transport: ReporterTransport
  private readonly options: JobReporterOptions
  private readonly log: Logger
  private readonly topic: string
  private readonly head: string
  /** Unacked ids of each batch in flight, oldest first. */
  private inflight: Array<Set<number>> = []
  private sentUpTo = 0
  private running = false
  private wakeHandle: NodeJS.Immediate | undefined
  private ackTimer: ClockTimer | undefined
  private unsubscribe: (() => void) | undefined
  private batchesSent = 0
  private updatesSent = 0
  private updatesAcked = 0
  private refused = 0
  private ackTimeouts = 0

  constructor(queue: JobQueue, transport: ReporterTransport, options: JobReporterOptions) {
    this.queue = queue
    this.transport = transport
    this.options = options
    this.log = options.logger.child({ component: 'job-reporter' })
    this.topic = topics.jobsUpdate(options.deviceId)
    // storeId matches ^[A-Za-z0-9-]+$: no escaping needed.
    this.head = `{"type":"jobs.update","v":1,"storeId":"${options.storeId}","updates":[`
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.unsubscribe = this.queue.onUpdate(() => { this.wake() })
    if (this.transport.isConnected()) this.onConnected()
  }

  stop(): void {
    this.running = false
    this.unsubscribe?.()
    this.unsubscribe = undefined
    this.reset()
  }

  onConnected(): void {
    this.reset()
    this.pump()
  }

  onDisconnected(): void {
    this.reset()
  }

  /** The hub's jobs.ack (its storeId already checked by the caller). */
  onAck(ack: JobsAck): void {
    for (const r of ack.refused ?? []) {
      this.refused++
      // STALE_VERSION is normal after a cancel or a retry the device had not heard of yet.
      const detail = { id: r.id, code: r.code }
      if (r.code === 'STALE_VERSION') this.log.info(detail, 'the hub refused a job update as stale')
      else this.log.warn(detail, 'the hub refused a job update')
    }
    if (ack.ids.length === 0) return
    try {
      this.updatesAcked += this.queue.ackUpdates(ack.ids)
    } catch (err) {
      this.log.error({ err }, 'could not delete acked job updates; they will be sent again')
    }
    let progressed = false
    for (const id of ack.ids) {
      for (const batch of this.inflight) {
        if (batch.delete(id)) {
          progressed = true
          break
        }
      }
    }
    if (!progressed) return
    this.inflight = this.inflight.filter((b) => b.size > 0)
    // Progress restarts the ack timeout.
    this.options.clock.clearTimer(this.ackTimer)
    this.ackTimer = undefined
    this.pump()
  }

  stats(): JobReporterStats {
    return {
      inflightBatches: this.inflight.length,
      batchesSent: this.batchesSent,
      updatesSent: this.updatesSent,
      updatesAcked: this.updatesAcked,
      refused: this.refused,
      ackTimeouts: this.ackTimeouts,
    }
  }

  private wake(): void {
    if (!this.running || this.wakeHandle || !this.transport.isConnected()) return
    // Updates written in one tick (a flush of many completions) leave together.
    this.wakeHandle = setImmediate(() => {
      this.wakeHandle = undefined
      this.pump()
    })
  }

  private pump(): void {
    if (!this.running || !this.transport.isConnected()) return
    while (this.inflight.length < this.options.inflightBatches) {
      let rows: JobUpdateRow[]
      try {
        rows = this.queue.readUpdatesAfter(this.sentUpTo, LIMITS.maxJobsPerBatch)
      } catch (err) {
        this.log.error({ err }, 'could not read job updates from the ledger')
        return
      }
      if (rows.length === 0) break
      const ids = this.sendBatch(rows)
      if (ids === undefined) break
      this.inflight.push(ids)
    }
    if (this.inflight.length > 0 && !this.ackTimer) {
      this.ackTimer = this.options.clock.setTimeout(() => { this.onAckTimeout() }, this.options.ackTimeoutMs)
    }
  }

  /** Sends the leading rows that fit the byte limit (always at least one); returns their ids. */
  private sendBatch(rows: readonly JobUpdateRow[]): Set<number> | undefined {
    let payload = this.head
    let bytes = payload.length + 2
    const ids = new Set<number>()
    let last = 0
    for (const row of rows) {
      const idText = String(row.id)
      const cost = Buffer.byteLength(row.body) + idText.length + ROW_OVERHEAD_BYTES
      if (ids.size > 0 && bytes + cost > this.options.batchMaxBytes) break
      // body is `{...}` without id: splice `"id":N,` in after its brace.
      payload += (ids.size > 0 ? ',{"id":' : '{"id":') + idText + ',' + row.body.slice(1)
      bytes += cost
      ids.add(row.id)
      last = row.id
    }
    payload += ']}'
    if (!this.transport.publish(this.topic, payload)) return undefined
    this.sentUpTo = last
    this.batchesSent++
    this.updatesSent += ids.size
    return ids
  }

  private onAckTimeout(): void {
    this.ackTimer = undefined
    if (!this.running || this.inflight.length === 0) return
    this.ackTimeouts++
    this.log.info({ ackTimeoutMs: this.options.ackTimeoutMs, inflight: this.inflight.length }, 'no job ack; resending every unacked update')
    this.reset()
    this.pump()
  }

  private reset(): void {
    this.inflight = []
    this.sentUpTo = 0
    if (this.wakeHandle) clearImmediate(this.wakeHandle)
    this.wakeHandle = undefined
    this.options.clock.clearTimer(this.ackTimer)
    this.ackTimer = undefined
  }
}
