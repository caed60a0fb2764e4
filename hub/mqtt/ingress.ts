import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import { decode } from '../../protocol/codec.js'
import { parseTopic, topicDeviceId } from '../../protocol/topics.js'
import type { CommandResponse, JobsUpdate } from '../../protocol/messages.js'
import type { InboundMessage } from '../../broker/types.js'
import type { TelemetryStore } from '../telemetry/store.js'
import type { PresenceStore } from '../presence/store.js'
import type { DeadLetters } from './dead-letters.js'
import type { OnFailed } from '../storage/group-commit.js'

/**
 * Everything devices publish under `devices/#` arrives here, in broker order.
 * Each payload is decoded once; what fails goes to the dead-letter store with
 * its reason, and a client that keeps sending garbage is cut off so it cannot
 * cost the hub more than a bounded amount of work.
 */

export interface IngressOptions {
  readonly maxPayloadBytes: number
  readonly badMessagesPerMinute: number
  /**
   * On an external broker the hub sees no connection events: a birth is the
   * news that its device connected, and a death that it left (issue #18).
   */
  readonly presenceFromBirths?: boolean
}

export interface IngressDeps {
  readonly telemetry: TelemetryStore
  readonly presence: PresenceStore
  readonly deadLetters: DeadLetters
  readonly clock: Clock
  readonly logger: Logger
  /** Called when a client exceeded the bad-message budget. */
  readonly cutOff: (clientId: string, reason: string) => void
  /** Called on every birth: the hub answers with the store's mark (see the agent's Outbox.resyncWithHub). */
  readonly announceMark: (deviceId: string, storeId: string) => void
  /** Births and deaths of a device that was removed meanwhile (a late Will) are dropped. */
  readonly isRegistered: (deviceId: string) => boolean
  readonly jobs: JobIngress
  /** A device's reply to a command; `disconnected`: its death on an external broker ends its commands in flight. */
  readonly commands: { response(deviceId: string, message: CommandResponse, now: number): void; disconnected(deviceId: string): void }
  /** Samples in each telemetry batch received (a metric's histogram); must be cheap, it runs per batch. */
  readonly observeTelemetryBatch?: (samples: number) => void
}

/** What ingress hands the job dispatcher: pulls and execution updates, already decoded. */
export interface JobIngress {
  pull(deviceId: string, max: number, now: number): void
  /** `onFailed` hears after the commit that storing the updates threw and was rolled back alone. */
  update(deviceId: string, message: JobsUpdate, now: number, onFailed?: OnFailed): void
  /** The device is reachable after a birth: it may have work waiting or cancellations to hear. */
  online(deviceId: string, now: number): void
}

const WINDOW_MS = 60_000

