import { EventEmitter } from 'node:events'
import type { MqttClient } from 'mqtt'
import type { Clock, ClockTimer, Random } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { encode } from '../protocol/codec.js'
import { DEVICES_PREFIX, topics } from '../protocol/topics.js'
import { createHubClient } from './hub-socket.js'
import { tlsConnectOptions, type HubTlsFiles } from './hub-tls.js'
import { birthOf, connectOptions, deathOf, type ConnectSettings, type LinkIdentity } from './link-attempt.js'
import { LinkFailures, type LinkError } from './link-failures.js'
import { planReconnect, type EndedAttempt, type ReconnectPolicy } from './reconnect.js'
import { waitAtMost } from './stop-wait.js'

/**
 * The agent's MQTT connection to the hub, with its own reconnect loop.
 *
 * States:
 *   idle        -> connecting   start()
 *   connecting  -> ready        CONNACK, SUBACK for the down-topics (acks, jobs, commands), birth published
 *   connecting  -> waiting      refused, timed out, socket error, SUBACK refused
 *   ready       -> waiting      the connection closed (emits 'disconnected')
 *   waiting     -> connecting   after planReconnect()'s delay
 *   any         -> stopped      stop() (from ready: death published, clean DISCONNECT)
 *
 * Every attempt is a fresh MQTT.js client with `reconnectPeriod: 0`, because
 * every attempt has its own epoch and so its own Will: the epoch is bumped and
 * committed in the ledger before the CONNECT goes out, so a Will can never
 * carry the epoch of a later birth (DESIGN.md, "Presence"). An attempt whose
 * socket never connected (refused, unreachable, no route) sent no CONNECT, so
 * no broker holds its Will: the next attempt reuses its epoch instead of
 * committing a new one. Offline for days, an agent would otherwise fsync the
 * ledger at every retry, which was most of what it wrote to its SD card
 * (issue #13).
 *
 * Network trouble is normal on a device: it is logged at debug/info and
 * retried, never thrown. What an attempt sends (CONNECT options, Will,
 * birth, death) is shaped in agent/link-attempt.ts; how a failed attempt is
 * named and logged is agent/link-failures.ts.
 */

export interface LinkOptions extends LinkIdentity, ConnectSettings {
  readonly hub: string
  /** PEM files for an mqtts:// hub, read at every attempt (a file replaced on disk is used on the next one). */
  readonly tls?: HubTlsFiles
  /** How long stop() waits for the death's PUBACK and the DISCONNECT to flush. */
  readonly stopTimeoutMs: number
  readonly reconnect: ReconnectPolicy
  /** Bumps and commits the persisted epoch; called before every attempt. */
  readonly nextEpoch: () => number
  /** The device's wall clock, which a birth carries for the hub to show the skew; its timers run the reconnect backoff. */
  readonly clock: Clock
  /** A birth carrying `clock: wallMs` was published (agent/hub-clock.ts times it). */
  readonly onBirthClock?: (wallMs: number) => void
  readonly random: Random
  readonly logger: Logger
}

export interface LinkEvents {
  /** The link is usable: CONNACK, birth sent, subscribed to the down-topics. */
  connected: [info: { epoch: number }]
  /** A usable connection ended. */
  disconnected: [info: { epoch: number; connectedForMs: number }]
  /** A message on one of the agent's down-topics; still untrusted bytes. */
  message: [topic: string, payload: Buffer]
}

export interface LinkStats {
  readonly connected: boolean
  readonly epoch: number
  readonly attempts: number
  readonly connects: number
  readonly disconnects: number
  /** MQTT PUBLISH packets sent and received by topic kind ('telemetry', 'jobs/pull', ...): what each pattern costs on the wire. */
  readonly messages: { readonly sent: Readonly<Record<string, number>>; readonly received: Readonly<Record<string, number>> }
  /** Why the last attempt failed, until one succeeds: the agent's answer to "why is it not connected?". */
  readonly lastError: LinkError | undefined
}

const NO_TLS_FILES: HubTlsFiles = { caFile: undefined, certFile: undefined, keyFile: undefined }

type State = 'idle' | 'connecting' | 'ready' | 'waiting' | 'stopped'

