/**
 * Who gets a socket before anyone knows who they are (M15b).
 *
 * A socket is *pending* from the TCP accept until its CONNECT is decided
 * (accepted or refused) or it closes. Pending sockets cost a slot of
 * `maxConnections` and prove nothing, so they are limited on their own, well
 * below the global cap:
 *
 *   1. broker closing            nothing new is taken
 *   2. source banned             too many refused CONNECTs (auth-failures.ts)
 *   3. maxPendingPerAddress      one source may not hold more than this many
 *                                pending sockets: refuse the new one
 *   4. maxPendingConnections     all pending slots are taken (a flood from
 *                                many sources): the *oldest* pending socket
 *                                is closed to make room, so idle sockets are
 *                                pushed out by fresh ones and a device, whose
 *                                CONNECT follows its SYN within a round trip,
 *                                is never the one waiting longest
 *   5. maxConnections            every slot is taken: if any of them is
 *                                pending, the oldest pending one is closed
 *                                to make room (a hub full of devices must
 *                                not let idle sockets decide who gets the
 *                                last slots); if all are authenticated,
 *                                refuse
 *
 * Only sockets still waiting for their CONNECT count, and a CONNECT is decided
 * within milliseconds of arriving: a fleet behind one NAT address (or a test
 * fleet on 127.0.0.1) has few pending sockets at any moment even while
 * hundreds connect per second. A refused socket's client sees the connection
 * close and retries with its backoff.
 */

export interface AcceptLimits {
  readonly maxConnections: number
  readonly maxPendingConnections: number
  readonly maxPendingPerAddress: number
}

export interface AcceptState {
  readonly closing: boolean
  readonly banned: boolean
  /** Sockets open now, pending or authenticated. */
  readonly sockets: number
  /** Sockets waiting for their CONNECT to be decided, from every source. */
  readonly pending: number
  /** The same, from this socket's source address. */
  readonly pendingFromAddress: number
}

/** Why a socket was not taken at accept; the broker counts each. */
export const ACCEPT_REFUSALS = ['closing', 'banned', 'pending-per-address', 'max-connections'] as const
export type AcceptRefusal = (typeof ACCEPT_REFUSALS)[number]

export type AcceptDecision =
  | { readonly ok: true; readonly evictOldestPending: boolean }
  | { readonly ok: false; readonly cause: AcceptRefusal }

export function decideAccept(state: AcceptState, limits: AcceptLimits): AcceptDecision {
  if (state.closing) return { ok: false, cause: 'closing' }
  if (state.banned) return { ok: false, cause: 'banned' }
  if (state.pendingFromAddress >= limits.maxPendingPerAddress) return { ok: false, cause: 'pending-per-address' }
  // Evicting one pending socket also frees the slot of maxConnections the new one takes.
  if (state.pending >= limits.maxPendingConnections) return { ok: true, evictOldestPending: true }
  if (state.sockets >= limits.maxConnections) {
    return state.pending > 0 ? { ok: true, evictOldestPending: true } : { ok: false, cause: 'max-connections' }
  }
  return { ok: true, evictOldestPending: false }
}

/**
 * The pending sockets, oldest first, with a count per source address. `T` is
 * whatever the broker keeps per socket (its PacketGuard).
 */
export interface PendingSockets<T> {
  readonly size: number
  fromAddress(address: string | undefined): number
  add(item: T, address: string | undefined): void
  /** The CONNECT was decided or the socket closed; a no-op the second time. */
  settle(item: T): void
  oldest(): T | undefined
}

/** Sockets without an address (already closed at accept) are counted under this key. */
const NO_ADDRESS = ''

export function createPendingSockets<T>(): PendingSockets<T> {
  // Insertion order is accept order: the first key is the oldest pending socket.
  const items = new Map<T, string>()
  const perAddress = new Map<string, number>()
  return {
    get size() {
      return items.size
    },
    fromAddress(address) {
      return perAddress.get(address ?? NO_ADDRESS) ?? 0
    },
    add(item, address) {
      if (items.has(item)) return
      const key = address ?? NO_ADDRESS
      items.set(item, key)
      perAddress.set(key, (perAddress.get(key) ?? 0) + 1)
    },
    settle(item) {
      const key = items.get(item)
      if (key === undefined) return
      items.delete(item)
      const n = (perAddress.get(key) ?? 1) - 1
      if (n <= 0) perAddress.delete(key)
      else perAddress.set(key, n)
    },
    oldest() {
      return items.keys().next().value
    },
  }
}
