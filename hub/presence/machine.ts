/**
 * Presence: one state machine per device, fed by broker connection events and
 * by the device's own birth and death messages (DESIGN.md, "Presence").
 *
 * States: `online` (reachable: connected now and a birth received on this
 * connection) and `offline`, each with the reason and time it was entered.
 *
 * Events and rules:
 * - connected(connId): remember the connection. The device is not reachable
 *   until its birth arrives; if it was online on another connection (a
 *   takeover whose disconnect we missed), it goes offline ("reconnected").
 * - birth(epoch, store, connId?): on the current connection (or, on an
 *   external broker, on the connection the birth itself announces), with an epoch not older
 *   than the last one seen → online. A birth with an older epoch is stale (a
 *   retained or delayed message) and ignored; so is a birth with no
 *   connection. Epochs count per ledger: a birth from another store (a
 *   re-flashed device starts again at epoch 1) is accepted and restarts the count.
 * - death(epoch, store?): an epoch older than the current birth's is a late
 *   Will of a previous connection and is ignored, and so is a death from
 *   another store than the current birth's (the Will of a re-flashed device's
 *   old ledger); otherwise → offline, "shutdown" when the device is still
 *   connected (it said goodbye), "will" when not.
 *   On an external broker a death carries its own reason ("death": a clean
 *   stop and a Will look the same there) and ends the connection.
 * - disconnected(connId, reason): only the current connection counts; a
 *   disconnect of an older one (after a takeover) is ignored → offline with
 *   the broker's reason (keepalive-timeout, connection-lost, kicked, ...).
 * - hubStart: the hub restarted, nobody is connected → offline "hub-restart".
 *
 * Pure: the caller persists the returned change and publishes nothing here.
 */

export type PresenceStatus = 'online' | 'offline'

/**
 * The reasons the hub itself gives a device's going offline: its own start
 * ("hub-restart", hubStart below) and its broker's clean stop, which closes
 * every connection ("broker-closing", broker/types.ts DisconnectReason).
 * Nobody went away: the rules neither fire on these nor on the return from
 * them (hub/rules/presence.ts).
 */
const HUB_CAUSED: ReadonlySet<string> = new Set(['hub-restart', 'broker-closing'])

export const isHubCaused = (reason: string): boolean => HUB_CAUSED.has(reason)

export interface PresenceState {
  readonly status: PresenceStatus
  readonly reason: string
  readonly since: number
  /** The broker connection the device is on now, if any. */
  readonly connId: number | null
  /** Epoch of the newest accepted birth. */
  readonly epoch: number | null
  /** The ledger (store id) that epoch belongs to. */
  readonly storeId: string | null
  /** The connection that birth arrived on: reachable only while it is current. */
  readonly birthConnId: number | null
}

export type PresenceEvent =
  | { readonly type: 'connected'; readonly connId: number; readonly at: number }
  /**
   * `connId`: the birth is also the news of its connection, on a broker whose
   * connection events the hub does not see (an external one, issue #18).
   */
  | { readonly type: 'birth'; readonly epoch: number; readonly storeId: string; readonly at: number; readonly connId?: number }
  /** `reason`: the death also ends the connection, with this reason (an external broker does not say whether it was a clean stop or a Will). */
  | { readonly type: 'death'; readonly epoch: number; readonly storeId?: string | undefined; readonly at: number; readonly reason?: string }
  | { readonly type: 'disconnected'; readonly connId: number; readonly reason: string; readonly at: number }
  | { readonly type: 'hubStart'; readonly at: number }

export interface PresenceChange {
  readonly status: PresenceStatus
  readonly reason: string
  readonly at: number
  readonly epoch: number | null
}

export interface Transition {
  readonly state: PresenceState
  /** Set when status changed: this is what goes into the history. */
  readonly change: PresenceChange | undefined
  /** Set when the event was ignored, with why (for logs and tests). */
  readonly ignored: string | undefined
}

export function initialPresence(at: number): PresenceState {
  return { status: 'offline', reason: 'never-connected', since: at, connId: null, epoch: null, storeId: null, birthConnId: null }
}

function to(state: PresenceState, status: PresenceStatus, reason: string, at: number, patch: Partial<PresenceState>): Transition {
  const next: PresenceState = { ...state, ...patch }
  if (state.status === status) return { state: next, change: undefined, ignored: undefined }
  const changed: PresenceState = { ...next, status, reason, since: at }
  return { state: changed, change: { status, reason, at, epoch: changed.epoch }, ignored: undefined }
}

function ignore(state: PresenceState, why: string): Transition {
  return { state, change: undefined, ignored: why }
}

export function nextPresence(state: PresenceState, event: PresenceEvent): Transition {
  switch (event.type) {
    case 'connected':
      return to(state, 'offline', 'reconnected', event.at, { connId: event.connId, birthConnId: null })
    case 'birth': {
      const connId = event.connId ?? state.connId
      if (connId === null) return ignore(state, 'birth without a connection')
      if (state.epoch !== null && event.storeId === state.storeId && event.epoch < state.epoch) {
        return ignore(state, `stale birth: epoch ${event.epoch} < ${state.epoch}`)
      }
      return to(state, 'online', 'birth', event.at, { epoch: event.epoch, storeId: event.storeId, connId, birthConnId: connId })
    }
    case 'death':
      if (event.storeId !== undefined && state.storeId !== null && event.storeId !== state.storeId) {
        return ignore(state, `death of another store ${event.storeId}`)
      }
      if (state.epoch !== null && event.epoch < state.epoch) return ignore(state, `late death: epoch ${event.epoch} < ${state.epoch}`)
      if (event.reason !== undefined) return to(state, 'offline', event.reason, event.at, { epoch: Math.max(event.epoch, state.epoch ?? 0), connId: null, birthConnId: null })
      return to(state, 'offline', state.connId !== null ? 'shutdown' : 'will', event.at, { epoch: Math.max(event.epoch, state.epoch ?? 0), birthConnId: null })
    case 'disconnected':
      if (state.connId !== event.connId) return ignore(state, `disconnect of an old connection ${event.connId}`)
      return to(state, 'offline', event.reason, event.at, { connId: null, birthConnId: null })
    case 'hubStart':
      return to(state, 'offline', 'hub-restart', event.at, { connId: null, birthConnId: null })
    default: {
      const never: never = event
      return never
    }
  }
}

/** "Reachable" (DESIGN.md): connected now, birth received for this connection's epoch. */
export function isReachable(state: PresenceState): boolean {
  return state.status === 'online' && state.connId !== null && state.birthConnId === state.connId
}
