import type { Clock, ClockTimer } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { LatencyWindow } from '../common/latency.js'
import { LIMITS } from '../protocol/limits.js'
import { topics } from '../protocol/topics.js'
import type { Outbox, OutboxKind, OutboxRow } from './outbox.js'

/**
 * The outbox drain: sends outbox rows in seq order as telemetry/events
 * batches, and deletes them only when the hub's cumulative ack covers them.
 *
 * States (per connection):
 *   offline  -> draining   the link is connected: the cursor goes back to the
 *                          last ack (replay everything unacked, in order)
 *   draining: send batches while fewer than `inflightBatches` are unacked
 *             and rows remain; an ack frees slots and sends more; no ack
 *             progress for `ackTimeoutMs` with batches in flight rewinds the
 *             cursor to the last ack and resends (the hub dedups by seq)
 *   draining -> offline   the link dropped: in-flight batches are forgotten
 *                         (they are still rows in the outbox)
 *
 * It sleeps when there is nothing to send: an append wakes it after a short
 * coalescing delay so one tick of many sensors leaves as one batch.
 */

/** The sender's window as an ack finds it: what is acked, what was sent, the top seq of each batch in flight (oldest first). */
export interface AckWindow {
  readonly ackedUpTo: number
  readonly sentUpTo: number
  readonly inflight: readonly number[]
}

export type AckPlan =
  | { readonly apply: false; readonly clamped: boolean }
  | {
    readonly apply: true
    /** The mark to apply: the ack's, or the newest seq when the ack claimed more (then `clamped`). */
    readonly upTo: number
    readonly clamped: boolean
    /** How many batches in flight (oldest first) the ack covers. */
    readonly released: number
    readonly sentUpTo: number
  }

/**
 * What an ack with `upTo` does to the window. An ack at or below the acked
 * mark changes nothing (a repeat, or one overtaken). An ack above the newest
 * seq the outbox ever held is clamped to it: acking what this store never
 * produced is a hub bug or a stale store id, and rows written later with seq
 * <= upTo would otherwise never be deleted. The ack releases every batch in
 * flight whose top it covers, and what was sent is at least what is acked.
 */
export function planAck(window: AckWindow, upTo: number, newestSeq: number): AckPlan {
  if (upTo <= window.ackedUpTo) return { apply: false, clamped: false }
  const clamped = upTo > newestSeq
  const mark = clamped ? newestSeq : upTo
  if (mark <= window.ackedUpTo) return { apply: false, clamped }
  let released = 0
  while (released < window.inflight.length && window.inflight[released]! <= mark) released++
  return { apply: true, upTo: mark, clamped, released, sentUpTo: Math.max(window.sentUpTo, mark) }
}

export interface SenderTransport {
  isConnected(): boolean
  /** QoS 1 publish; false when not connected. */
  publish(topic: string, payload: string): boolean
}

export interface SenderOptions {
  readonly deviceId: string
  readonly storeId: string
  readonly inflightBatches: number
  readonly batchMaxSamples: number
  /** Upper bound of one payload in bytes; must leave room under LIMITS.maxPayloadBytes. */
  readonly batchMaxBytes: number
  readonly ackTimeoutMs: number
  readonly coalesceMs: number
  readonly logger: Logger
  /** Whose timers run the coalescing delay, the birth wait and the ack timeout (a test's manual clock). */
  readonly clock: Clock
  /** Where batch send times are read (the HubClock times acks on it); performance.now() by default. */
  readonly monotonic?: () => number
  /**
   * A row's body as it goes on the wire (the HubClock corrects the
   * timestamps of rows taken before the hub's time was known); must not make
   * it longer. The body as stored by default.
   */
  readonly wireBody?: (kind: OutboxKind, body: string) => string
}

export interface SenderStats {
  readonly inflightBatches: number
  /** Highest upTo the hub acked in this process (0 before the first ack). */
  readonly ackedUpTo: number
  /** Highest seq sent on the current connection. */
  readonly sentUpTo: number
  readonly batchesSent: number
  readonly rowsSent: number
  /** Times the cursor was rewound because acks stopped advancing. */
  readonly ackTimeouts: number
  /** Send-to-ack time of recent batches: what "durably stored at the hub" costs. */
  readonly ackLatencyMs: { readonly count: number; readonly p50: number; readonly p99: number; readonly max: number }
}

/** `{"seq":` + `,` + a comma between items: the bytes a row adds besides its body and seq digits. */
const ROW_OVERHEAD_BYTES = 9

