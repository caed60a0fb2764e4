import { EventEmitter } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer, type SecureContextOptions, type Server as TlsServer } from 'node:tls'
import { generate as generatePacket } from 'mqtt-packet'
import { Aedes, type AedesPublishPacket, type AuthenticateError, type Client, type ConnectPacket, type Subscription } from 'aedes'
import { canPublish, canSubscribe } from './acl.js'
import { decideConnect, refuse, type ConnectDecision, type ConnectPolicy } from './connect-policy.js'
import { MAX_CLIENT_ID_LENGTH } from '../protocol/ids.js'
import { topicDeviceId } from '../protocol/topics.js'
import { ConnectionTable } from './connections.js'
import { GuardError, PacketGuard } from './packet-guard.js'
import { deliverAtGrantedQos, type DeliveringClient } from './delivery-qos.js'
import { createKeyedTokenBuckets, createTokenBucket } from './rate-limiter.js'
import { AUTH_FAILURE_DEFAULTS, createAuthFailures } from './auth-failures.js'
import { createPendingSockets, decideAccept } from './accept-policy.js'
import { createMessageQueue, oldestQueuedMs, queuedMessages } from './message-queue.js'
import { createRetainedPersistence } from './retained-index.js'
import { decideSubscribeLimit } from './subscribe-limits.js'
import { MAX_TIMER_MS, WriteCoalescer } from './write-coalescer.js'
import { clockWithTime, systemMonotonic } from '../common/clock.js'
import { createLogLimiter, LOG_LIMITER_DEFAULTS } from '../common/log-limiter.js'
import type {
  Broker, BrokerEvents, BrokerOptions, BrokerStats, ConnectionInfo, DisconnectReason, InboundMessage, LimitCounts, ListeningPorts, MessageHandler, Principal,
} from './types.js'

/**
 * Room in a packet's remaining length beyond the payload: topic (2 + bytes),
 * packet id (2), or a CONNECT's fixed fields, credentials and Will topic.
 * Our own topics are under 100 bytes; 1 KiB leaves room for anonymous
 * clients' topics without letting a payload grow much past the limit before
 * authorizePublish checks it exactly.
 */
export const PACKET_HEADROOM_BYTES = 1024

function principalKey(p: Principal): string {
  return p.kind === 'device' ? `device:${p.id}` : p.kind === 'observer' ? `observer:${p.name}` : 'anonymous'
}

/** Whose connect bucket a CONNECT spends (M14d): the principal's, or for anonymous clients their source address's. */
function rateKey(p: Principal, remoteAddress: string | undefined): string {
  return p.kind === 'anonymous' ? `anonymous:${remoteAddress ?? ''}` : principalKey(p)
}

/** Per-client connect buckets kept at most; past it the least recently used are forgotten. */
const MAX_RATE_KEYS = 100_000

/**
 * Bytes that may wait unsent in a lossy (observer, anonymous) client's socket,
 * on top of the kernel's buffers, before its messages are dropped.
 */
export const LOSSY_BUFFER_BYTES = 1024 * 1024

/** What the pending-socket limits track: a PacketGuard, or a TLS listener's raw socket before its handshake ends. */
interface PendingSocket { destroy(): unknown; readonly remoteAddress?: string | undefined }

class Refusal extends Error {
  readonly returnCode: 2 | 3 | 4 | 5
  constructor(returnCode: 2 | 3 | 4 | 5, reason: string) {
    super(reason)
    this.returnCode = returnCode
  }
}

type Emit = <E extends keyof BrokerEvents>(event: E, ...args: BrokerEvents[E]) => void

/** Connections the kernel may hold completed or half-open before accept (Node's default is 511). */
const LISTEN_BACKLOG = 8192

