import { isDeviceId, MAX_CLIENT_ID_LENGTH, OBSERVER_USER_PREFIX } from '../protocol/ids.js'
import { canPublish } from './acl.js'
import { CONNACK, type CredentialCheck, type Principal } from './types.js'

/**
 * Decides a CONNECT: who the client is, and whether it may stay. Checks run
 * cheapest first, so a storm of bad CONNECTs never reaches the credential
 * check:
 *
 *   1. client id            [MQTT-3.1.3-8], length
 *   2. keepalive in range
 *   3. identity from the username: device, observer, or anonymous
 *   4. credentials          (the hub's timing-safe hash compare)
 *   5. Will topic           (the ACL the client will publish under)
 *
 * Keepalive out of range is answered with CONNACK 5 (not authorized): 3.1.1
 * has no code for it (aedes's `keepaliveLimit` sends 6, which is not a 3.1.1
 * code), 2 would blame the identifier, and 5 says "this server's policy
 * refuses you" — the reason is logged and sent as a violation event.
 */

export interface ConnectRequest {
  readonly clientId: string
  readonly clean: boolean
  readonly keepaliveSec: number
  readonly username: string | undefined
  readonly password: Buffer | undefined
  readonly will: { readonly topic: string; readonly retain: boolean; readonly payloadBytes: number } | undefined
}

export interface ConnectPolicy {
  readonly allowAnonymous: boolean
  readonly keepaliveMinSec: number
  readonly keepaliveMaxSec: number
  readonly maxPayloadBytes: number
  readonly checkCredentials: CredentialCheck
  /**
   * Whether a device with this id is registered now: its id is then its own
   * client id, which no other client may take (it would take over the
   * device's session [MQTT-3.1.4-2]). Asked only for observers and anonymous
   * clients, after the cheaper checks.
   */
  readonly isRegisteredDevice: (id: string) => boolean
}

/** Stable refusal codes and the CONNACK each answers with (3.2.2.3). */
export const CONNECT_REFUSALS = {
  EMPTY_ID_PERSISTENT: CONNACK.IDENTIFIER_REJECTED,
  BAD_CLIENT_ID: CONNACK.IDENTIFIER_REJECTED,
  KEEPALIVE_OUT_OF_RANGE: CONNACK.NOT_AUTHORIZED,
  ANONYMOUS_REFUSED: CONNACK.NOT_AUTHORIZED,
  BAD_CREDENTIALS: CONNACK.BAD_USERNAME_OR_PASSWORD,
  /** The hub's check refused with a code other than 4; its code is passed on. */
  CREDENTIALS_REFUSED: CONNACK.NOT_AUTHORIZED,
  PRINCIPAL_MISMATCH: CONNACK.NOT_AUTHORIZED,
  WILL_DENIED: CONNACK.NOT_AUTHORIZED,
  RATE_LIMITED: CONNACK.SERVER_UNAVAILABLE,
} as const satisfies Record<string, 2 | 3 | 4 | 5>
export type ConnectRefusalCode = keyof typeof CONNECT_REFUSALS

export type ConnectDecision =
  | { readonly ok: true; readonly principal: Principal }
  | {
    readonly ok: false
    readonly code: ConnectRefusalCode
    readonly returnCode: 2 | 3 | 4 | 5
    readonly reason: string
  }

export function refuse(code: ConnectRefusalCode, reason: string): ConnectDecision {
  return { ok: false, code, returnCode: CONNECT_REFUSALS[code], reason }
}

export function decideConnect(request: ConnectRequest, policy: ConnectPolicy): ConnectDecision {
  const { clientId, username } = request

  // [MQTT-3.1.3-8] a zero-byte client id needs clean session.
  if (clientId === '' && !request.clean) {
    return refuse('EMPTY_ID_PERSISTENT', 'an empty client id requires clean session')
  }
  if (clientId.length > MAX_CLIENT_ID_LENGTH) {
    return refuse('BAD_CLIENT_ID', `client id longer than ${MAX_CLIENT_ID_LENGTH} characters`)
  }

  const keepalive = request.keepaliveSec
  if (keepalive === 0 || keepalive < policy.keepaliveMinSec || keepalive > policy.keepaliveMaxSec) {
    return refuse('KEEPALIVE_OUT_OF_RANGE',
      `keepalive ${keepalive}s is outside [${policy.keepaliveMinSec}, ${policy.keepaliveMaxSec}]s`)
  }

  const claimed = claimedPrincipal(request, policy)
  if (!claimed.ok) return claimed
  const principal = claimed.principal

  if (principal.kind !== 'anonymous') {
    if (request.password === undefined) return refuse('BAD_CREDENTIALS', 'no password')
    const auth = policy.checkCredentials(username ?? '', request.password)
    if (!auth.ok) {
      const code = auth.returnCode === CONNACK.BAD_USERNAME_OR_PASSWORD ? 'BAD_CREDENTIALS' : 'CREDENTIALS_REFUSED'
      return { ok: false, code, returnCode: auth.returnCode, reason: auth.reason }
    }
    if (!samePrincipal(auth.principal, principal)) {
      return refuse('PRINCIPAL_MISMATCH', 'credentials belong to a different principal')
    }
  }

  if (request.will !== undefined) {
    if (request.will.payloadBytes > policy.maxPayloadBytes) {
      return refuse('WILL_DENIED', `will payload above ${policy.maxPayloadBytes} bytes`)
    }
    const verdict = canPublish(principal, request.will.topic, request.will.retain)
    if (!verdict.ok) return refuse('WILL_DENIED', `will: ${verdict.reason}`)
  }

  return { ok: true, principal }
}

/** The identity the CONNECT claims, before its credentials are checked. */
function claimedPrincipal(request: ConnectRequest, policy: ConnectPolicy): ConnectDecision {
  const { clientId, username } = request
  if (username === undefined) {
    if (!policy.allowAnonymous) return refuse('ANONYMOUS_REFUSED', 'anonymous connections are not allowed')
    if (policy.isRegisteredDevice(clientId)) return refuse('BAD_CLIENT_ID', DEVICE_ID_TAKEN)
    return { ok: true, principal: { kind: 'anonymous' } }
  }
  if (username.startsWith(OBSERVER_USER_PREFIX)) {
    const name = username.slice(OBSERVER_USER_PREFIX.length)
    if (!isDeviceId(name)) return refuse('BAD_CREDENTIALS', 'malformed observer name')
    if (policy.isRegisteredDevice(clientId)) return refuse('BAD_CLIENT_ID', DEVICE_ID_TAKEN)
    return { ok: true, principal: { kind: 'observer', name } }
  }
  if (!isDeviceId(username)) return refuse('BAD_CREDENTIALS', 'username is neither a device id nor observer:NAME')
  if (clientId !== username) return refuse('BAD_CLIENT_ID', 'a device\'s client id must equal its username')
  return { ok: true, principal: { kind: 'device', id: username } }
}

/**
 * Observers and anonymous clients pick any client id the specification
 * allows (`dashboard1`, `telegraf`, `a/b`, or none with clean session, for
 * which aedes assigns one [MQTT-3.1.3-6]), except a registered device's.
 */
const DEVICE_ID_TAKEN = 'client id is a registered device\'s; only that device may use it (pick another, or leave it empty for one the broker assigns)'

function samePrincipal(a: Principal, b: Principal): boolean {
  switch (a.kind) {
    case 'device':
      return b.kind === 'device' && a.id === b.id
    case 'observer':
      return b.kind === 'observer' && a.name === b.name
    case 'anonymous':
      return b.kind === 'anonymous'
  }
}