export class Link extends EventEmitter<LinkEvents> {
  private readonly options: LinkOptions
  private readonly log: Logger
  private readonly stateTopic: string
  private readonly downTopics: readonly string[]
  private state: State = 'idle'
  private client: MqttClient | undefined
  private readonly failures: LinkFailures
  private currentEpoch = 0
  /** The current epoch's attempt never got a connected socket: no broker has seen it. */
  private epochUnsent = false
  private connectedAt: number | undefined
  private attempt = 0
  private retryTimer: ClockTimer | undefined
  private attempts = 0
  private connects = 0
  private disconnects = 0
  /** Which optional fields this connection's last birth carried (see hubAccepts and setUnits). */
  private birthHadUnits = false
  private birthHadClock = false
  /** The sensors' units; setUnits replaces them (config reload). */
  private units: Readonly<Record<string, string>>
  private readonly sent: Record<string, number> = {}
  private readonly received: Record<string, number> = {}

  constructor(options: LinkOptions) {
    super()
    this.options = options
    this.units = options.units ?? {}
    this.log = options.logger
    this.failures = new LinkFailures(options)
    this.stateTopic = topics.state(options.deviceId)
    const id = options.deviceId
    this.downTopics = [topics.telemetryAck(id), topics.jobsNotify(id), topics.jobsBatch(id), topics.jobsAck(id), topics.cmdReq(id)]
  }

  isConnected(): boolean {
    return this.state === 'ready'
  }

  get epoch(): number {
    return this.currentEpoch
  }

  stats(): LinkStats {
    return {
      connected: this.isConnected(), epoch: this.currentEpoch, attempts: this.attempts, connects: this.connects, disconnects: this.disconnects,
      messages: { sent: { ...this.sent }, received: { ...this.received } },
      lastError: this.failures.lastError,
    }
  }

  start(): void {
    if (this.state !== 'idle') return
    this.connectNow()
  }

  /**
   * QoS 1 publish on the current connection. Returns false when there is
   * none; the caller's data stays in the outbox either way, so a lost publish
   * is replayed, never lost.
   */
  publish(topic: string, payload: string | Buffer): boolean {
    const client = this.client
    if (this.state !== 'ready' || !client) return false
    count(this.sent, topic)
    client.publish(topic, payload, { qos: 1 }, (err) => {
      if (err) this.log.debug({ err, topic }, 'publish did not complete; the outbox will replay it')
    })
    return true
  }

  /**
   * What the hub's ack said it accepts. A birth with `units` or `clock`
   * would be refused by a hub older than the field (objects are closed), and
   * the birth is the first thing a connection sends, so each connection's
   * birth goes without them; once the hub's answer lists "units" or "clock",
   * the birth is published again, same epoch, with them (the hub takes a
   * repeated birth as an update of the device's info). Asked again on every
   * connection, not remembered, so an agent whose hub was replaced by an
   * older one still comes online.
   */
  hubAccepts(accepts: readonly string[] | undefined): void {
    const client = this.client
    if (!accepts || this.state !== 'ready' || !client) return
    // Published again only for a field this connection's birth lacks: the units once there are
    // some (a reload may add the first ones), the clock once.
    const addUnits = !this.birthHadUnits && accepts.includes('units') && Object.keys(this.units).length > 0
    const addClock = !this.birthHadClock && accepts.includes('clock')
    if (!addUnits && !addClock) return
    this.publishBirth(client, this.currentEpoch, { units: this.birthHadUnits || addUnits, clock: this.birthHadClock || addClock })
  }

  /**
   * New sensor units (the sensors changed on a config reload). When this
   * connection's birth carried units, it is published again, same epoch, with
   * the new ones; otherwise they go with the next birth that carries units.
   */
  setUnits(units: Readonly<Record<string, string>>): void {
    this.units = units
    const client = this.client
    if (this.birthHadUnits && this.state === 'ready' && client) this.publishBirth(client, this.currentEpoch, { units: true, clock: this.birthHadClock })
  }

