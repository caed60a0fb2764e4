import type { Clock, ClockTimer, Random } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { encode } from '../protocol/codec.js'
import { parseExecId } from '../protocol/ids.js'
import { LIMITS } from '../protocol/limits.js'
import type { JobsBatch, JobsNotify } from '../protocol/messages.js'
import { topics } from '../protocol/topics.js'
import type { JobQueue } from './job-queue.js'
import type { JobRunner } from './job-runner.js'

/**
 * Leases jobs from the hub into the local queue (DESIGN.md, "Jobs": pull).
 *
 * A pull ({max}) goes out only while connected, with room in the queue
 * (max = min(room, LIMITS.maxJobsPerBatch)), and one at a time: the next waits
 * for the batch that answers it, or for `ackTimeoutMs`. What asks for a pull:
 *   - the doorbell (jobs.notify), which the hub also rings when a device with
 *     due work connects, so the agent does not pull on every connect;
 *   - a batch that says `more: true`;
 *   - a slow fallback timer, every pullIntervalMs jittered x[0.5, 1.5), whose
 *     first tick comes soon after connecting (pullIntervalMs x random, at most
 *     a minute), so a lost doorbell costs little.
 * A wish that cannot be served (no room, or a pull in flight) is remembered
 * and served when room frees up or the batch arrives.
 */

export interface PullerTransport {
  isConnected(): boolean
  publish(topic: string, payload: string | Buffer): boolean
}

export interface JobPullerOptions {
  readonly deviceId: string
  readonly pullIntervalMs: number
  readonly ackTimeoutMs: number
  readonly clock: Clock
  readonly random: Random
  readonly logger: Logger
}

/** What pullNow() did: pulled, or why not (the wish is kept and served when it can be). */
export interface PullNowResult {
  readonly pulled: boolean
  /** Room in the local queue. */
  readonly room: number
  readonly reason?: 'stopped' | 'offline' | 'pull-in-flight' | 'queue-full'
}

export interface JobPullerStats {
  readonly pulls: number
  readonly batchesReceived: number
  readonly executionsReceived: number
  readonly pullTimeouts: number
}

/** The first fallback pull after connecting comes within this. */
export const FIRST_PULL_MAX_MS = 60_000

export class JobPuller {
  private readonly queue: JobQueue
  private readonly runner: JobRunner
  private readonly transport: PullerTransport
  private readonly options: JobPullerOptions
  private readonly log: Logger
  private readonly topic: string
  private running = false
  private wanted = false
  private pullTimer: ClockTimer | undefined
  private fallbackTimer: ClockTimer | undefined
  private pulls = 0
  private batchesReceived = 0
  private executionsReceived = 0
  private pullTimeouts = 0

  constructor(queue: JobQueue, runner: JobRunner, transport: PullerTransport, options: JobPullerOptions) {
    this.queue = queue
    this.runner = runner
    this.transport = transport
    this.options = options
    this.log = options.logger.child({ component: 'job-puller' })
    this.topic = topics.jobsPull(options.deviceId)
  }

  start(): void {
    if (this.running) return
    this.running = true
    if (this.transport.isConnected()) this.onConnected()
  }

  stop(): void {
    this.running = false
    this.clearTimers()
  }

  onConnected(): void {
    this.clearTimers()
    if (!this.running) return
    this.scheduleFallback(Math.min(this.options.pullIntervalMs * this.options.random(), FIRST_PULL_MAX_MS))
    if (this.wanted) this.pull()
  }

  onDisconnected(): void {
    this.clearTimers()
  }

  /** The doorbell: cancel what it names, then pull. */
  onNotify(message: JobsNotify): void {
    if (message.cancel && message.cancel.length > 0) this.runner.cancel(message.cancel)
    this.wanted = true
    this.pull()
  }

  /** A batch (the answer to a pull): store it in one transaction, run it, and pull again if the hub has more. */
  onBatch(message: JobsBatch): void {
    this.batchesReceived++
    // A batch answering a pull that already timed out also releases the pull sent after it; that pull
    // asked for the room there was before this batch, so the queue can go over its cap by one batch.
    // Bounded, rare (the hub answered later than ackTimeoutMs), and better than dropping delivered work.
    this.options.clock.clearTimer(this.pullTimer)
    this.pullTimer = undefined
    if (message.cancel && message.cancel.length > 0) this.runner.cancel(message.cancel)
    const mine = message.executions.filter((e) => parseExecId(e.execId)?.deviceId === this.options.deviceId)
    if (mine.length < message.executions.length) {
      this.log.warn({ dropped: message.executions.length - mine.length }, 'ignoring executions for another device')
    }
    this.executionsReceived += mine.length
    if (mine.length > 0) {
      try {
        this.queue.enqueue(mine, this.options.clock.now())
      } catch (err) {
        // Not stored: the hub still counts them delivered, and sends them again on a pull after jobRedeliverAfterMs or the next reconnect.
        this.log.error({ err, executions: mine.length }, 'could not store the jobs in the ledger')
      }
      this.runner.kick()
    }
    if (message.more) this.wanted = true
    if (this.wanted) this.pull()
  }

  /** Pull now if it can (the jobs.pull command); like the doorbell, a pull that cannot go now is remembered. */
  pullNow(): PullNowResult {
    this.wanted = true
    const reason = this.pull()
    return reason === undefined ? { pulled: true, room: this.queue.room() } : { pulled: false, room: this.queue.room(), reason }
  }

  /** Room freed in the queue (jobs finished or were canceled). */
  onRoom(): void {
    if (this.wanted) this.pull()
  }

  stats(): JobPullerStats {
    return { pulls: this.pulls, batchesReceived: this.batchesReceived, executionsReceived: this.executionsReceived, pullTimeouts: this.pullTimeouts }
  }

  /** Sends a pull if it may; returns why it did not, or undefined when it did. */
  private pull(): PullNowResult['reason'] {
    if (!this.running) return 'stopped'
    if (this.pullTimer) return 'pull-in-flight'
    if (!this.transport.isConnected()) return 'offline'
    const room = this.queue.room()
    if (room <= 0) return 'queue-full'
    const max = Math.min(room, LIMITS.maxJobsPerBatch)
    if (!this.transport.publish(this.topic, encode({ type: 'jobs.pull', v: 1, max }))) return 'offline'
    this.wanted = false
    this.pulls++
    this.log.debug({ max }, 'pulling jobs')
    this.pullTimer = this.options.clock.setTimeout(() => {
      this.pullTimer = undefined
      this.pullTimeouts++
      // No answer: the next doorbell, room or fallback tick pulls again.
      this.log.info({ ackTimeoutMs: this.options.ackTimeoutMs }, 'the hub did not answer a pull')
    }, this.options.ackTimeoutMs)
    return undefined
  }

  private scheduleFallback(delayMs: number): void {
    this.fallbackTimer = this.options.clock.setTimeout(() => {
      this.fallbackTimer = undefined
      this.wanted = true
      this.pull()
      this.scheduleFallback(this.options.pullIntervalMs * (0.5 + this.options.random()))
    }, delayMs)
  }

  private clearTimers(): void {
    this.options.clock.clearTimer(this.pullTimer)
    this.options.clock.clearTimer(this.fallbackTimer)
    this.pullTimer = undefined
    this.fallbackTimer = undefined
  }
}
