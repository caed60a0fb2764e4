/**
 * How many filters a client may subscribe to (M24: one SUBSCRIBE with 10,000
 * filters, repeatable forever).
 *
 * Over a cap, the excess filters get SUBACK 0x80 and the connection stays.
 * MQTT 3.1.1 gives the server exactly this answer for a filter it will not
 * grant: the SUBACK carries one return code per filter [MQTT-3.8.4-5], 0x80
 * is "Failure" [MQTT-3.9.3], and closing the connection is reserved for
 * protocol violations [MQTT-4.8.0-1], which a long but well-formed SUBSCRIBE
 * is not. It is also how the ACL answers a denied filter, so a client sees
 * one behaviour for every refused filter. What stops a client from repeating
 * is the hub's bad-message budget: every refused filter counts against it,
 * and a client over it is disconnected (hub/mqtt/ingress.ts, badMessagesPerMinute).
 *
 * Checks, in order, for each filter:
 *   1. its position in its SUBSCRIBE   past maxFiltersPerSubscribe → 0x80
 *   2. the filters the client holds    a new one past maxSubscriptionsPerClient → 0x80
 *                                      (re-subscribing to a held filter replaces it [MQTT-3.8.4-3])
 */

export interface SubscribeLimits {
  readonly maxFiltersPerSubscribe: number
  readonly maxSubscriptionsPerClient: number
}

export interface SubscribeLimitState {
  /** 0-based position of the filter in its SUBSCRIBE packet. */
  readonly indexInPacket: number
  /** Filters the client holds now. */
  readonly held: number
  /** The client already holds this exact filter. */
  readonly alreadyHeld: boolean
}

export type SubscribeLimitVerdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly limit: 'filtersPerSubscribe' | 'subscriptionsPerClient'; readonly reason: string }

const OK: SubscribeLimitVerdict = { ok: true }

export function decideSubscribeLimit(state: SubscribeLimitState, limits: SubscribeLimits): SubscribeLimitVerdict {
  if (state.indexInPacket >= limits.maxFiltersPerSubscribe) {
    return { ok: false, limit: 'filtersPerSubscribe', reason: `more than ${limits.maxFiltersPerSubscribe} filters in one SUBSCRIBE` }
  }
  if (!state.alreadyHeld && state.held >= limits.maxSubscriptionsPerClient) {
    return { ok: false, limit: 'subscriptionsPerClient', reason: `client already holds ${limits.maxSubscriptionsPerClient} subscriptions` }
  }
  return OK
}