export class Sender {
  private readonly outbox: Outbox
  private readonly transport: SenderTransport
  private readonly options: SenderOptions
  private readonly topicByKind: Record<OutboxKind, string>
  private readonly headByKind: Record<OutboxKind, string>
  private readonly itemsKeyByKind: Record<OutboxKind, string>
  private readonly maxItemsByKind: Record<OutboxKind, number>
  /** Last seq of each batch sent and not yet fully acked, oldest first. */
  private inflight: number[] = []
  /** Monotonic time (options.monotonic) at which each in-flight batch was sent, aligned with `inflight`. */
  private sentAt: number[] = []
  private readonly ackLatency = new LatencyWindow(512)
  private sentUpTo = 0
  private ackedUpTo = 0
  private running = false
  private wakeTimer: ClockTimer | undefined
  /** From a new connection until the hub's first ack on it (its answer to the birth): nothing is sent. */
  private awaitingHub = false
  private hubTimer: ClockTimer | undefined
  private ackTimer: ClockTimer | undefined
  /** The hub's acks on this connection say it takes `backlog` (an older hub would refuse the batch). */
  private hubTakesBacklog = false
  private unsubscribe: (() => void) | undefined
  private batchesSent = 0
  private rowsSent = 0
  private ackTimeouts = 0
  private readonly monotonic: () => number

  constructor(outbox: Outbox, transport: SenderTransport, options: SenderOptions) {
    this.outbox = outbox
    this.transport = transport
    this.options = options
    this.monotonic = options.monotonic ?? (() => performance.now())
    const { deviceId, storeId } = options
    this.topicByKind = { telemetry: topics.telemetry(deviceId), event: topics.events(deviceId) }
    // storeId matches ^[A-Za-z0-9-]+$, so it needs no escaping. `prev` and
    // the items follow each head, and `backlog` closes the batch.
    this.headByKind = {
      telemetry: `{"type":"telemetry","v":1,"storeId":"${storeId}","prev":`,
      event: `{"type":"events","v":1,"storeId":"${storeId}","prev":`,
    }
    this.itemsKeyByKind = { telemetry: ',"samples":[', event: ',"events":[' }
    this.maxItemsByKind = {
      telemetry: Math.min(options.batchMaxSamples, LIMITS.maxSamplesPerBatch),
      event: Math.min(options.batchMaxSamples, LIMITS.maxEventsPerBatch),
    }
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.unsubscribe = this.outbox.onAppend(() => { this.wake() })
    if (this.transport.isConnected()) this.onConnected()
  }

  stop(): void {
    this.running = false
    this.unsubscribe?.()
    this.unsubscribe = undefined
    this.clearTimers()
    this.inflight = []
    this.sentAt = []
  }

  /**
   * A new connection: wait for the hub's answer to the birth (the store's
   * mark), then replay from the oldest unacked row. Waiting lets the outbox
   * notice a ledger that a power cut set back behind the hub before anything
   * is sent with reused seqs (Outbox.resyncWithHub). A hub that does not
   * answer within ackTimeoutMs is sent to anyway.
   */
  onConnected(): void {
    this.hubTakesBacklog = false
    this.inflight = []
    this.sentAt = []
    this.sentUpTo = this.ackedUpTo
    this.clearTimers()
    this.awaitingHub = true
    this.hubTimer = this.options.clock.setTimeout(() => {
      this.hubTimer = undefined
      if (!this.awaitingHub) return
      this.awaitingHub = false
      this.outbox.resyncWithHub(0)
      this.options.logger.info({ ackTimeoutMs: this.options.ackTimeoutMs }, 'the hub did not answer the birth; sending anyway')
      this.pump()
    }, this.options.ackTimeoutMs)
  }

  onDisconnected(): void {
    this.inflight = []
    this.sentAt = []
    this.clearTimers()
  }

  /**
   * The hub's cumulative ack for this store. Backward or repeated acks are
   * ignored; `accepts` (the optional batch fields the hub takes) is kept from each.
   */
  onAck(upTo: number, accepts?: readonly string[]): void {
    this.hubTakesBacklog = accepts?.includes('backlog') ?? false
    if (this.awaitingHub) {
      this.awaitingHub = false
      this.options.clock.clearTimer(this.hubTimer)
      this.hubTimer = undefined
      const resync = this.outbox.resyncWithHub(upTo)
      if (resync) {
        this.options.logger.warn({ hubMark: upTo, ...resync }, 'the ledger was behind the hub (a power cut rolled it back): unsent rows renumbered after the hub\'s mark')
        this.ackedUpTo = upTo
        this.sentUpTo = upTo
      }
      if (upTo <= this.ackedUpTo) {
        this.pump()
        return
      }
    }
    const plan = planAck({ ackedUpTo: this.ackedUpTo, sentUpTo: this.sentUpTo, inflight: this.inflight }, upTo, this.outbox.newestSeq)
    if (plan.clamped) this.options.logger.warn({ upTo, newestSeq: this.outbox.newestSeq }, 'ack beyond the newest seq; clamping')
    if (!plan.apply) return
    this.ackedUpTo = plan.upTo
    try {
      this.outbox.ackUpTo(plan.upTo)
    } catch (err) {
      this.options.logger.error({ err, upTo: plan.upTo }, 'could not delete acked rows; they will be sent again')
    }
    const now = this.monotonic()
    for (let i = 0; i < plan.released; i++) {
      this.inflight.shift()
      this.ackLatency.record(now - this.sentAt.shift()!)
    }
    this.sentUpTo = plan.sentUpTo
    this.options.clock.clearTimer(this.ackTimer)
    this.ackTimer = undefined
    this.pump()
  }