  /**
   * The device's clock moved against the hub's since this connection's birth
   * told the hub its time (NTP stepped it, someone set it): the birth is
   * published again, same epoch, so the skew the hub shows is the current one.
   */
  refreshClock(): void {
    const client = this.client
    if (this.birthHadClock && this.state === 'ready' && client) this.publishBirth(client, this.currentEpoch, { units: this.birthHadUnits, clock: true })
  }

  /** Publishes death for the current epoch (when connected), disconnects cleanly, and stops retrying. */
  async stop(): Promise<void> {
    const ended = this.end()
    if (!ended?.client) return
    const { client, wasReady } = ended
    if (wasReady) {
      const death = deathOf(this.options.storeId, this.currentEpoch)
      // A clean DISCONNECT discards the Will [MQTT-3.14.4-3], so the death is
      // published by hand, retained like the birth it replaces.
      await waitAtMost(new Promise<void>((resolve) => {
        client.publish(this.stateTopic, encode(death), { qos: 1, retain: true }, () => { resolve() })
      }), this.options.stopTimeoutMs)
      await waitAtMost(new Promise<void>((resolve) => { client.end(false, {}, () => { resolve() }) }), this.options.stopTimeoutMs)
    }
    discard(client)
  }

  /**
   * Ends the connection the way a dying process would: the socket is
   * destroyed, with no death and no DISCONNECT, so the broker publishes the
   * Will. For the simulator's agent crashes.
   */
  kill(): void {
    const client = this.end()?.client
    if (!client) return
    client.stream.destroy()
    discard(client)
  }

  /** Stops retrying and lets go of the client (stop and kill share this); undefined when already stopped. */
  private end(): { client: MqttClient | undefined; wasReady: boolean } | undefined {
    if (this.state === 'stopped') return undefined
    const wasReady = this.state === 'ready'
    this.state = 'stopped'
    this.options.clock.clearTimer(this.retryTimer)
    this.retryTimer = undefined
    const client = this.client
    this.client = undefined
    if (client && wasReady) this.emit('disconnected', { epoch: this.currentEpoch, connectedForMs: this.connectedFor() ?? 0 })
    return { client, wasReady }
  }

  private connectNow(): void {
    this.retryTimer = undefined
    if (this.state === 'stopped') return
    let epoch: number
    try {
      epoch = this.epochUnsent && this.currentEpoch > 0 ? this.currentEpoch : this.options.nextEpoch()
    } catch (err) {
      // The ledger is closed or the disk is failing; try again later rather than connect with a stale epoch.
      this.log.error({ err }, 'could not advance the epoch; will retry')
      this.scheduleRetry({})
      return
    }
    this.currentEpoch = epoch
    this.state = 'connecting'
    this.attempts++
    this.connectedAt = undefined
    const tls = tlsConnectOptions(this.options.hub, this.options.tls ?? NO_TLS_FILES)
    if ('error' in tls) {
      // A file that was there at start-up went missing (being replaced?): retry, as for any other failed attempt.
      this.failures.record({ code: 'TLS_FILE', message: tls.error, hint: 'the agent keeps retrying; put the file back' }, epoch, `TLS_FILE:${tls.error}`)
      this.state = 'waiting'
      this.scheduleRetry({})
      return
    }
    let client: MqttClient
    try {
      client = createHubClient(this.options.hub, tls.options, connectOptions(this.options, this.stateTopic, epoch))
    } catch (err) {
      this.log.error({ err, hub: this.options.hub }, 'cannot create the MQTT client; will retry')
      this.state = 'waiting'
      this.scheduleRetry({})
      return
    }
    this.client = client
    const sent = () => { if (client === this.client) this.epochUnsent = false }
    client.on('error', (err) => { this.failures.clientError(err, epoch) })
    client.on('connect', () => {
      sent()
      this.onConnack(client, epoch)
    })
    client.on('message', (topic, payload) => {
      if (client !== this.client || this.state !== 'ready') return
      count(this.received, topic)
      this.emit('message', topic, payload)
    })
    client.on('close', () => { this.onClose(client, epoch) })
    this.log.debug({ epoch, attempt: this.attempt }, 'connecting')
    client.connect()
    // Until the socket connects (the stream exists once connect() ran), nothing of this attempt can have reached a broker.
    const stream = client.stream as { once?: (event: string, listener: () => void) => unknown } | undefined
    this.epochUnsent = typeof stream?.once === 'function'
    stream?.once?.('connect', sent)
    stream?.once?.('secureConnect', sent)
    // Batches and acks are small and latency-bound; Nagle would hold them back.
    // setNoDelay before the socket connects is remembered and applied on connect.
    ;(client.stream as { setNoDelay?: (on: boolean) => unknown }).setNoDelay?.(true)
  }