export function createBroker(options: BrokerOptions): Broker {
  validateOptions(options)
  const log = options.logger.child({ component: 'broker' })
  const events = new EventEmitter()
  const table = new ConnectionTable()
  const bucket = createTokenBucket({ ratePerSec: options.connectRatePerSec, burst: options.connectBurst, clock: options.clock })
  const clientBuckets = createKeyedTokenBuckets({
    ratePerSec: options.clientConnectRatePerSec, burst: options.clientConnectBurst, clock: options.clock, maxKeys: MAX_RATE_KEYS,
  })
  const authFailures = createAuthFailures({ ...AUTH_FAILURE_DEFAULTS, clock: options.clock })
  // Every line a client's packets can make the broker write goes through here (M24).
  const limitedLog = createLogLimiter({ ...LOG_LIMITER_DEFAULTS, logger: log, clock: options.clock })
  const connectPackets = new WeakMap<Client, ConnectPacket>()
  const sockets = new Set<PacketGuard>()
  // PacketGuards waiting for their CONNECT, and raw TLS sockets still in their handshake.
  const pending = createPendingSockets<PendingSocket>()
  // A TLS listener's raw sockets by remote address and port, so the handshake's end can settle the one it wrapped.
  const handshaking = new Map<string, Socket>()
  // Filters a connection holds, and the position in its SUBSCRIBE of each filter past maxFiltersPerSubscribe.
  const held = new WeakMap<Client, Set<string>>()
  const overPacketCap = new WeakMap<object, number>()
  const policy: ConnectPolicy = options
  const counters = { acceptsRefused: 0, connectsAccepted: 0, connectsRefused: 0, violations: 0, slowConsumersCut: 0, forwardsDropped: 0, tlsHandshakesFailed: 0 }
  const limits: { -readonly [K in keyof LimitCounts]: number } = {
    pendingPerAddress: 0, pendingEvicted: 0, maxConnections: 0, banned: 0, clientRate: 0, globalRate: 0, filtersPerSubscribe: 0, subscriptionsPerClient: 0,
  }

  let server: Server | undefined
  let tlsServer: TlsServer | undefined
  let boundPort = 0
  let started: Promise<ListeningPorts> | undefined
  let closing: Promise<void> | undefined

  // A listener that throws must not unwind into aedes's connect or close path.
  const emit: Emit = (event, ...args) => {
    try {
      events.emit(event, ...args)
    } catch (err) {
      log.error({ err, event }, 'broker event listener threw')
    }
  }

  function violation(info: Partial<ConnectionInfo>, code: string, detail: string, topic?: string): void {
    counters.violations++
    emit('violation', info, code, detail, topic)
  }

  function partialInfo(client: Client): Partial<ConnectionInfo> {
    const known = table.infoOf(client)
    if (known !== undefined) return known
    const remoteAddress = client.conn instanceof PacketGuard ? client.conn.remoteAddress : undefined
    return client.id ? { clientId: client.id, remoteAddress } : { remoteAddress }
  }

  // --- aedes hooks: adapters between aedes callbacks and the pure policies ---

  // preConnect sees the whole CONNECT packet; authenticate only gets the credentials.
  function preConnect(client: Client, packet: ConnectPacket, done: (error: Error | null, success: boolean) => void): void {
    connectPackets.set(client, packet)
    done(null, true)
  }

  function authenticate(
    client: Client,
    username: Readonly<string | undefined>,
    password: Readonly<Buffer | undefined>,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const packet = connectPackets.get(client)
    connectPackets.delete(client)
    // Its CONNECT is being decided now: the socket no longer counts as pending.
    if (client.conn instanceof PacketGuard) pending.settle(client.conn)
    // A CONNECT still in aedes's pipeline when the broker closes: the stores behind the checks
    // may be closed already (the hub closes its database next), so it is refused unchecked, quietly.
    if (closing !== undefined) {
      done(new Refusal(3, 'the broker is closing'), null)
      return
    }
    const remoteAddress = client.conn instanceof PacketGuard ? client.conn.remoteAddress : undefined
    const decision = decide(client, packet, username, password, remoteAddress)
    if (decision.ok) {
      accept(client, decision.principal)
      done(null, true)
      return
    }
    const context = { clientId: packet?.clientId, username, code: decision.code, reason: decision.reason }
    counters.connectsRefused++
    if (decision.code === 'RATE_LIMITED') {
      limitedLog.log('debug', { remoteAddress }, context, 'connect refused')
    } else {
      limitedLog.log('warn', { remoteAddress }, context, 'connect refused')
      violation({ clientId: packet?.clientId, remoteAddress }, decision.code, decision.reason)
      if (authFailures.failed(remoteAddress)) {
        log.warn({ remoteAddress, banMs: AUTH_FAILURE_DEFAULTS.banMs }, 'too many refused CONNECTs from this address: its new connections are closed for a while')
      }
    }
    done(new Refusal(decision.returnCode, decision.reason), null)
  }

  function decide(client: Client, packet: ConnectPacket | undefined,
    username: string | undefined, password: Buffer | undefined, remoteAddress: string | undefined): ConnectDecision {
    if (packet === undefined) return refuse('CREDENTIALS_REFUSED', 'no CONNECT packet seen')
    const will = packet.will
    let decision: ConnectDecision
    try {
      decision = decideConnect({
        clientId: packet.clientId,
        clean: packet.clean ?? true,
        keepaliveSec: packet.keepalive ?? 0,
        username,
        password,
        will: will === undefined ? undefined : {
          topic: will.topic,
          retain: will.retain ?? false,
          payloadBytes: typeof will.payload === 'string' ? Buffer.byteLength(will.payload) : will.payload.length,
        },
      }, policy)
    } catch (err) {
      log.error({ err, clientId: client.id }, 'credential check threw')
      return { ok: false, code: 'CREDENTIALS_REFUSED', returnCode: 3, reason: 'credential check failed' }
    }
    if (!decision.ok) return decision
    // Only CONNECTs that authenticated take a token: refused ones cannot use up a fleet's reconnects.
    // The client's own bucket first (M14d): a client in a reconnect loop is refused there and never
    // reaches the global bucket, which stays the last line for a whole fleet at once.
    const key = rateKey(decision.principal, remoteAddress)
    if (!clientBuckets.take(key)) {
      limits.clientRate++
      return refuse('RATE_LIMITED', 'connect rate limit of this client (clientConnectRatePerSec)')
    }
    if (!bucket.take()) {
      // Not admitted, so not charged: the client's next try is not held against it.
      clientBuckets.refund(key)
      limits.globalRate++
      return refuse('RATE_LIMITED', 'connect rate limit of the broker (connectRatePerSec)')
    }
    return decision
  }

  function accept(client: Client, principal: Principal): void {
    const guard = client.conn as PacketGuard
    // Before any subscription is made or restored: each binds the client's delivery functions.
    deliverAtGrantedQos(client as unknown as DeliveringClient)
    if (principal.kind !== 'device') guard.setLossy(LOSSY_BUFFER_BYTES)
    table.authenticated(client, client.id, principal, guard.remoteAddress)
    guard.once('close', () => table.socketClosed(client))
  }

  // Also asked for a client's Will when it is published; the Will was checked against the ACL at CONNECT.
  function authorizePublish(client: Client | null, packet: { topic: string; retain?: boolean; payload: Buffer | string }, done: (error?: Error | null) => void): void {
    const principal = table.principalOf(client)
    if (client === null || principal === undefined) {
      done(new Error('publisher not authenticated'))
      return
    }
    const bytes = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length
    const verdict = bytes > options.maxPayloadBytes
      ? { ok: false as const, code: 'PAYLOAD_TOO_LARGE', reason: `payload of ${bytes} bytes above ${options.maxPayloadBytes}` }
      : { ...canPublish(principal, packet.topic, packet.retain ?? false), code: 'PUBLISH_DENIED' }
    if (verdict.ok) {
      done(null)
      return
    }
    limitedLog.log('warn', { clientId: client.id }, { topic: packet.topic, reason: verdict.reason }, 'publish denied, closing connection')
    table.noteReason(client, 'kicked', `${verdict.code}: ${verdict.reason}`)
    violation(partialInfo(client), verdict.code, verdict.reason, packet.topic)
    // In 3.1.1 an error here closes the connection: there is no negative PUBACK.
    done(new Error(verdict.reason))
  }

  function authorizeSubscribe(client: Client, sub: Subscription, done: (error: Error | null, subscription?: Subscription | null) => void): void {
    const principal = table.principalOf(client)
    let filters = held.get(client)
    if (filters === undefined) {
      filters = new Set()
      held.set(client, filters)
    }
    // The caps first: they are cheaper than the ACL and say more about a flood of filters.
    const capped = decideSubscribeLimit({ indexInPacket: overPacketCap.get(sub) ?? 0, held: filters.size, alreadyHeld: filters.has(sub.topic) }, options)
    const verdict = !capped.ok ? capped
      : principal === undefined ? { ok: false as const, reason: 'not authenticated' } : canSubscribe(principal, sub.topic)
    if (verdict.ok) {
      filters.add(sub.topic)
      done(null, sub)
      return
    }
    if (!capped.ok) limits[capped.limit]++
    limitedLog.log('warn', { clientId: client.id }, { filter: sub.topic, reason: verdict.reason }, 'subscribe denied')
    violation(partialInfo(client), capped.ok ? 'SUBSCRIBE_DENIED' : 'SUBSCRIBE_LIMIT', verdict.reason)
    // null (not an error) makes aedes answer SUBACK 0x80 for this filter and keep the connection [MQTT-3.9.3].
    done(null, null)
  }

  /**
   * Notes the position of each filter past maxFiltersPerSubscribe in its
   * SUBSCRIBE. authorizeSubscribe sees one filter at a time, never its packet,
   * so this listens on the client's MQTT parser ahead of aedes: aedes 1.x keeps
   * it as `_parser`, which is not public API. Without it (a later aedes) the
   * per-SUBSCRIBE cap is off, maxSubscriptionsPerClient still applies, the
   * broker says so once, and broker.subscribe-limits.test.ts fails.
   */
  let parserMissingLogged = false
  function notePacketPositions(client: Client): void {
    const parser = (client as unknown as { _parser?: unknown })._parser
    if (!(parser instanceof EventEmitter)) {
      if (!parserMissingLogged) log.error('aedes client has no MQTT parser to listen on: maxFiltersPerSubscribe is not enforced')
      parserMissingLogged = true
      return
    }
    const cap = options.maxFiltersPerSubscribe
    parser.prependListener('packet', (packet: { cmd?: unknown; subscriptions?: unknown }) => {
      if (packet.cmd !== 'subscribe' || !Array.isArray(packet.subscriptions)) return
      const subs: unknown[] = packet.subscriptions
      for (let i = cap; i < subs.length; i++) {
        const sub = subs[i]
        if (typeof sub === 'object' && sub !== null) overPacketCap.set(sub, i)
      }
    })
  }

  // Retained replays (retain set) stream at the subscriber's own pace, so only live forwards are dropped.
  function authorizeForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const conn = client.conn
    if (conn instanceof PacketGuard && conn.lossy && !packet.retain && conn.congested) {
      counters.forwardsDropped++
      return null
    }
    return packet
  }

  // On real, steady time, as the writer's commit delay it pairs with: a manual clock in a test must not hold a
  // CONNACK, and a wall clock set back must not stretch a hold.
  const coalescer = options.writeCoalesceMs !== undefined && options.writeCoalesceMs > 0
    ? new WriteCoalescer(options.writeCoalesceMs, clockWithTime(() => systemMonotonic.now()))
    : undefined
  /**
   * A client waits on its CONNACK and SUBACKs before it does anything else, so they leave at once rather than
   * with the next commit, whose fsync may take up to the coalescer's sealed cap on a hub at its limit.
   */
  const releaseHandshake = (client: Client): void => {
    if (coalescer !== undefined && client.conn instanceof PacketGuard) coalescer.release(client.conn)
  }

  // aedes's routing queue, with an O(1) dequeue: see message-queue.ts.
  const mq = createMessageQueue()
  const aedes = new Aedes({
    mq,
    // Retained lookups by exact topic in O(1): see retained-index.ts.
    persistence: createRetainedPersistence(),
    connectTimeout: options.connectTimeoutMs,
    drainTimeout: options.drainTimeoutMs,
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    preConnect,
    authenticate,
    authorizePublish,
    authorizeSubscribe,
    authorizeForward,
  })

  aedes.on('client', (client) => {
    const info = table.registered(client)
    if (info === undefined) return
    counters.connectsAccepted++
    log.info({ connId: info.connId, clientId: info.clientId, principal: info.principal.kind, remoteAddress: info.remoteAddress }, 'client connected')
    emit('connected', info)
  })

  aedes.on('clientDisconnect', (client) => {
    const guard = client.conn instanceof PacketGuard ? client.conn : undefined
    const fallback: DisconnectReason = closing !== undefined ? 'broker-closing'
      : guard?.disconnectSeen === true ? 'client-disconnect' : 'connection-lost'
    const ended = table.ended(client, fallback)
    if (ended === undefined) return
    log.info({ connId: ended.info.connId, clientId: ended.info.clientId, reason: ended.reason, detail: ended.detail }, 'client disconnected')
    emit('disconnected', ended.info, ended.reason, ended.detail)
  })

  // An unsubscribed filter no longer counts against maxSubscriptionsPerClient.
  aedes.on('unsubscribe', (topics, client) => {
    const filters = held.get(client)
    if (filters !== undefined) for (const t of topics) filters.delete(t)
  })

  aedes.on('keepaliveTimeout', (client) => {
    table.noteReason(client, 'keepalive-timeout')
  })

  // Refusals before authenticate (unsupported protocol version) are only visible here.
  aedes.on('connackSent', (packet, client) => {
    if (packet.returnCode === 1) counters.connectsRefused++
    releaseHandshake(client)
  })
  // Emitted as the SUBACK is written; mqtt-packet's writeToStream corks the stream and passes the packet on
  // in a nextTick of its own, queued before this one ('connackSent' comes from the write's callback, later).
  aedes.on('subscribe', (_subscriptions, client) => process.nextTick(releaseHandshake, client))

  aedes.on('clientError', (client, err) => onClientError(client, err))
  aedes.on('connectionError', (client, err) => onClientError(client, err))
  // Persistence failures surface here; an unhandled 'error' would kill the process.
  const aedesEmitter: EventEmitter = aedes
  aedesEmitter.on('error', (err: Error) => log.error({ err }, 'aedes error'))

  function onClientError(client: Client, err: Error): void {
    // 'drain timeout' is aedes's own drainTimeout, the backstop behind the guard's watchdog.
    const code = err instanceof GuardError ? err.code : err.message === 'drain timeout' ? 'SLOW_CONSUMER' : undefined
    const info = partialInfo(client)
    if (code === 'SLOW_CONSUMER') {
      counters.slowConsumersCut++
      table.noteReason(client, 'slow-consumer', err.message)
      log.warn({ clientId: info.clientId, detail: err.message }, 'slow consumer cut off')
    } else if (code !== undefined) {
      // Answered with CONNACK 1 by the guard (packet-guard.ts), before aedes saw the CONNECT.
      if (code === 'UNSUPPORTED_PROTOCOL') counters.connectsRefused++
      table.noteReason(client, 'kicked', `${code}: ${err.message}`)
      limitedLog.log('warn', { remoteAddress: info.remoteAddress }, { clientId: info.clientId, code, detail: err.message }, 'packet refused, closing connection')
      violation(info, code, err.message)
    } else {
      table.noteReason(client, 'connection-lost', err.message)
      log.debug({ clientId: info.clientId, err: err.message }, 'client connection error')
    }
  }

  // --- listeners ---

  /**
   * Takes an accepted socket or closes it (accept-policy.ts). Every listener
   * hands its sockets here, so the limits on sockets that have not sent
   * CONNECT yet (M15b) hold across all of them.
   */
  function admit(socket: Socket): void {
    if (!takeSocket(socket)) return
    // Nagle plus the peer's delayed ACK adds ~40 ms to every small request/response.
    socket.setNoDelay(true)
    const guard = new PacketGuard(socket, {
      maxRemainingLength: options.maxPayloadBytes + PACKET_HEADROOM_BYTES,
      drainTimeoutMs: options.drainTimeoutMs,
      coalescer,
    })
    sockets.add(guard)
    pending.add(guard, socket.remoteAddress)
    guard.once('close', () => {
      sockets.delete(guard)
      pending.settle(guard)
    })
    notePacketPositions(aedes.handle(guard))
  }

  /** The accept decision (accept-policy.ts) for a new socket: destroys it and returns false when it is refused. */
  function takeSocket(socket: Socket): boolean {
    const remoteAddress = socket.remoteAddress
    const decision = decideAccept({
      closing: closing !== undefined,
      banned: closing === undefined && authFailures.banned(remoteAddress),
      sockets: sockets.size,
      pending: pending.size,
      pendingFromAddress: pending.fromAddress(remoteAddress),
    }, options)
    if (!decision.ok) {
      if (decision.cause !== 'closing') {
        counters.acceptsRefused++
        const cause = decision.cause === 'pending-per-address' ? 'pendingPerAddress' : decision.cause === 'max-connections' ? 'maxConnections' : 'banned'
        limits[cause]++
        limitedLog.log('debug', { remoteAddress }, { open: sockets.size, pending: pending.size }, `connection refused at accept: ${decision.cause}`)
      }
      socket.destroy()
      return false
    }
    if (decision.evictOldestPending) {
      const oldest = pending.oldest()
      if (oldest !== undefined) {
        pending.settle(oldest)
        limits.pendingEvicted++
        limitedLog.log('debug', { remoteAddress: oldest.remoteAddress }, { pending: pending.size }, 'closed the socket waiting longest for its CONNECT: maxPendingConnections reached')
        oldest.destroy()
      }
    }
    return true
  }

  function onConnection(socket: Socket): void {
    admit(socket)
  }

  /**
   * A TLS listener's TCP accept: the raw socket counts as pending from here,
   * through its handshake, under the same per-address and total limits, so
   * sockets that open a handshake and stall cannot hold the TLS port (M15b).
   */
  function onTlsAccept(raw: Socket): void {
    if (!takeSocket(raw)) return
    const key = `${raw.remoteAddress ?? ''}:${raw.remotePort ?? ''}`
    pending.add(raw, raw.remoteAddress)
    handshaking.set(key, raw)
    raw.once('close', () => {
      pending.settle(raw)
      if (handshaking.get(key) === raw) handshaking.delete(key)
    })
  }

  /** The handshake is done: the raw socket stops counting, and the TLS socket is admitted like a TCP one. */
  function onTlsConnection(socket: Socket): void {
    const key = `${socket.remoteAddress ?? ''}:${socket.remotePort ?? ''}`
    const raw = handshaking.get(key)
    if (raw !== undefined) {
      handshaking.delete(key)
      pending.settle(raw)
    }
    admit(socket)
  }

  /** Binds one listener; a failure to listen (a port in use) is the caller's to report, once, in its own words. */
  async function bind(srv: Server, port: number, what: string): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject)
      // A deep accept queue: after a hub restart a whole fleet dials at once, and while the event loop is busy
      // the kernel holds the handshakes; past the queue it drops SYNs and each client waits out a
      // retransmit (1 s, 3 s, 7 s...). The kernel caps it at net.core.somaxconn.
      srv.listen({ port, host: options.host, backlog: LISTEN_BACKLOG }, () => {
        srv.off('error', reject)
        resolve()
      })
    })
    // Only errors of a listening server are logged here.
    srv.on('error', (err) => log.error({ err, listener: what }, 'listener error'))
    const address = srv.address()
    const bound = typeof address === 'object' && address !== null ? address.port : port
    log.info({ host: options.host, port: bound, listener: what }, 'broker listening')
    return bound
  }

  /**
   * MQTT over TLS: a TLSSocket, once its handshake is done, takes the same
   * path as a TCP socket (onConnection: bans, maxConnections, PacketGuard,
   * CONNECT timeout). Before that it is bounded by the handshake timeout and
   * by the server's own socket cap, so sockets that never finish a handshake
   * cannot hold more than maxConnections slots for longer than the timeout.
   */
  function tlsListener(tls: NonNullable<BrokerOptions['tls']>): TlsServer {
    const srv = createTlsServer({ ...tls.context, handshakeTimeout: tls.handshakeTimeoutMs }, onTlsConnection)
    // Before tls's own listener, which starts the handshake on the raw socket.
    srv.prependListener('connection', onTlsAccept)
    srv.maxConnections = options.maxConnections
    srv.on('tlsClientError', (err: NodeJS.ErrnoException, socket) => {
      counters.tlsHandshakesFailed++
      // Debug only: every port scanner and every client without our CA ends here.
      log.debug({ remoteAddress: socket.remoteAddress, err: err.code ?? err.message }, 'TLS handshake failed')
      socket.destroy()
    })
    return srv
  }

  async function start(): Promise<ListeningPorts> {
    await aedes.listen()
    if (options.plaintext !== false) {
      server = createServer(onConnection)
      boundPort = await bind(server, options.port, 'mqtt')
    }
    if (options.tls === undefined) return { port: boundPort }
    tlsServer = tlsListener(options.tls)
    const tlsPort = await bind(tlsServer, options.tls.port, 'mqtts')
    return { port: boundPort, tlsPort }
  }

  async function shutdown(): Promise<void> {
    await started?.catch(() => undefined)
    for (const client of table.clients()) table.noteReason(client, 'broker-closing')
    const closeServer = (srv: Server | undefined) => srv === undefined || !srv.listening
      ? Promise.resolve()
      : new Promise<void>((resolve) => srv.close(() => resolve()))
    const serverClosed = Promise.all([closeServer(server), closeServer(tlsServer)])
    await new Promise<void>((resolve) => aedes.close(() => resolve()))
    coalescer?.flush()
    // aedes closes registered clients only; sockets still before or inside CONNECT go here.
    for (const guard of sockets) guard.destroy()
    await serverClosed
    limitedLog.close()
    log.info('broker closed')
  }

  /**
   * Adapts a handler to aedes's delivery callback. Deliveries to one handler
   * are serialised: while its promise is pending the next messages wait here,
   * and each message's aedes callback is held until it is handled. Held
   * callbacks occupy aedes's bounded in-flight deliveries (mqemitter
   * `concurrency`, 100), so a handler that falls behind slows intake instead
   * of letting this queue grow without bound.
   */
  function deliverTo(handler: MessageHandler, skipDollar: boolean) {
    const waiting: Array<{ message: InboundMessage; done: () => void }> = []
    let busy = false

    const failed = (err: unknown, topic: string): void => {
      log.error({ err, topic }, 'message handler failed')
    }
    // Re-entrant calls return at once: a done() can make aedes hand over the next
    // queued message synchronously, which would otherwise recurse once per message
    // and overflow the stack on a large backlog (a fleet's Wills when many devices
    // drop at once). The loop already running picks the new message up.
    let pumping = false
    const pump = (): void => {
      if (pumping) return
      pumping = true
      try {
        while (!busy) {
          const next = waiting.shift()
          if (next === undefined) return
          let result: void | Promise<void> = undefined
          try {
            result = handler(next.message)
          } catch (err) {
            failed(err, next.message.topic)
          }
          if (result instanceof Promise) {
            busy = true
            result.catch((err: unknown) => failed(err, next.message.topic)).finally(() => {
              busy = false
              next.done()
              pump()
            })
          } else {
            next.done()
          }
        }
      } finally {
        pumping = false
      }
    }

    return (packet: AedesPublishPacket, done: () => void): void => {
      // [MQTT-4.7.2-1] a filter starting with a wildcard does not match $ topics.
      if (skipDollar && packet.topic.startsWith('$')) {
        done()
        return
      }
      const publisher = (packet as { clientId?: unknown }).clientId
      waiting.push({
        message: {
          topic: packet.topic,
          payload: typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload,
          clientId: typeof publisher === 'string' ? publisher : undefined,
        },
        done,
      })
      pump()
    }
  }

  return {
    listen() {
      if (closing !== undefined) return Promise.reject(new Error('broker is closed'))
      started ??= start()
      return started
    },
    get port() {
      return boundPort
    },
    setSecureContext(context: SecureContextOptions) {
      if (tlsServer === undefined) throw new Error('the broker has no TLS listener')
      tlsServer.setSecureContext(context)
    },
    subscribe(filter, handler) {
      if (closing !== undefined) return Promise.reject(new Error('broker is closed'))
      const skipDollar = filter.startsWith('+') || filter.startsWith('#')
      return new Promise<void>((resolve, reject) => {
        // aedes's type omits the error its topic-depth guard passes to this callback.
        const done = (err?: Error): void => (err ? reject(err) : resolve())
        aedes.subscribe(filter, deliverTo(handler, skipDollar), done)
      })
    },
    async publish(topic, payload, { qos, retain = false }) {
      if (closing !== undefined) throw new Error('broker is closed')
      // aedes's persistence exists only once it listens.
      if (started === undefined) throw new Error('broker is not listening')
      await started
      await new Promise<void>((resolve, reject) => {
        aedes.publish({ cmd: 'publish', topic, payload, qos, retain, dup: false }, (err) => (err ? reject(err) : resolve()))
      })
      // The hub publishes a command, a job batch or a doorbell after the commit that recorded it, once
      // that commit's release of held writes has passed: held, it would wait out writeCoalesceMs behind
      // the device's PUBACKs. It leaves now, with what the device's connection held.
      const deviceId = coalescer === undefined ? undefined : topicDeviceId(topic)
      const client = deviceId === undefined ? undefined : table.byClientId(deviceId)
      if (client !== undefined) coalescer!.release(client.conn as unknown as PacketGuard)
    },
    sendDirect(clientId, topic, payload) {
      const client = table.byClientId(clientId)
      if (client === undefined || client.closed || !client.connected || held.get(client)?.has(topic) !== true) return false
      // A QoS 0 PUBLISH needs no packet id and no session state: one buffer, written behind whatever aedes wrote before,
      // with what the connection holds (its PUBACKs) or at once, never starting a hold of its own.
      const packet = generatePacket({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false })
      if (client.conn instanceof PacketGuard) client.conn.writeUnheld(packet)
      else client.conn.write(packet)
      return true
    },
    flushWrites() {
      coalescer?.flush()
    },
    sealWrites() {
      return coalescer === undefined ? () => undefined : coalescer.seal()
    },
    disconnect(clientId, reason) {
      const client = table.byClientId(clientId)
      // Already closing: callers such as the bad-message budget ask again for every message over it.
      if (client === undefined || client.closed) return
      log.info({ clientId, reason }, 'disconnecting client')
      table.noteReason(client, 'kicked', reason)
      client.close()
    },
    disconnectPrincipal(principal, reason) {
      let n = 0
      // Pending clients too: a CONNECT authenticated a moment before a
      // revocation must not complete with the revoked credentials.
      for (const client of table.allClients()) {
        const info = table.infoOf(client)
        if (info === undefined || principalKey(info.principal) !== principalKey(principal)) continue
        log.info({ clientId: info.clientId, reason }, 'disconnecting client')
        table.noteReason(client, 'kicked', reason)
        client.close()
        n++
      }
      return n
    },
    isConnected(clientId) {
      const client = table.byClientId(clientId)
      return client !== undefined && !client.closed
    },
    on(event, listener) {
      events.on(event, listener as (...args: unknown[]) => void)
    },
    stats(): BrokerStats {
      return { connections: table.size, sockets: sockets.size, pending: pending.size, ...counters, queuedMessages: queuedMessages(mq), oldestQueuedMs: oldestQueuedMs(mq), limits: { ...limits },
        writeReleases: coalescer === undefined ? { commit: 0, timer: 0, single: 0, flush: 0 } : { ...coalescer.released } }
    },
    close() {
      closing ??= shutdown()
      return closing
    },
  }
}

