import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { WriteReleases } from './write-coalescer.js'
import type { SecureContextOptions } from 'node:tls'

/**
 * Who is on the other end of a connection, decided once at CONNECT.
 * - device: clientId = username = device id, password = its token
 * - observer: username `observer:NAME`, read-only on the fleet's up-streams
 * - anonymous: only with allowAnonymous, confined to topics outside devices/# and hub/#
 */
export type Principal =
  | { readonly kind: 'device'; readonly id: string }
  | { readonly kind: 'observer'; readonly name: string }
  | { readonly kind: 'anonymous' }

/** CONNACK return codes of MQTT 3.1.1 (3.2.2.3). */
export const CONNACK = {
  ACCEPTED: 0,
  UNACCEPTABLE_PROTOCOL: 1,
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_USERNAME_OR_PASSWORD: 4,
  NOT_AUTHORIZED: 5,
} as const
export type ConnackCode = (typeof CONNACK)[keyof typeof CONNACK]

export type AuthResult =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly returnCode: 2 | 3 | 4 | 5; readonly reason: string }

/**
 * Checks credentials; supplied by the hub (registry of token hashes). Must be
 * synchronous and cheap: it runs on every CONNECT of a reconnect storm.
 */
export type CredentialCheck = (username: string, password: Buffer) => AuthResult

/** MQTT over TLS (8883 by convention): a listener of its own, whose sockets take the same path as plaintext ones once the handshake is done. */
export interface BrokerTlsOptions {
  /** 0 picks a free port. */
  readonly port: number
  /** Certificate, key and chain; replaced later with setSecureContext. */
  readonly context: SecureContextOptions
  /** A handshake not finished this soon after the accept is dropped, so half-open TLS sockets cannot pile up. */
  readonly handshakeTimeoutMs: number
}

export interface BrokerOptions {
  readonly host: string
  /** The plaintext listener's port; 0 picks a free port. */
  readonly port: number
  /** Whether to open the plaintext listener (default true); false with `tls` serves MQTT over TLS only. */
  readonly plaintext?: boolean
  readonly tls?: BrokerTlsOptions
  /**
   * Largest PUBLISH (or Will) payload. A packet whose header announces more
   * than this plus PACKET_HEADROOM_BYTES is refused before it is buffered.
   */
  readonly maxPayloadBytes: number
  readonly allowAnonymous: boolean
  /** Concurrent connections above this are refused at accept. */
  readonly maxConnections: number
  /**
   * Sockets waiting for their CONNECT to be decided, from all sources; when
   * full, the one waiting longest is closed to make room (accept-policy.ts, M15b).
   */
  readonly maxPendingConnections: number
  /** The same, from one source address; over it a new socket is closed at accept. */
  readonly maxPendingPerAddress: number
  /**
   * Token bucket per client (device id, observer name, or anonymous source
   * address), checked before the global one: a client reconnecting in a loop
   * gets CONNACK 3 from its own bucket and leaves the others' tokens alone (M14d).
   */
  readonly clientConnectRatePerSec: number
  readonly clientConnectBurst: number
  /** Token bucket for new CONNECTs of all clients: sustained rate and burst. Over it: CONNACK 3. */
  readonly connectRatePerSec: number
  readonly connectBurst: number
  /** Filters of one SUBSCRIBE past this many get SUBACK 0x80 (M24). */
  readonly maxFiltersPerSubscribe: number
  /** Subscriptions one connection may hold; new filters past it get SUBACK 0x80 (M24). */
  readonly maxSubscriptionsPerClient: number
  /** Keepalive (seconds) outside [min, max] is refused; 0 (no keepalive) counts as outside. */
  readonly keepaliveMinSec: number
  readonly keepaliveMaxSec: number
  /**
   * A subscriber whose socket does not drain for this long is cut off.
   * Observers and anonymous clients lose messages while their socket is
   * backed up instead of holding up publishers; devices are waited for.
   */
  readonly drainTimeoutMs: number
  /**
   * Hold each connection's writes until the commit that holds them releases
   * them (sealWrites) or flushWrites(), for up to this long if no commit has
   * begun since the first of them, else up to max(1 s, this); then send them
   * in one syscall (write-coalescer.ts). 0 or absent: write at once.
   */
  readonly writeCoalesceMs?: number
  /** CONNECT must arrive this soon after the TCP accept. */
  readonly connectTimeoutMs: number
  readonly checkCredentials: CredentialCheck
  /** A registered device's id is its client id alone: observers and anonymous clients may not use it (connect-policy.ts). */
  readonly isRegisteredDevice: (id: string) => boolean
  readonly logger: Logger
  readonly clock: Clock
}

