import type { Clock } from '../../common/clock.js'
import type { Broker } from '../../broker/types.js'
import type { PresenceStore } from '../presence/store.js'
import type { DeadLetters } from './dead-letters.js'

/**
 * What the hub makes of the broker's own events, beside the messages
 * ingress.ts decodes: a device's connection opening or ending moves its
 * presence, and its ending ends the device's commands in flight; a payload
 * the broker refused before it reached the hub is a dead letter like the
 * ones ingress refuses; a refused subscription is a strike against the
 * client's bad-message budget.
 */

/** Broker refusals that concern a payload, kept as dead letters (connect refusals are only logged). */
const BROKER_REFUSALS_KEPT = new Set(['PUBLISH_DENIED', 'PAYLOAD_TOO_LARGE'])
/** Broker refusals that leave the client connected, counted against its bad-message budget. */
const BROKER_REFUSALS_STRUCK = new Set(['SUBSCRIBE_DENIED', 'SUBSCRIBE_LIMIT'])

export interface BrokerEventsDeps {
  readonly presence: PresenceStore
  readonly deadLetters: DeadLetters
  /** Ends a device's commands in flight (its connection is gone). */
  readonly commands: { disconnected(deviceId: string): void }
  /** Ingress's bad-message budget. */
  readonly ingress: { badMessage(clientId: string | undefined): void }
  /** A removed device's last disconnect (or Will) must not bring its presence entry back. */
  readonly isRegistered: (deviceId: string) => boolean
  readonly clock: Clock
}

export function followBrokerEvents(broker: Broker, deps: BrokerEventsDeps): void {
  const { presence, clock, isRegistered } = deps
  broker.on('connected', (info) => {
    if (info.principal.kind === 'device' && isRegistered(info.principal.id)) {
      presence.apply(info.principal.id, { type: 'connected', connId: info.connId, at: clock.now() })
    }
  })
  broker.on('disconnected', (info, reason) => {
    // Commands in flight on this connection end now, whatever presence makes of it.
    if (info.principal.kind === 'device') deps.commands.disconnected(info.principal.id)
    if (info.principal.kind === 'device' && isRegistered(info.principal.id)) {
      presence.apply(info.principal.id, { type: 'disconnected', connId: info.connId, reason, at: clock.now() })
    }
  })
  // Payloads the broker refused before they reached the hub (another device's topic,
  // oversized) are recorded with the dead letters, so operators see every refusal in one place.
  broker.on('violation', (info, code, detail, topic) => {
    // A refused filter is answered SUBACK 0x80 and the client stays, so this budget is what ends a flood of them (M24).
    if (BROKER_REFUSALS_STRUCK.has(code)) deps.ingress.badMessage(info.clientId)
    if (!BROKER_REFUSALS_KEPT.has(code)) return
    deps.deadLetters.add({
      ts: clock.now(), deviceId: info.principal?.kind === 'device' ? info.principal.id : undefined, clientId: info.clientId,
      topic: topic ?? '(not read: refused on its size)', reason: code, detail, payload: Buffer.alloc(0),
    })
  })
}