  /**
   * When the in-flight batch holding `upTo` was sent on this connection
   * (options.monotonic), or undefined: what an ack for `upTo` answers. Read
   * it before onAck, which lets the batch go.
   */
  sentAtOf(upTo: number): number | undefined {
    for (let i = 0; i < this.inflight.length; i++) {
      if (this.inflight[i]! >= upTo) return upTo > (i > 0 ? this.inflight[i - 1]! : this.ackedUpTo) ? this.sentAt[i] : undefined
    }
    return undefined
  }

  stats(): SenderStats {
    return {
      inflightBatches: this.inflight.length,
      ackedUpTo: this.ackedUpTo,
      sentUpTo: this.sentUpTo,
      batchesSent: this.batchesSent,
      rowsSent: this.rowsSent,
      ackTimeouts: this.ackTimeouts,
      ackLatencyMs: this.ackLatency.summary(),
    }
  }

  private wake(): void {
    if (!this.running || this.wakeTimer || this.inflight.length >= this.options.inflightBatches) return
    if (!this.transport.isConnected()) return
    this.wakeTimer = this.options.clock.setTimeout(() => {
      this.wakeTimer = undefined
      this.pump()
    }, this.options.coalesceMs)
  }

  private pump(): void {
    if (!this.running || this.awaitingHub || !this.transport.isConnected()) return
    while (this.inflight.length < this.options.inflightBatches) {
      let rows: OutboxRow[]
      try {
        rows = this.outbox.readAfter(this.sentUpTo, this.options.batchMaxSamples)
      } catch (err) {
        this.options.logger.error({ err }, 'could not read the outbox')
        return
      }
      if (rows.length === 0) break
      const last = this.sendBatch(rows)
      if (last === undefined) break
      this.inflight.push(last)
      this.sentAt.push(this.monotonic())
      this.sentUpTo = last
    }
    if (this.inflight.length > 0 && !this.ackTimer) {
      this.ackTimer = this.options.clock.setTimeout(() => { this.onAckTimeout() }, this.options.ackTimeoutMs)
    }
  }

  /**
   * Sends the leading run of same-kind rows that fits the item and byte
   * limits (always at least one row). Returns its last seq, or undefined when
   * the link refused it.
   */
  private sendBatch(rows: readonly OutboxRow[]): number | undefined {
    const first = rows[0]!
    const kind = first.kind
    const maxItems = this.maxItemsByKind[kind]
    // prev: the last seq this connection sent that may still be unacknowledged
    // (0 when nothing is in flight). The hub refuses the batch if it does not
    // hold that much yet, so its cumulative ack can never skip a lost batch.
    const prev = this.inflight.length > 0 ? this.sentUpTo : 0
    let payload = this.headByKind[kind] + String(prev) + this.itemsKeyByKind[kind]
    let bytes = payload.length + 2
    let count = 0
    let last = 0
    for (const row of rows) {
      if (row.kind !== kind || count >= maxItems) break
      const seqText = String(row.seq)
      const body = this.options.wireBody ? this.options.wireBody(kind, row.body) : row.body
      // A rewritten body is shorter than the stored one: sized as sent, so batches still fill.
      const cost = (body === row.body ? row.bytes : Buffer.byteLength(body)) + seqText.length + ROW_OVERHEAD_BYTES
      if (count > 0 && bytes + cost > this.options.batchMaxBytes) break
      // body is `{...}` without seq: splice `"seq":N,` in after its brace.
      payload += (count > 0 ? ',{"seq":' : '{"seq":') + seqText + ',' + body.slice(1)
      bytes += cost
      count++
      last = row.seq
    }
    // backlog: the rows behind this batch, not sent yet. Both terms bound it from above: the
    // unacked rows but this batch's (too high by the batches in flight), and the seqs above this
    // batch's last (too high only where the outbox dropped rows). It goes last: the batch's end is known only now.
    payload += this.hubTakesBacklog
      ? '],"backlog":' + String(Math.max(0, Math.min(this.outbox.backlogRows - count, this.outbox.newestSeq - last))) + '}'
      : ']}'
    if (!this.transport.publish(this.topicByKind[kind], payload)) return undefined
    this.batchesSent++
    this.rowsSent += count
    return last
  }

  private onAckTimeout(): void {
    this.ackTimer = undefined
    if (!this.running || this.inflight.length === 0) return
    this.ackTimeouts++
    this.options.logger.info({ ackedUpTo: this.ackedUpTo, sentUpTo: this.sentUpTo, ackTimeoutMs: this.options.ackTimeoutMs }, 'no ack progress; resending from the oldest unacked row')
    this.inflight = []
    this.sentAt = []
    this.sentUpTo = this.ackedUpTo
    this.pump()
  }

  private clearTimers(): void {
    this.options.clock.clearTimer(this.wakeTimer)
    this.options.clock.clearTimer(this.ackTimer)
    this.options.clock.clearTimer(this.hubTimer)
    this.wakeTimer = undefined
    this.ackTimer = undefined
    this.hubTimer = undefined
  }
}