export interface ConnectionInfo {
  /** Unique per connection within this broker's life; lets presence ignore a stale disconnect. */
  readonly connId: number
  readonly clientId: string
  readonly principal: Principal
  readonly remoteAddress: string | undefined
}

export type DisconnectReason =
  | 'client-disconnect' // DISCONNECT packet [MQTT-3.14.4-3]: the Will is not published
  | 'keepalive-timeout' // nothing heard for 1.5 x keepalive [MQTT-3.1.2-24]
  | 'connection-lost' // socket error or EOF without DISCONNECT
  | 'taken-over' // same client id connected again [MQTT-3.1.4-2]
  | 'kicked' // the hub's disconnect(), or the broker's policy (denied publish, oversized packet); detail says which
  | 'slow-consumer' // its socket did not drain within drainTimeoutMs
  | 'broker-closing'

export interface BrokerEvents {
  /** After authentication, before CONNACK reaches the client. */
  connected: [info: ConnectionInfo]
  disconnected: [info: ConnectionInfo, reason: DisconnectReason, detail: string | undefined]
  /**
   * A client broke a rule (already logged). Codes: PUBLISH_DENIED (connection
   * closed), SUBSCRIBE_DENIED (SUBACK 0x80, stays connected),
   * SUBSCRIBE_LIMIT (SUBACK 0x80: maxFiltersPerSubscribe or
   * maxSubscriptionsPerClient), PAYLOAD_TOO_LARGE, MALFORMED_PACKET, and the CONNECT refusals of
   * connect-policy.ts (EMPTY_ID_PERSISTENT, BAD_CLIENT_ID,
   * KEEPALIVE_OUT_OF_RANGE, ANONYMOUS_REFUSED, BAD_CREDENTIALS,
   * CREDENTIALS_REFUSED, PRINCIPAL_MISMATCH, WILL_DENIED). Rate-limited
   * CONNECTs are counted, not reported: they are the broker's choice.
   */
  violation: [info: Partial<ConnectionInfo>, code: string, detail: string, topic?: string]
}

export interface InboundMessage {
  readonly topic: string
  readonly payload: Buffer
  /** Client id of the publisher; for a Will, the client it belonged to. */
  readonly clientId: string | undefined
}

/**
 * Handler for in-process subscriptions. Messages arrive in the order the
 * broker accepted them. Returning a promise holds back further deliveries to
 * this handler until it settles, which back-pressures the publishers.
 */
export type MessageHandler = (message: InboundMessage) => void | Promise<void>

/** How often each connection limit fired, so an operator can tell which one to tune. */
export interface LimitCounts {
  /** Sockets closed at accept: their address already had maxPendingPerAddress sockets waiting for CONNECT. */
  readonly pendingPerAddress: number
  /** Sockets waiting longest for their CONNECT, closed to make room when maxPendingConnections were waiting. */
  readonly pendingEvicted: number
  /** Sockets closed at accept because maxConnections were open. */
  readonly maxConnections: number
  /** Sockets closed at accept because their address failed authentication too often (auth-failures.ts). */
  readonly banned: number
  /** CONNACK 3 from the client's own bucket (clientConnectRatePerSec). */
  readonly clientRate: number
  /** CONNACK 3 from the global bucket (connectRatePerSec). */
  readonly globalRate: number
  /** Filters answered 0x80 because their SUBSCRIBE had more than maxFiltersPerSubscribe. */
  readonly filtersPerSubscribe: number
  /** Filters answered 0x80 because the client held maxSubscriptionsPerClient. */
  readonly subscriptionsPerClient: number
}

