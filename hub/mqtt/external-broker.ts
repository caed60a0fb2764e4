import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt'
import type { Logger } from '../../common/logger.js'
import { systemClock } from '../../common/clock.js'
import { createLogLimiter, LOG_LIMITER_DEFAULTS } from '../../common/log-limiter.js'
import { RollcallError } from '../../common/errors.js'
import type { Broker, BrokerStats, InboundMessage, ListeningPorts, MessageHandler, SubscribeOptions } from '../../broker/types.js'

/**
 * The hub as a client of a broker it does not run (issue #18: Mosquitto,
 * EMQX, ...). The broker holds the devices' connections and enforces their
 * ACL; the hub subscribes to what devices publish and publishes what it sends
 * them, through one MQTT 5 connection.
 *
 * - Shared subscriptions (`$share/{group}/...`) hand each up-message to one
 *   hub of the group; a subscription that every hub needs (the retained
 *   births and deaths, the dynamic-security replies) is not shared.
 * - The session is persistent (a fixed client id, no clean start, a session
 *   expiry), so what devices publish while the hub restarts waits in the
 *   broker, up to its own queue limit (Mosquitto: max_queued_messages).
 *   Telemetry does not depend on it: a batch no ack covered is sent again.
 * - The publisher of a message is not part of MQTT: the broker's ACL lets only
 *   device X publish under `devices/X/`, so `publisherOf` names it from the topic.
 * - Connection events, a connection's writes and closing one connection are
 *   the broker's: presence comes from births and Wills (hub/presence), and a
 *   device is cut off by changing its account (hub/mqtt/dynsec.ts).
 */

export interface ExternalBrokerOptions {
  /** mqtt://host:port or mqtts://host:port. */
  readonly url: string
  readonly username?: string | undefined
  readonly password?: string | undefined
  /** PEM file of the CA that signed the broker's certificate, for mqtts:// with a private CA. */
  readonly caFile?: string | undefined
  /** The hub's client id on the broker: one per hub, stable across restarts (its session lives on). */
  readonly clientId: string
  /** The shared-subscription group of the hubs that split the fleet's messages between them. */
  readonly shareGroup: string
  /** Seconds the broker keeps the hub's session (and queues its messages) while it is away. */
  readonly sessionExpirySec: number
  /** Who published a message, from its topic (the ACL makes the topic say it); undefined: nobody the hub knows. */
  readonly publisherOf: (topic: string) => string | undefined
  /** The largest packet the hub takes from the broker (MQTT 5 maximum packet size). */
  readonly maxPacketBytes: number
  readonly logger: Logger
}

/**
 * The hub's client id on the broker when the config gives none: made once,
 * kept in the data dir, so it is the same across restarts (the broker keeps
 * the hub's session) and differs between hubs, whatever their host names.
 */
export function brokerClientIdOf(dataDir: string): string {
  const file = join(dataDir, 'broker-client-id')
  if (existsSync(file)) {
    const id = readFileSync(file, 'utf8').trim()
    if (id !== '') return id
  }
  const id = `rollcall-hub-${randomBytes(6).toString('hex')}`
  writeFileSync(file, `${id}\n`, { mode: 0o600 })
  return id
}


/** A filter's levels, a shared one's `$share/{group}/` left out: split once per subscription, not per message. */
function filterLevels(filter: string): readonly string[] {
  const levels = filter.split('/')
  return filter.startsWith('$share/') ? levels.slice(2) : levels
}

/** Whether an MQTT filter (a shared one's `$share/{group}/` left out) matches a topic. */
export function filterMatches(filter: string, topic: string): boolean {
  return levelsMatch(filterLevels(filter), topic)
}

function levelsMatch(f: readonly string[], topic: string): boolean {
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return !(i === 0 && topic.startsWith('$'))
    if (i >= t.length) return false
    if (f[i] === '+') {
      if (i === 0 && topic.startsWith('$')) return false
      continue
    }
    if (f[i] !== t[i]) return false
  }
  return f.length === t.length
}

interface Route { readonly filter: string; readonly levels: readonly string[]; readonly handler: MessageHandler; readonly qos: 0 | 1 }

const NO_LIMITS = {
  pendingPerAddress: 0, pendingEvicted: 0, maxConnections: 0, banned: 0, clientRate: 0, globalRate: 0, filtersPerSubscribe: 0, subscriptionsPerClient: 0,
} as const

/** Where the broker's address or credentials are wrong, the message says which and what to check. */
function connectFailure(url: string, err: Error): RollcallError {
  const reason = /Not authorized|Bad User Name or Password|bad username/i.test(err.message)
    ? 'it refused the hub\'s credentials: check brokerUsername and the password file, and that the client exists on the broker'
    : err.message
  return new RollcallError('UNAVAILABLE', `cannot connect to the broker at ${url}: ${reason}`)
}