function validateOptions(o: BrokerOptions): void {
  const problems: string[] = []
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) problems.push('port must be an integer in [0, 65535]')
  if (o.tls !== undefined && (!Number.isInteger(o.tls.port) || o.tls.port < 0 || o.tls.port > 65535)) problems.push('tls.port must be an integer in [0, 65535]')
  if (o.plaintext === false && o.tls === undefined) problems.push('with plaintext false, tls is needed: a broker with no listener')
  const positive = {
    maxPayloadBytes: o.maxPayloadBytes, maxConnections: o.maxConnections, connectRatePerSec: o.connectRatePerSec,
    connectBurst: o.connectBurst, keepaliveMinSec: o.keepaliveMinSec, keepaliveMaxSec: o.keepaliveMaxSec,
    drainTimeoutMs: o.drainTimeoutMs, connectTimeoutMs: o.connectTimeoutMs,
    maxPendingConnections: o.maxPendingConnections, maxPendingPerAddress: o.maxPendingPerAddress,
    clientConnectRatePerSec: o.clientConnectRatePerSec, clientConnectBurst: o.clientConnectBurst,
    maxFiltersPerSubscribe: o.maxFiltersPerSubscribe, maxSubscriptionsPerClient: o.maxSubscriptionsPerClient,
  }
  for (const [name, value] of Object.entries(positive)) {
    if (!(Number.isFinite(value) && value > 0)) problems.push(`${name} must be a positive number`)
  }
  if (o.writeCoalesceMs !== undefined && !(Number.isFinite(o.writeCoalesceMs) && o.writeCoalesceMs >= 0 && o.writeCoalesceMs <= MAX_TIMER_MS)) problems.push(`writeCoalesceMs must be a number from 0 to ${MAX_TIMER_MS}`)
  if (o.keepaliveMinSec > o.keepaliveMaxSec) problems.push('keepaliveMinSec must not exceed keepaliveMaxSec')
  if (o.maxPendingPerAddress > o.maxPendingConnections) problems.push('maxPendingPerAddress must not exceed maxPendingConnections')
  if (o.clientConnectBurst < 1) problems.push('clientConnectBurst must be at least 1')
  if (o.keepaliveMaxSec > 65535) problems.push('keepaliveMaxSec must fit MQTT\'s 16-bit keepalive')
  if (problems.length > 0) throw new RangeError(`invalid broker options: ${problems.join('; ')}`)
}
