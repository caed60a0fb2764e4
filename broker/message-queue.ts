import type { MQEmitter } from 'mqemitter'
import { requireCjs } from '../common/cjs.js'

/**
 * aedes routes every PUBLISH through an mqemitter, which runs at most
 * `concurrency` deliveries at once and queues the rest in two arrays,
 * dequeued with Array.prototype.shift(). That is O(1) while an array is
 * small, but V8 cannot trim the front of an array in its large-object space
 * (past ~16,000 entries), so there each shift() copies the whole array. A hub
 * past saturation has exactly such a queue: each message then costs time
 * proportional to the backlog, less gets done, the backlog grows, and stored
 * samples per second fall instead of levelling off (issue #14: 36% of the
 * hub's CPU was in that shift() at 5,000 devices).
 *
 * `createMessageQueue` makes aedes's mqemitter with its two queues replaced by
 * a FIFO with the same three members mqemitter uses (push, shift, length),
 * each O(1) amortised. The queues are mqemitter's private fields, so the
 * replacement checks they are still arrays, as in the version pinned in
 * package.json; a version that changed them fails here at start, loudly, and
 * test/broker.message-queue.test.ts says so too.
 */

export const MQ_CONCURRENCY = 100

/** First in, first out: items pushed onto `input`, taken from `output`, which is refilled reversed when empty. */
export class Fifo<T> {
  private input: T[] = []
  private output: T[] = []

  get length(): number {
    return this.input.length + this.output.length
  }

  push(item: T): number {
    this.input.push(item)
    return this.length
  }

  shift(): T | undefined {
    if (this.output.length === 0) {
      if (this.input.length === 0) return undefined
      this.output = this.input.reverse()
      this.input = []
    }
    return this.output.pop()
  }

  /** The next item shift() would return, left in place. */
  peek(): T | undefined {
    return this.output.length > 0 ? this.output[this.output.length - 1] : this.input[0]
  }
}

/**
 * A Fifo that also knows when its oldest item came in: how long the broker's
 * backlog has kept a message waiting (a saturation gauge, hub/observe/saturation.ts).
 * The times ride in a second Fifo, pushed and shifted with the items.
 */
export class TimedFifo<T> extends Fifo<T> {
  private readonly times = new Fifo<number>()
  private readonly now: () => number

  constructor(now: () => number = () => performance.now()) {
    super()
    this.now = now
  }

  override push(item: T): number {
    this.times.push(this.now())
    return super.push(item)
  }

  override shift(): T | undefined {
    this.times.shift()
    return super.shift()
  }

  /** Milliseconds the oldest item has waited; 0 when empty. */
  oldestAgeMs(): number {
    const at = this.times.peek()
    return at === undefined ? 0 : Math.max(0, this.now() - at)
  }
}

interface QueueFields {
  _messageQueue: unknown
  _messageCallbacks: unknown
}

export function createMessageQueue(concurrency = MQ_CONCURRENCY): MQEmitter {
  const mqemitter = requireCjs('mqemitter') as (opts: { concurrency: number; matchEmptyLevels: boolean }) => MQEmitter
  // matchEmptyLevels as aedes sets it [MQTT-4.7.1-3].
  const mq = mqemitter({ concurrency, matchEmptyLevels: true })
  const fields = mq as unknown as QueueFields
  if (!Array.isArray(fields._messageQueue) || !Array.isArray(fields._messageCallbacks) || fields._messageQueue.length !== 0) {
    throw new Error('mqemitter no longer keeps its queue in _messageQueue/_messageCallbacks arrays; broker/message-queue.ts must follow it')
  }
  fields._messageQueue = new TimedFifo()
  fields._messageCallbacks = new Fifo()
  return mq
}

/** Messages waiting for a delivery slot now: the broker's backlog. */
export function queuedMessages(mq: MQEmitter): number {
  return (mq as unknown as { length: number }).length
}

/** How long the oldest message waiting for a delivery slot has waited, in ms; 0 when none waits. */
export function oldestQueuedMs(mq: MQEmitter): number {
  return ((mq as unknown as QueueFields)._messageQueue as TimedFifo<unknown>).oldestAgeMs()
}