export interface BrokerStats {
  /** Authenticated clients connected now. */
  readonly connections: number
  /** TCP connections open now, authenticated or not. */
  readonly sockets: number
  /** Sockets open now whose CONNECT is not decided yet. */
  readonly pending: number
  /** Sockets destroyed at accept (banned source, maxPendingPerAddress, maxConnections). */
  readonly acceptsRefused: number
  /** CONNACK 0 sent. */
  readonly connectsAccepted: number
  /** CONNACK 1-5 sent (rate limit, policy, credentials, protocol version). */
  readonly connectsRefused: number
  readonly violations: number
  readonly slowConsumersCut: number
  readonly forwardsDropped: number
  /** TLS handshakes that failed or timed out (a client that does not trust our certificate, a scanner, a stalled socket). */
  readonly tlsHandshakesFailed: number
  /** Messages received and waiting for a routing slot now: the broker's backlog, near 0 while it keeps up. */
  readonly queuedMessages: number
  /** How long the oldest of those has waited, in ms (0: none waits). */
  readonly oldestQueuedMs: number
  readonly limits: LimitCounts
  /** Connections whose held writes were sent, by what sent them (write-coalescer.ts); all 0 without writeCoalesceMs. */
  readonly writeReleases: WriteReleases
  /** On an external broker (hub/mqtt/external-broker.ts): the hub's own connection; the other counts above are the broker's to tell, and 0. */
  readonly external?: ExternalBrokerStats
}

export interface ExternalBrokerStats {
  readonly url: string
  /** The hub's connection to the broker is up now. */
  readonly connected: boolean
  /** Messages the broker handed the hub. */
  readonly received: number
  /** Messages the hub published. */
  readonly published: number
  /** Cut-offs the hub asked for and could not do itself (too many bad messages): the broker holds the connection. */
  readonly cutOffsRefused: number
  /** Messages the broker delivered that no subscription of this run takes (yet): held, then handed over when one does. */
  readonly unroutedHeld: number
  /** Of those, the oldest dropped because too many were held. */
  readonly unroutedDropped: number
}

/**
 * How the hub subscribes. `shared`: on an external broker, each matching
 * message goes to one hub of the group (`$share/{group}/{filter}`), so several
 * hubs split the fleet's messages; the embedded broker has one hub, and
 * ignores it.
 */
export interface SubscribeOptions {
  readonly shared?: boolean
  /**
   * The QoS the external broker delivers to the hub at (default 1). 0 for
   * messages whose loss is repaired end to end (telemetry: the agent sends
   * again what no ack covered): no PUBACK per message, less work for the
   * broker and the hub. The embedded broker hands messages over in process.
   */
  readonly qos?: 0 | 1
}

/** The bound ports: `port` is the plaintext listener's, 0 when it is off; `tlsPort` is present when TLS is on. */
export interface ListeningPorts { readonly port: number; readonly tlsPort?: number }

/** The hub's view of a broker: embedded aedes (broker.ts), or an external one the hub is a client of (hub/mqtt/external-broker.ts). */
export interface Broker {
  listen(): Promise<ListeningPorts>
  /** The bound plaintext port once listen() resolved; 0 before, or when the plaintext listener is off. */
  readonly port: number
  /** Replaces the TLS listener's certificate and key: connections from now on get the new one, open ones keep theirs. */
  setSecureContext(context: SecureContextOptions): void
  subscribe(filter: string, handler: MessageHandler, options?: SubscribeOptions): Promise<void>
  /** Publishes as the hub; a message to a device's topic leaves at once, with what its connection held (writeCoalesceMs). */
  publish(topic: string, payload: Buffer, options: { qos: 0 | 1; retain?: boolean }): Promise<void>
  /**
   * Writes `payload` on `topic` straight onto the connection holding `clientId`,
   * at QoS 0, if that connection subscribed to exactly `topic`; no routing. For
   * messages only that client may receive (a device's own down-topics, which no
   * one else may subscribe to): it spares the broker a routing pass, a packet id
   * and the client's PUBACK. Returns false when nothing was written (not
   * connected, or not subscribed yet).
   */
  sendDirect(clientId: string, topic: string, payload: Buffer): boolean
  /** Sends every write held by writeCoalesceMs now. */
  flushWrites(): void
  /**
   * Closes the set of connections whose writes are held now (the hub calls it
   * at each commit); the returned function sends exactly those (once that
   * commit's acks are written). Writes held after the call wait for the next.
   */
  sealWrites(): () => void
  /** Closes a client's connection now (revoked device, policy). No-op if not connected. */
  disconnect(clientId: string, reason: string): void
  /** Closes every connection of this principal (an observer may hold several, under any client ids). */
  disconnectPrincipal(principal: Principal, reason: string): number
  isConnected(clientId: string): boolean
  on<E extends keyof BrokerEvents>(event: E, listener: (...args: BrokerEvents[E]) => void): void
  stats(): BrokerStats
  close(): Promise<void>
}