export function createIngress(options: IngressOptions, deps: IngressDeps) {
  const { telemetry, presence, deadLetters, clock, logger } = deps
  // Bad-message budget per client: [window start, count].
  const strikes = new Map<string, [number, number]>()
  // Connection numbers for births on an external broker: each birth is a connection of its own.
  let birthConnections = 0

  function strike(clientId: string | undefined, now: number): void {
    if (clientId === undefined) return
    const s = strikes.get(clientId)
    if (!s || now - s[0] >= WINDOW_MS) {
      strikes.set(clientId, [now, 1])
      return
    }
    s[1]++
    // Over budget: cut off, and again after each reconnect within the same window.
    if (s[1] > options.badMessagesPerMinute) {
      if (s[1] === options.badMessagesPerMinute + 1) logger.warn({ clientId, badMessages: s[1], windowMs: WINDOW_MS }, 'client cut off: too many bad messages')
      deps.cutOff(clientId, 'too many bad messages')
    }
  }

  /**
   * A decoded message whose write threw inside the group commit and was
   * rolled back alone (the rest of the group committed and was acked): it is
   * a dead letter like any other refused payload, and a strike against its
   * sender, which will resend it until cut off, since no ack covers it (M19b).
   */
  function writeFailed(msg: InboundMessage, deviceId: string): OnFailed {
    return (err) => {
      const now = clock.now()
      deadLetters.add({
        ts: now, deviceId, clientId: msg.clientId, topic: msg.topic, reason: 'WRITE_FAILED',
        detail: `the hub could not store this message and rolled it back alone: ${err.name}: ${err.message}`, payload: msg.payload,
      })
      strike(msg.clientId, now)
    }
  }

  function handle(msg: InboundMessage): void {
    // The hub's own publishes to devices (acks, batches, commands) come back through `devices/#`: not input.
    if (msg.clientId === undefined && parseTopic(msg.topic)?.direction === 'down') return
    // On an external broker the hub clears a removed device's retained state with an empty message: nothing to read.
    if (options.presenceFromBirths === true && msg.payload.length === 0 && parseTopic(msg.topic)?.kind === 'state') return
    const now = clock.now()
    const d = decode(msg.topic, msg.payload, { maxPayloadBytes: options.maxPayloadBytes })
    if (!d.ok) {
      // The hub's own down-topic publishes (acks) come back through `devices/#`; they are not input.
      if (msg.clientId === undefined && d.topic?.direction === 'down') return
      deadLetters.add({
        ts: now, deviceId: d.topic?.deviceId ?? topicDeviceId(msg.topic), clientId: msg.clientId,
        topic: msg.topic, reason: d.error.code, detail: d.error.message, payload: msg.payload,
      })
      strike(msg.clientId, now)
      return
    }
    const { deviceId } = d.topic
    const m = d.message
    switch (m.type) {
      case 'telemetry':
        telemetry.storeSamples(deviceId, m.storeId, m.prev ?? 0, now, m.samples, writeFailed(msg, deviceId))
        presence.touch(deviceId, now, m.backlog)
        deps.observeTelemetryBatch?.(m.samples.length)
        return
      case 'events':
        telemetry.storeEvents(deviceId, m.storeId, m.prev ?? 0, now, m.events, writeFailed(msg, deviceId))
        presence.touch(deviceId, now, m.backlog)
        return
      case 'birth':
        if (!deps.isRegistered(deviceId)) return
        presence.apply(deviceId, { type: 'birth', epoch: m.epoch, storeId: m.storeId, at: now, ...(options.presenceFromBirths === true ? { connId: ++birthConnections } : {}) }, m)
        deps.announceMark(deviceId, m.storeId)
        if (presence.isReachable(deviceId)) deps.jobs.online(deviceId, now)
        return
      case 'death':
        if (!deps.isRegistered(deviceId)) return
        if (options.presenceFromBirths === true) {
          // No disconnect event will come: the death ends the device's commands in flight, as a disconnect does.
          const wasReachable = presence.isReachable(deviceId)
          presence.apply(deviceId, { type: 'death', epoch: m.epoch, storeId: m.storeId, at: now, reason: 'death' })
          if (wasReachable && !presence.isReachable(deviceId)) deps.commands.disconnected(deviceId)
          return
        }
        presence.apply(deviceId, { type: 'death', epoch: m.epoch, storeId: m.storeId, at: now })
        return
      case 'jobs.pull':
        presence.touch(deviceId, now)
        deps.jobs.pull(deviceId, m.max, now)
        return
      case 'jobs.update':
        presence.touch(deviceId, now)
        deps.jobs.update(deviceId, m, now, writeFailed(msg, deviceId))
        return
      case 'cmd.res':
        presence.touch(deviceId, now)
        deps.commands.response(deviceId, m, now)
        return
      case 'telemetry.ack':
      case 'cmd.req':
      case 'jobs.notify':
      case 'jobs.batch':
      case 'jobs.ack':
        if (msg.clientId === undefined) return
        deadLetters.add({
          ts: now, deviceId, clientId: msg.clientId, topic: msg.topic, reason: 'WRONG_DIRECTION',
          detail: 'devices may not publish on their down-topics', payload: msg.payload,
        })
        strike(msg.clientId, now)
        return
      default: {
        const never: never = m
        return never
      }
    }
  }

  return {
    handle,
    /**
     * A bad message the broker saw for itself (a refused SUBSCRIBE filter, M24):
     * it counts against the same budget as an undecodable payload.
     */
    badMessage(clientId: string | undefined): void {
      strike(clientId, clock.now())
    },
  }
}
