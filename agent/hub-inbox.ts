import type { Logger } from '../common/logger.js'
import { decode } from '../protocol/codec.js'
import type { AgentParts } from './assembly.js'
import type { HubClock } from './hub-clock.js'

/**
 * The agent's inbox: every message the hub sends this device is decoded here
 * and handed to the part that owns it (telemetry acks to the sender and the
 * hub clock, job batches and doorbells to the puller, job acks to the
 * reporter, command requests to the command runner). What cannot be decoded,
 * is for another device or another store, or is a type the agent does not
 * take, is logged and dropped: one bad message never stops the others.
 */
export function createHubInbox(deviceId: string, parts: AgentParts, hubClock: HubClock, log: Logger): (topic: string, payload: Buffer) => void {
  return function onMessage(topic, payload) {
    // Without field detail: explaining a bad message would load TypeBox for good.
    const decoded = decode(topic, payload, { schemaDetail: false })
    if (!decoded.ok) {
      log.warn({ topic, error: decoded.error }, 'ignoring an undecodable message')
      return
    }
    if (decoded.topic.deviceId !== deviceId) {
      log.warn({ topic }, 'ignoring a message for another device')
      return
    }
    const message = decoded.message
    switch (message.type) {
      case 'telemetry.ack':
        if (message.storeId !== parts.ledger?.storeId) {
          // An ack for an older store of this device (before a re-flash): not ours to apply.
          log.debug({ storeId: message.storeId }, 'ignoring an ack for another store')
          return
        }
        // Before the sender lets the acked batch go: the ack is timed against it.
        hubClock.onAck(message, (upTo) => parts.sender?.sentAtOf(upTo))
        parts.sender?.onAck(message.upTo, message.accepts)
        parts.link?.hubAccepts(message.accepts)
        // The wall clock was stepped since the birth told the hub its time: tell it again.
        if (hubClock.birthSkewStale()) parts.link?.refreshClock()
        return
      case 'jobs.notify':
        parts.puller?.onNotify(message)
        return
      case 'jobs.batch':
        parts.puller?.onBatch(message)
        return
      case 'jobs.ack':
        if (message.storeId !== parts.ledger?.storeId) {
          log.debug({ storeId: message.storeId }, 'ignoring a job ack for another store')
          return
        }
        parts.reporter?.onAck(message)
        return
      case 'cmd.req':
        parts.commands?.onRequest(message)
        return
      case 'cmd.res':
      case 'birth':
      case 'death':
      case 'telemetry':
      case 'events':
      case 'jobs.pull':
      case 'jobs.update':
        log.warn({ topic, type: message.type }, 'ignoring a message the agent does not handle')
        return
      default: {
        const never: never = message
        log.warn({ message: never }, 'unknown message type')
      }
    }
  }
}