  private onConnack(client: MqttClient, epoch: number): void {
    if (client !== this.client || this.state !== 'connecting') return
    this.connectedAt = this.options.clock.now()
    // Subscribe before the birth: the hub answers the birth with this store's
    // mark on telemetry/ack, and aedes may handle packets of one read in
    // parallel, so the birth goes only once the SUBACK is in.
    client.subscribe([...this.downTopics], { qos: 1 }, (err, granted) => {
      if (client !== this.client || this.state !== 'connecting') return
      const refused = granted?.find((g) => g.qos === 128)
      if (err || refused) {
        this.log.warn({ err, topic: refused?.topic, epoch }, 'subscription refused; reconnecting')
        client.end(true)
        return
      }
      this.publishBirth(client, epoch, { units: false, clock: false })
      this.state = 'ready'
      this.failures.connected()
      this.connects++
      this.log.info({ epoch }, 'connected to hub')
      this.emit('connected', { epoch })
    })
  }

  /** `clock`: the device's wall clock, from which the hub works out its skew (issue #13). */
  private publishBirth(client: MqttClient, epoch: number, extras: { units: boolean; clock: boolean }): void {
    this.birthHadUnits = extras.units
    this.birthHadClock = extras.clock
    const wallMs = extras.clock ? Math.max(0, Math.round(this.options.clock.now())) : undefined
    const birth = birthOf(this.options, epoch, { units: extras.units ? this.units : undefined, clockMs: wallMs })
    if (wallMs !== undefined) this.options.onBirthClock?.(wallMs)
    client.publish(this.stateTopic, encode(birth), { qos: 1, retain: true }, (err) => {
      if (err) this.log.debug({ err, epoch }, 'birth not acknowledged')
    })
  }

  private onClose(client: MqttClient, epoch: number): void {
    if (client !== this.client) return
    this.client = undefined
    const wasReady = this.state === 'ready'
    const connectedForMs = this.connectedFor()
    // epochUnsent: the socket never connected, so nothing listened there (a refused or timed-out TCP connect).
    const unreachable = this.epochUnsent
    // end(true) flushes MQTT.js's pending callbacks; nothing more will be sent on this client.
    client.end(true)
    if (this.state === 'stopped') return
    this.state = 'waiting'
    if (wasReady) {
      this.disconnects++
      this.log.info({ epoch, connectedForMs }, 'disconnected from hub')
      this.emit('disconnected', { epoch, connectedForMs: connectedForMs ?? 0 })
    }
    this.scheduleRetry({ connectedForMs, unreachable })
  }

  private scheduleRetry(ended: EndedAttempt): void {
    if (this.state === 'stopped') return
    this.state = 'waiting'
    const plan = planReconnect(this.options.reconnect, this.attempt, ended, this.options.random)
    this.attempt = plan.attempt
    this.log.debug({ delayMs: plan.delayMs, attempt: plan.attempt }, 'reconnect scheduled')
    this.retryTimer = this.options.clock.setTimeout(() => { this.connectNow() }, plan.delayMs)
  }

  private connectedFor(): number | undefined {
    return this.connectedAt === undefined ? undefined : this.options.clock.now() - this.connectedAt
  }
}

/** Counts a message under its topic kind: what follows `devices/{id}/`. */
function count(into: Record<string, number>, topic: string): void {
  const kind = topic.slice(topic.indexOf('/', DEVICES_PREFIX.length) + 1)
  into[kind] = (into[kind] ?? 0) + 1
}

/** Closes a client for good: no more sends, no listeners but one that swallows the socket's last error. */
function discard(client: MqttClient): void {
  client.end(true)
  client.removeAllListeners()
  client.on('error', () => {})
}