/** How long the hub waits for the broker at its start, and for its goodbye at its stop. */
const CONNECT_TIMEOUT_MS = 10_000
const CLOSE_TIMEOUT_MS = 5000
/**
 * Messages held while no subscription of this run matches them: the broker
 * sends what it queued for the hub's session as soon as it connects, before
 * the hub has subscribed its handlers again. Beyond this, the oldest are dropped
 * (telemetry is sent again by its agent; the count is logged).
 */
const MAX_UNROUTED = 100_000
const MAX_UNROUTED_BYTES = 64 * 1024 * 1024

export function createExternalBroker(options: ExternalBrokerOptions): Broker {
  const log = options.logger.child({ component: 'external-broker' })
  // A device that keeps sending garbage asks for a cut-off per message: those lines are bounded.
  const limitedLog = createLogLimiter({ ...LOG_LIMITER_DEFAULTS, logger: log, clock: systemClock })
  const routes = new Map<number, Route>()
  let unrouted: InboundMessage[] = []
  let unroutedBytes = 0
  let unroutedDropped = 0
  let nextSubscriptionId = 1
  let client: MqttClient | undefined
  let received = 0
  let published = 0
  let cutOffsRefused = 0

  function clientOptions(): IClientOptions {
    return {
      protocolVersion: 5,
      clientId: options.clientId,
      clean: false,
      properties: {
        sessionExpiryInterval: options.sessionExpirySec,
        // The whole fleet's messages come down this one connection: the broker may send this many
        // unacknowledged at once (Mosquitto otherwise keeps 20 in flight per client, a ceiling on ingest).
        receiveMaximum: 65_535,
        // Larger messages are the broker's to drop, not the hub's to buffer.
        maximumPacketSize: options.maxPacketBytes,
      },
      ...(options.username !== undefined ? { username: options.username } : {}),
      ...(options.password !== undefined ? { password: options.password } : {}),
      ...(options.caFile !== undefined ? { ca: readFileSync(options.caFile) } : {}),
      reconnectPeriod: 1000,
      connectTimeout: CONNECT_TIMEOUT_MS,
      // The hub subscribes again itself at each connection (below).
      resubscribe: false,
    }
  }

  function run(route: Route, message: InboundMessage): void {
    try {
      const done = route.handler(message)
      if (done instanceof Promise) done.catch((err: unknown) => { log.error({ err, topic: message.topic, filter: route.filter }, 'a subscriber failed on a message from the broker') })
    } catch (err) {
      log.error({ err, topic: message.topic, filter: route.filter }, 'a subscriber threw on a message from the broker')
    }
  }

  function deliver(topic: string, payload: Buffer, packet: IPublishPacket): void {
    received++
    const ids = packet.properties?.subscriptionIdentifier
    const list = ids === undefined ? [] : Array.isArray(ids) ? ids : [ids]
    const message: InboundMessage = { topic, payload, clientId: options.publisherOf(topic) }
    // By subscription number, checked against the filter: a number of an earlier run (its session kept it) may name another filter now.
    const byId = list.flatMap((id) => routes.get(id) ?? []).filter((r) => levelsMatch(r.levels, topic))
    const matched = byId.length > 0 ? byId : [...routes.values()].filter((r) => levelsMatch(r.levels, topic))
    if (matched.length === 0) {
      hold(message)
      return
    }
    for (const route of matched) run(route, message)
  }

  function hold(message: InboundMessage): void {
    unrouted.push(message)
    unroutedBytes += message.payload.length
    while (unrouted.length > MAX_UNROUTED || unroutedBytes > MAX_UNROUTED_BYTES) {
      unroutedBytes -= unrouted.shift()!.payload.length
      if (unroutedDropped++ === 0) log.warn({ maxMessages: MAX_UNROUTED, maxBytes: MAX_UNROUTED_BYTES }, 'messages the hub has no subscription for yet overflowed; the oldest are dropped (counted in /api/stats)')
    }
  }

  /** What the session delivered before this route existed goes to it now, in order. */
  function replayTo(route: Route): void {
    if (unrouted.length === 0) return
    const mine: InboundMessage[] = []
    const rest: InboundMessage[] = []
    for (const m of unrouted) (levelsMatch(route.levels, m.topic) ? mine : rest).push(m)
    if (mine.length === 0) return
    unrouted = rest
    for (const m of mine) {
      unroutedBytes -= m.payload.length
      run(route, m)
    }
  }

  function connected(): MqttClient {
    if (client?.connected !== true) throw new RollcallError('UNAVAILABLE', `the hub is not connected to the broker at ${options.url} now; it is reconnecting`)
    return client
  }

  /** Every route's SUBSCRIBE again: retained births and deaths are sent again with it, so presence is repaired after an outage. */
  function subscribeAll(c: MqttClient): Promise<void> {
    return Promise.all([...routes.entries()].map(([id, r]) => subscribeOn(c, id, r))).then(() => undefined)
  }

  const broker: Broker = {
    port: 0,
    listen(): Promise<ListeningPorts> {
      return new Promise((resolve, reject) => {
        const c = connect(options.url, clientOptions())
        client = c
        let settled = false
        const timer = setTimeout(() => {
          if (settled) return
          settled = true
          c.end(true)
          reject(new RollcallError('UNAVAILABLE', `cannot connect to the broker at ${options.url}: no answer within ${CONNECT_TIMEOUT_MS} ms`))
        }, CONNECT_TIMEOUT_MS)
        c.on('message', deliver)
        c.on('connect', (connack) => {
          log.info({ url: options.url, sessionPresent: connack.sessionPresent }, 'connected to the broker')
          const subscribed = subscribeAll(c)
          if (settled) {
            subscribed.catch((err: unknown) => { log.error({ err }, 'could not subscribe again after reconnecting to the broker') })
            return
          }
          settled = true
          clearTimeout(timer)
          subscribed.then(() => { resolve({ port: 0 }) }, reject)
        })
        c.on('error', (err) => {
          if (!settled) {
            settled = true
            clearTimeout(timer)
            c.end(true)
            reject(connectFailure(options.url, err))
            return
          }
          log.warn({ err, url: options.url }, 'broker connection error; reconnecting')
        })
        c.on('offline', () => { if (client === c) log.warn({ url: options.url }, 'lost the broker; reconnecting') })
      })
    },
    setSecureContext(): void {
      // The broker serves its own TLS; the hub's certificate is for its HTTP API only.
    },
    async subscribe(filter: string, handler: MessageHandler, subscribeOptions?: SubscribeOptions): Promise<void> {
      const id = nextSubscriptionId++
      const full = subscribeOptions?.shared === true ? `$share/${options.shareGroup}/${filter}` : filter
      const route: Route = { filter: full, levels: filterLevels(full), handler, qos: subscribeOptions?.qos ?? 1 }
      routes.set(id, route)
      replayTo(route)
      if (client?.connected === true) await subscribeOn(client, id, route)
    },
    async publish(topic: string, payload: Buffer, publishOptions: { qos: 0 | 1; retain?: boolean }): Promise<void> {
      // Not queued while the broker is away: a command fails fast, and its caller hears why.
      const c = connected()
      published++
      await c.publishAsync(topic, payload, { qos: publishOptions.qos, retain: publishOptions.retain ?? false })
    },
    sendDirect(_clientId: string, topic: string, payload: Buffer): boolean {
      // Routed by the broker like any QoS 0 message: only the device may subscribe to its down-topics.
      if (client?.connected !== true) return false
      published++
      client.publish(topic, payload, { qos: 0 })
      return true
    },
    flushWrites(): void {
      // The broker writes to devices, not the hub.
    },
    sealWrites(): () => void {
      return () => undefined
    },
    disconnect(clientId: string, reason: string): void {
      // MQTT gives a client no way to close another's connection; an account change does (dynsec.ts).
      cutOffsRefused++
      limitedLog.log('warn', { clientId }, { reason }, 'the broker holds this connection; the hub cannot close it (remove the device or give it a new token to cut it off)')
    },
    disconnectPrincipal(): number {
      // Removing or changing the account on the broker closes its connections (dynsec.ts).
      return 0
    },
    isConnected(): boolean {
      return false
    },
    on(): void {
      // Nothing to listen to: connection events and refusals stay in the broker.
    },
    stats(): BrokerStats {
      return {
        connections: client?.connected === true ? 1 : 0, sockets: 0, pending: 0, acceptsRefused: 0, connectsAccepted: 0, connectsRefused: 0,
        violations: 0, slowConsumersCut: 0, forwardsDropped: 0, tlsHandshakesFailed: 0, queuedMessages: 0, oldestQueuedMs: 0,
        limits: NO_LIMITS, writeReleases: { commit: 0, timer: 0, single: 0, flush: 0 },
        external: { url: options.url, connected: client?.connected === true, received, published, cutOffsRefused, unroutedHeld: unrouted.length, unroutedDropped },
      }
    },
    async close(): Promise<void> {
      limitedLog.close()
      const c = client
      client = undefined
      if (c === undefined) return
      // A broker that is away cannot take a goodbye: closed at once then, or after a bounded wait.
      if (!c.connected) {
        await c.endAsync(true)
        return
      }
      let timer: NodeJS.Timeout | undefined
      await Promise.race([c.endAsync(), new Promise<void>((resolve) => { timer = setTimeout(resolve, CLOSE_TIMEOUT_MS) })])
      clearTimeout(timer)
      // A second end() does nothing while the first is under way: the socket itself is closed.
      if (!c.disconnected) c.stream.destroy()
    },
  }

  function subscribeOn(c: MqttClient, id: number, { filter, qos }: Route): Promise<void> {
    return c.subscribeAsync(filter, { qos, properties: { subscriptionIdentifier: id } }).then(() => undefined, (err: unknown) => {
      const code = (err as { packet?: { granted?: number[] } }).packet?.granted?.find((g) => g >= 0x80)
      throw new RollcallError('FORBIDDEN', `the broker refused the hub's subscription to ${filter}${code === undefined ? `: ${(err as Error).message}` : ` (reason 0x${code.toString(16)})`}: give the hub's broker account the rights of the rollcall-hub role (docs/scale-out.md)`)
    })
  }

  return broker
}
