import { rmSync } from 'node:fs'
import type { Clock } from '../common/clock.js'
import { systemClock, type Random } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { RollcallError } from '../common/errors.js'
import { encode } from '../protocol/codec.js'
import { parseTopic, TOPIC_KINDS, topics, upFilter, type TopicKind } from '../protocol/topics.js'
import { createBroker } from '../broker/broker.js'
import type { Broker, InboundMessage } from '../broker/types.js'
import { ConfigError, readBrokerPassword, readDatabasePassword, type HubConfig } from './config.js'
import type { WalSync } from './storage/wal-sync.js'
import { openStores } from './stores.js'
import { ensurePrivateDir } from '../common/private-files.js'
import type { StoredAck } from './telemetry/store.js'
import { createIngress } from './mqtt/ingress.js'
import { brokerClientIdOf, createExternalBroker } from './mqtt/external-broker.js'
import { createDynsecAccounts, type DynsecAccounts } from './mqtt/dynsec.js'
import { createAccountHandover, type AccountHandover } from './mqtt/account-handover.js'
import { generateToken } from './fleet/tokens.js'
import { PACKET_HEADROOM_BYTES } from '../broker/broker.js'
import { followBrokerEvents } from './mqtt/broker-events.js'
import { createSaturationMonitor } from './observe/saturation.js'
import { createJobs } from './jobs/jobs.js'
import { createSchedules } from './jobs/schedules.js'
import { createCommands } from './commands/commands.js'
import { createRules } from './rules/rules.js'
import { rulesNotSupported } from './rules/unavailable.js'
import { firingChain } from './rules/trace.js'
import { loadOrCreateAdminToken } from './api/admin-token.js'
import { buildApi } from './api/app.js'
import { createHubHistograms, createHubMetrics } from './observe/metrics.js'
import { createLiveFeed } from './observe/live-feed.js'
import type { HubServices } from './api/services.js'
import type { Server as TlsServer } from 'node:tls'
import { planListeners } from './listeners.js'
import { startRetention } from './retention.js'
import { createTlsReloader, loadTlsFiles, tlsWarnings, type LoadedTls, type ReloadResult, type TlsReloader } from './tls-files.js'
import { VERSION } from '../common/version.js'

/**
 * How long a connection's writes may wait for the next commit (broker/write-coalescer.ts).
 * A PUBACK is written as its PUBLISH is routed and the hub's ack when the commit lands, at
 * most `flushDelayMs` after the batch's first row: for the two to leave in one write, the
 * hub's commit (not the coalescer's own timer) must release the connection. With the same
 * delay for both, the two timers raced and about half the releases came from the
 * coalescer's timer, each sending the PUBACKs alone and the acks a commit later: two
 * socket writes per message, the largest single cost on a busy hub (docs/benchmarks.md).
 * The acks come after the commit's fsync, which runs in the thread pool
 * (storage/wal-sync.ts): on a hub near its limit a commit's connections were
 * released 30 ms after their first write at the median and 45 to 81 ms at p99
 * (8,000 devices, commit delay 20 ms), so four times the commit delay leaves the
 * commit room to win. The cap bounds how long other writes (an observer's
 * messages) wait when no commit begins; CONNACKs, SUBACKs and commands leave at
 * once. 0: writes are not held.
 */
export function writeCoalesceMsFor(flushDelayMs: number): number {
  return Math.min(4 * flushDelayMs, 100)
}

/** The shared-subscription group of the hubs on one external broker. */
const SHARE_GROUP = 'rollcall'
const UP_KINDS = (Object.keys(TOPIC_KINDS) as TopicKind[]).filter((k) => TOPIC_KINDS[k] === 'up')

export interface HubDeps {
  readonly logger: Logger
  readonly clock?: Clock
  /** Jitter for job retries. */
  readonly random?: Random
  /**
   * The hub can no longer keep its promise (an fsync of its database failed:
   * it has stopped acknowledging anything). The CLI stops the process with a
   * failure, so a service manager restarts it; without this the hub stays up,
   * refusing writes, for its owner to stop.
   */
  readonly onFatal?: (err: Error) => void
  /**
   * Wraps the WAL's fsync (storage/wal-sync.ts). Tests hold fsyncs back
   * with it, to see that nothing is acknowledged before its rows are on disk.
   */
  readonly walSync?: (real: WalSync) => WalSync
}

export interface RunningHub {
  /** The plaintext MQTT port; 0 when that listener is off (TLS on, without allowPlaintext). */
  readonly mqttPort: number
  /** MQTT over TLS; undefined without TLS. */
  readonly mqttTlsPort: number | undefined
  /** HTTP, or HTTPS when `tls` is set. */
  readonly httpPort: number
  /** The certificate served at start, when TLS is on (a reload replaces it in `hub.running`). */
  readonly tls: LoadedTls | undefined
  readonly adminToken: string
  /** True when this start made the admin token (first start of a data dir). */
  readonly adminTokenCreated: boolean
  readonly adminTokenPath: string
  readonly services: HubServices
  readonly broker: Broker
}

/**
 * The hub's composition root. `start` opens the database, starts the writer,
 * the broker and the HTTP API, in that order; `stop` releases them in reverse
 * and is safe to call twice. Signals are the CLI's business, not the hub's.
 * It runs past 400 lines on purpose: each part is built and wired here in the
 * order it starts, with its release next to it, and that one list, read top
 * to bottom, is what this file is for; what is more than wiring lives in the
 * capability folders.
 */
export function createHub(config: HubConfig, deps: HubDeps) {
  const clock = deps.clock ?? systemClock
  const log = deps.logger
  const releasers: Array<() => Promise<void> | void> = []
  let running: RunningHub | undefined
  let stopping: Promise<void> | undefined

  /** The admin token file this start created, if any. */
  let createdToken: string | undefined
  let tlsReloader: TlsReloader | undefined

  /** The start under way or done: a second call while the first runs gets the same hub, not a second set of listeners. */
  let starting: Promise<RunningHub> | undefined

  function start(): Promise<RunningHub> {
    starting ??= startOnce().catch((err: unknown) => {
      // A failed start can be tried again.
      starting = undefined
      throw err
    })
    // The hub as it is now: a TLS reload since the start replaced `running`.
    return starting.then((first) => running ?? first)
  }

  async function startOnce(): Promise<RunningHub> {
    try {
      return await startInner()
    } catch (err) {
      await releaseAll()
      // A first start that failed (port in use, say) must not keep a token
      // nobody saw printed: the next start makes and prints a new one.
      if (createdToken) rmSync(createdToken, { force: true })
      throw err
    }
  }

  async function startInner(): Promise<RunningHub> {
    // loadHubConfig refused a bad plan already; a hub built from a config made by hand is checked here, before anything is opened.
    const plan = planListeners({ ...config, tls: config.tlsCert !== undefined && config.tlsKey !== undefined })
    if (!plan.ok) throw new ConfigError(plan.message)
    // Read before anything is opened too: a missing or mismatched file stops the start with a message naming it.
    const tlsPaths = config.tlsCert !== undefined && config.tlsKey !== undefined ? { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa } : undefined
    const tls = tlsPaths === undefined ? undefined : loadTlsFiles(tlsPaths)
    // An expired certificate still starts the hub (its API is how you find out), loudly.
    if (tls !== undefined && tlsPaths !== undefined) for (const w of tlsWarnings(tls, tlsPaths, Date.now())) log.warn(w)
    const startedAt = clock.now()
    // The data dir holds all telemetry, job results and token hashes: 0700 when
    // we make it, a warning when it exists open to others (#12 section 4).
    ensurePrivateDir(config.dataDir, log)
    const admin = loadOrCreateAdminToken(config.dataDir, log)
    if (admin.created) createdToken = admin.path
    // Who this hub is on the external broker and in a shared database (the commands it sent carry it).
    const brokerClientId = config.broker === undefined && config.database === undefined && config.handoverBroker === undefined ? '' : config.brokerClientId ?? brokerClientIdOf(config.dataDir)

    // Fed by the writer, ingress and commands as they work; registered with the other metrics below.
    const histograms = createHubHistograms()
    // The SQLite file in the data dir, or a PostgreSQL shared with other hubs (stores.ts).
    const stores = await openStores({ ...config, databasePassword: readDatabasePassword(config.databasePasswordFile) }, {
      logger: log, hubId: brokerClientId, observeCommit: histograms.commit, walSync: deps.walSync, onSyncFailed: (err) => deps.onFatal?.(err),
      release: (fn) => { releasers.push(fn) },
    })
    const { registry, presence, telemetry, deadLetters } = stores
    // Moving to an external Mosquitto: the accounts there are made from the tokens devices present here.
    const handover = config.handoverBroker === undefined ? undefined : startHandover(config.handoverBroker, `${brokerClientId}-handover`)
    // On an external broker the retained births that follow bring back who is online; on the embedded one, the devices reconnect.
    presence.hubStarted(startedAt)
    if (config.database !== undefined && config.broker === undefined) {
      log.warn('the hub keeps its state in PostgreSQL but runs its own broker: it must be the only hub on that database (devices connected to another hub\'s broker are out of its reach); several hubs share an external broker (--broker)')
    }
    const broker = config.broker !== undefined ? createExternalBroker({
      url: config.broker,
      username: config.brokerUsername,
      password: readBrokerPassword(config.brokerPasswordFile),
      caFile: config.brokerCa,
      clientId: brokerClientId,
      shareGroup: SHARE_GROUP,
      sessionExpirySec: 3600,
      // Only device X may publish under devices/X/ (its role on the broker): the topic names the publisher.
      publisherOf: (topic) => { const t = parseTopic(topic); return t?.direction === 'up' ? t.deviceId : undefined },
      maxPacketBytes: config.maxPayloadBytes + PACKET_HEADROOM_BYTES,
      logger: log,
    }) : createBroker({
      host: config.host,
      port: config.mqttPort,
      plaintext: plan.mqttPlain,
      ...(tls ? { tls: { port: config.mqttTlsPort, context: tls.context, handshakeTimeoutMs: config.tlsHandshakeTimeoutMs } } : {}),
      maxPayloadBytes: config.maxPayloadBytes,
      allowAnonymous: config.allowAnonymous,
      maxConnections: config.maxConnections,
      maxPendingConnections: config.maxPendingConnections,
      maxPendingPerAddress: config.maxPendingPerAddress,
      clientConnectRatePerSec: config.clientConnectRatePerSec,
      clientConnectBurst: config.clientConnectBurst,
      connectRatePerSec: config.connectRatePerSec,
      connectBurst: config.connectBurst,
      maxFiltersPerSubscribe: config.maxFiltersPerSubscribe,
      maxSubscriptionsPerClient: config.maxSubscriptionsPerClient,
      keepaliveMinSec: config.keepaliveMinSec,
      keepaliveMaxSec: config.keepaliveMaxSec,
      drainTimeoutMs: config.drainTimeoutMs,
      // A PUBACK waits for the commit whose ack follows it, so the two leave in one write (see below; SQLite's writer only).
      writeCoalesceMs: stores.kind === 'sqlite' ? writeCoalesceMsFor(config.flushDelayMs) : 0,
      connectTimeoutMs: config.connectTimeoutMs,
      checkCredentials: (username, password) => {
        const auth = registry.checkCredentials(username, password)
        if (auth.ok && handover !== undefined) handover.offer(auth.principal, password)
        return auth
      },
      isRegisteredDevice: (id) => registry.getDevice(id) !== undefined,
      logger: log, // the broker names its own component
      clock,
    })
    releasers.push(() => broker.close())
    // The device and observer accounts on an external Mosquitto (the embedded broker reads the registry itself).
    // Its calls are network I/O on real time, whatever clock the hub's logic runs on.
    const accounts: DynsecAccounts | undefined = config.broker !== undefined && config.brokerDynsec
      ? await createDynsecAccounts(broker, { hubUsername: config.brokerUsername, hubClientId: brokerClientId, shareGroup: SHARE_GROUP, timeoutMs: 10_000, clock: systemClock, logger: log })
      : undefined

    // Acks tell agents that can read it which optional fields this hub takes: a batch's
    // backlog, a birth's units and clock, a sample's unsynced flag (protocol/messages.ts,
    // TelemetryAck, Birth and Sample). An agent that lists "time" gets the hub's time in
    // every ack, stamped as it goes (issue #13; agent/hub-clock.ts times it).
    const ACK_ACCEPTS = ['backlog', 'units', 'clock', 'unsynced']
    const publishAck = (a: StoredAck) => {
      const accepts = presence.hasCapability(a.deviceId, 'telemetry.backlog') ? { accepts: ACK_ACCEPTS } : {}
      const hubTime = presence.hasCapability(a.deviceId, 'time') ? { hubTime: Math.round(clock.now()) } : {}
      // Straight to the device's connection at QoS 0 (docs/protocol.md, "Telemetry acks"): only
      // the device may subscribe here, and a lost ack costs a resend that is acked as a duplicate.
      // Not connected or not subscribed yet: it resends, or resyncs from its birth, and hears then.
      broker.sendDirect(a.deviceId, topics.telemetryAck(a.deviceId), encode({ type: 'telemetry.ack', v: 1, storeId: a.storeId, upTo: a.upTo, ...accepts, ...hubTime }))
    }
    telemetry.onAcks((acks) => { for (const a of acks) publishAck(a) })
    // Sealed at each commit, released after its acks (the telemetry store's commit hook writes them):
    // the connections whose PUBACKs that commit holds send them with their ack in one write.
    stores.onWritten(() => broker.sealWrites())

    const jobs = createJobs({
      sweepIntervalMs: config.jobSweepIntervalMs,
      leaseGraceMs: config.jobLeaseGraceMs,
      redeliverAfterMs: config.jobRedeliverAfterMs,
      defaultTimeoutMs: config.jobDefaultTimeoutMs,
      defaultMaxAttempts: config.jobDefaultMaxAttempts,
      backoffBaseMs: config.jobBackoffBaseMs,
      backoffMaxMs: config.jobBackoffMaxMs,
    }, {
      backend: stores.jobs, registry, clock, random: deps.random ?? Math.random, logger: log.child({ component: 'jobs' }),
      reachableSince: (id) => {
        const p = presence.get(id)
        return p?.reachable ? p.since : undefined
      },
      publish: (topic, payload) => {
        broker.publish(topic, payload, { qos: 1 })
          .catch((err: unknown) => log.warn({ err, topic }, 'job message publish failed; the agent pulls again'))
      },
    })
    jobs.start()
    releasers.push(() => { jobs.stop() })
    const commands = await createCommands({ defaultTimeoutMs: config.commandDefaultTimeoutMs, groupConcurrency: config.commandGroupConcurrency }, {
      store: stores.commands, registry, jobs, clock, logger: log.child({ component: 'commands' }),
      isReachable: (id) => presence.isReachable(id),
      lastSeen: (id) => presence.get(id)?.lastSeen ?? null,
      capabilities: (id) => presence.get(id)?.info.capabilities ?? [],
      publish: (topic, payload) => broker.publish(topic, payload, { qos: 1 }),
      observeDuration: histograms.command,
    })
    const rulesLog = log.child({ component: 'rules' })
    const rules = stores.local === undefined ? rulesNotSupported('rules do not run yet on a hub whose state is in PostgreSQL (docs/scale-out.md, "PostgreSQL storage"); they run on a hub with its SQLite file') : createRules({
      db: stores.local.db, writer: stores.local.writer, clock, logger: rulesLog,
      groupOf: (id) => registry.groupOf(id),
      presence: () => presence.statuses(),
      ports: {
        command: (deviceId, spec, id, cause, again) => commands.send(deviceId, spec, { id, cause, again }),
        commandGroup: (target, spec, cause) => commands.sendGroup(target, spec, cause),
        isReachable: (id) => presence.isReachable(id),
        deadLetter: (d) => { deadLetters.add({ ts: clock.now(), deviceId: d.deviceId, clientId: undefined, topic: `webhook:${d.url}`, reason: 'WEBHOOK_FAILED', detail: d.detail, payload: Buffer.from(d.body) }) },
        job: async (spec, id, cause) => (await jobs.create(spec, { id, ...cause })) ?? { id, made: 'before' },
        event: (e) => {
          broker.publish(topics.ruleEvents(e.rule), Buffer.from(JSON.stringify({ type: 'rule.event', v: 1, ...e })), { qos: 1 })
            .catch((err: unknown) => rulesLog.warn({ err, firing: e.firing }, 'rule event publish failed'))
        },
      },
    })
    if (stores.local !== undefined) {
      // Inside the write that stores each batch: rules see what was stored, once (hub/rules/rules.ts).
      telemetry.reactWith({ watching: rules.watching, samples: rules.onSamples, events: rules.onEvents })
      presence.reactWith(rules.onPresence)
      jobs.reactWith(rules.onJobsEnded)
    }
    rules.start()
    const schedules = createSchedules({ store: stores.schedules, jobs, clock, logger: log.child({ component: 'schedules' }) })
    await schedules.start()
    releasers.push(() => schedules.stop())

    // A removed device's last disconnect (or Will) must not bring its presence entry back.
    const registered = (id: string) => registry.getDevice(id) !== undefined

    const ingress = createIngress(
      { maxPayloadBytes: config.maxPayloadBytes, badMessagesPerMinute: config.badMessagesPerMinute, presenceFromBirths: config.broker !== undefined },
      {
        telemetry, presence, deadLetters, clock, logger: log.child({ component: 'ingress' }),
        cutOff: (id, why) => broker.disconnect(id, why),
        announceMark: (deviceId, storeId) => { telemetry.announceMark(deviceId, storeId) },
        isRegistered: registered,
        jobs: jobs.ingress,
        commands: { response: (deviceId, m) => { commands.response(deviceId, m) }, disconnected: (deviceId) => { commands.disconnected(deviceId) } },
        observeTelemetryBatch: histograms.telemetryBatch,
      },
    )
    followBrokerEvents(broker, { presence, deadLetters, commands, ingress, isRegistered: registered, clock })
    const onMessage = (m: InboundMessage) => { ingress.handle(m) }
    if (config.broker === undefined) await broker.subscribe('devices/#', onMessage)
    const { port: mqttPort, tlsPort: mqttTlsPort } = await broker.listen()
    if (config.broker !== undefined) {
      // The hub's account gets its rights first (its subscriptions need them); what the broker
      // queued for the hub meanwhile waits in external-broker.ts for the subscription that takes it.
      await accounts?.prepare()
      // Each up-message to one hub of the group; births and deaths (retained) to every hub,
      // so each knows who is online from the start (hub/presence), and command replies to
      // every hub, so the one that sent the command, and waits for it, gets its reply
      // (hub/commands/store.ts: the others keep no copy). All at QoS 1: Mosquitto
      // drops QoS 0 to a client with more than max_queued_messages (1000) packets waiting, so
      // a hub that pauses for a moment would lose batches and stall their devices until their
      // ack timeout; at QoS 1 the hub's receive maximum (65,535) covers such a pause.
      for (const kind of UP_KINDS) await broker.subscribe(upFilter(kind), onMessage, { shared: kind !== 'state' && kind !== 'cmd/res' })
    }
    await rules.resume()

    const lastSeenTimer = clock.setInterval(() => presence.flushLastSeen(), 5000).unref()
    releasers.push(() => { clock.clearTimer(lastSeenTimer); presence.flushLastSeen() })

    releasers.push(startRetention(config, { telemetry, jobs, commands, rules, clock, logger: log }))

    /**
     * Mosquitto closes the connection of a changed or deleted account without
     * publishing its Will: the hub says the device is gone, ends its commands
     * in flight, and replaces its retained state (a death, or nothing for a
     * removed device) so a restart does not bring it back from its old birth.
     */
    function cutOffOnExternalBroker(id: string, reason: string): void {
      // Accounts kept by hand (brokerDynsec off): the hub changed nothing on the broker, nobody was kicked.
      if (accounts === undefined) return
      commands.disconnected(id)
      const p = presence.get(id)
      const epoch = p?.epoch ?? null
      const storeId = p?.info.storeId ?? undefined
      if (reason !== 'removed' && epoch !== null) presence.apply(id, { type: 'death', epoch, storeId, at: clock.now(), reason })
      const state = reason === 'removed' || epoch === null ? Buffer.alloc(0) : encode({ type: 'death', v: 1, epoch, ...(storeId !== undefined ? { storeId } : {}) })
      broker.publish(topics.state(id), state, { qos: 1, retain: true })
        .catch((err: unknown) => log.warn({ err, deviceId: id }, 'could not replace the device\'s retained state on the broker'))
    }

    const deviceCounts = () => {
      const total = registry.countDevices()
      const online = presence.counts().online
      return { total, online, offline: total - online }
    }

    // The dashboard's live stream: it runs a timer only while a stream is open.
    const live = createLiveFeed({ tickMs: config.liveTickMs, lastSeenStepMs: 5000, jobsShown: 50 }, {
      registry, presence, telemetry, jobs, clock, logger: log.child({ component: 'live' }),
    })

    const saturation = createSaturationMonitor({
      routing: () => { const b = broker.stats(); return { queued: b.queuedMessages, oldestMs: b.oldestQueuedMs } },
      writer: () => { const w = stores.writerStats(); return { queuedRows: w.queuedWeight, oldestMs: w.oldestQueuedMs } },
    })
    releasers.push(() => saturation.close())

    const services: HubServices = {
      clock, registry, presence, telemetry, deadLetters, jobs, schedules, commands, rules,
      async addDevice(id, group) {
        const added = await registry.addDevice(id, group, clock.now())
        try {
          await accounts?.deviceAdded(id, added.token)
        } catch (err) {
          await registry.removeDevice(id)
          throw err
        }
        await jobs.deviceAdded(id, group)
        return added
      },
      async removeDevice(id) {
        registry.requireDevice(id)
        // The broker's account first: if it refuses, nothing changed, and the removal can be asked again.
        await accounts?.deviceRemoved(id)
        cutOffOnExternalBroker(id, 'removed')
        await registry.removeDevice(id)
        // After the registry: a CONNECT in between would have handed the account over again.
        handover?.revoke({ kind: 'device', id })
        presence.forget(id)
        await jobs.deviceRemoved(id)
        rules.deviceRemoved(id)
        broker.disconnectPrincipal({ kind: 'device', id }, 'device removed')
      },
      async rotateDeviceToken(id) {
        registry.requireDevice(id)
        // The broker first: a token it refused (or never confirmed) is not the device's yet, and the old one still works everywhere.
        const token = generateToken()
        await accounts?.deviceTokenRotated(id, token)
        await registry.rotateDeviceToken(id, token)
        handover?.revoke({ kind: 'device', id })
        cutOffOnExternalBroker(id, 'token-rotated')
        broker.disconnectPrincipal({ kind: 'device', id }, 'token rotated')
        return token
      },
      firingChain: (id) => firingChain(rules.firing(id), { command: (c) => commands.get(c), job: (j) => jobs.get(j, { limit: 20 }) }),
      async addObserver(name) {
        const added = await registry.addObserver(name, clock.now())
        try {
          await accounts?.observerAdded(name, added.token)
        } catch (err) {
          await registry.removeObserver(name)
          throw err
        }
        return added
      },
      async removeObserver(name) {
        if (!registry.listObservers().some((o) => o.name === name)) throw new RollcallError('OBSERVER_NOT_FOUND', `no observer "${name}"`)
        await accounts?.observerRemoved(name)
        await registry.removeObserver(name)
        handover?.revoke({ kind: 'observer', name })
        broker.disconnectPrincipal({ kind: 'observer', name }, 'observer removed')
      },
      health: () => {
        // On an external broker the hub is of no use while it is away from it: not ok, for a load balancer or a probe.
        const external = broker.stats().external
        return {
          ok: external?.connected ?? true, version: VERSION, uptimeMs: clock.now() - startedAt, mqttPort, ...(mqttTlsPort !== undefined ? { mqttTlsPort } : {}), devices: deviceCounts(),
          ...(external !== undefined ? { broker: { url: external.url, connected: external.connected } } : {}),
        }
      },
      stats: () => ({
        saturation: saturation.read(),
        ingest: telemetry.counters(),
        writer: stores.writerStats(),
        ...(stores.checkpoints !== undefined ? { checkpoints: stores.checkpoints() } : {}),
        store: stores.kind,
        broker: broker.stats(),
        presence: deviceCounts(),
        jobs: jobs.stats(),
        schedules: schedules.stats(),
        commands: commands.stats(),
        rules: rules.stats(),
        deadLetters: deadLetters.countsByReason(),
        backlog: presence.backlogTotals(),
        ...(handover !== undefined ? { handover: handover.stats() } : {}),
        live: { streams: live.subscribers },
        memory: process.memoryUsage(),
      }),
    }

    const metrics = createHubMetrics({
      ingest: () => telemetry.counters(), writer: () => stores.writerStats(), checkpoints: stores.checkpoints, broker: () => broker.stats(), devices: deviceCounts,
      deadLetters: () => deadLetters.countsByReason(), commands: commands.stats, jobs: jobs.stats, executions: jobs.activeExecutions,
      backlog: () => presence.backlogTotals(), clockSkew: () => presence.skewTotals(), liveStreams: () => live.subscribers,
      saturation: () => saturation.read(), rules: () => rules.stats(), ruleViews: () => rules.list(),
    }, histograms)
    releasers.push(() => { metrics.close() })
    const api = buildApi(services, {
      adminToken: admin.token, logger: log, metrics, metricsPublic: config.metricsPublic,
      live: { feed: live, maxStreams: config.liveMaxStreams, maxBufferedBytes: 4 * 1024 * 1024, requireDevice: (id) => registry.requireDevice(id) },
      ...(tls ? { https: { ...tls.context, handshakeTimeout: config.tlsHandshakeTimeoutMs } } : {}),
    })
    releasers.push(() => api.close())
    // Before the API closes: open streams end, so closing does not wait for them.
    releasers.push(() => { live.close() })
    // Before the API closes (releasers run last-in first-out): commands in flight end now, so
    // their callers get an answer instead of holding the server open until their deadlines.
    releasers.push(async () => {
      // Rules first: an action whose command the stop ends stays pending, carried out again at the next start.
      rules.stop()
      await commands.stop()
      // Their callers' answers are written in the turn after the records settle.
      await new Promise((resolve) => setImmediate(resolve))
    })
    await api.listen({ host: config.host, port: config.httpPort })
    const address = api.server.address()
    const httpPort = typeof address === 'object' && address ? address.port : config.httpPort

    if (tls) {
      // fastify's server is an https.Server here, a tls.Server underneath.
      const httpsServer = api.server as unknown as TlsServer
      tlsReloader = createTlsReloader({
        paths: { cert: config.tlsCert!, key: config.tlsKey!, ca: config.tlsCa },
        current: tls,
        logger: log.child({ component: 'tls' }),
        apply: (context) => {
          broker.setSecureContext(context)
          httpsServer.setSecureContext(context)
        },
        reloaded: (now) => { if (running) running = { ...running, tls: now } },
      })
      tlsReloader.watch()
      const reloader = tlsReloader
      releasers.push(() => { reloader.close(); tlsReloader = undefined })
    }

    log.info({ mqttPort, mqttTlsPort, httpPort, https: tls !== undefined, host: config.host, dataDir: config.dataDir }, 'hub started')
    running = { mqttPort, mqttTlsPort, httpPort, tls, adminToken: admin.token, adminTokenCreated: admin.created, adminTokenPath: admin.path, services, broker }
    return running
  }

  /**
   * The connection to the broker the fleet moves to, and what hands the accounts over to it
   * (hub/mqtt/account-handover.ts). It connects in the background and tries again while the
   * broker is away: the fleet's hub starts and serves whatever its next broker does.
   */
  function startHandover(url: string, clientId: string): AccountHandover {
    const password = readBrokerPassword(config.brokerPasswordFile)
    let target: Broker | undefined
    const connect = async (): Promise<DynsecAccounts> => {
      const b = createExternalBroker({
        url, username: config.brokerUsername, password, caFile: config.brokerCa, clientId,
        shareGroup: SHARE_GROUP, sessionExpirySec: 0, publisherOf: () => undefined, maxPacketBytes: 1024 * 1024, logger: log.child({ component: 'handover-broker' }),
      })
      try {
        await b.listen()
        const accounts = await createDynsecAccounts(b, { hubUsername: config.brokerUsername, hubClientId: clientId, shareGroup: SHARE_GROUP, timeoutMs: 10_000, clock: systemClock, logger: log })
        // The roles the accounts are given (the observers' shared one among them), as the hubs there will have them.
        await accounts.prepare()
        target = b
        return accounts
      } catch (err) {
        await b.close()
        throw err
      }
    }
    // Released after the handover (last-in first-out): its account write under way ends first.
    releasers.push(() => target?.close())
    const handover = createAccountHandover(connect, log)
    releasers.push(() => handover.close())
    handover.start()
    log.info({ to: url }, 'handing device and observer accounts over to the new broker as they connect')
    return handover
  }

  async function releaseAll(): Promise<void> {
    while (releasers.length > 0) {
      const release = releasers.pop()!
      try {
        await release()
      } catch (err) {
        log.error({ err }, 'error while stopping the hub')
      }
    }
  }

  return {
    start,
    /** Stops in reverse order of start; safe to call twice. */
    stop(): Promise<void> {
      stopping ??= releaseAll().then(() => { running = undefined; starting = undefined })
      return stopping
    },
    /**
     * Reads the TLS certificate and key again and serves them to new
     * connections on both TLS listeners (the CLI calls it on SIGHUP; the hub
     * also watches the files). A pair that cannot be used is refused and the
     * old one keeps serving.
     */
    reloadTls(trigger = 'reload'): ReloadResult {
      if (tlsReloader === undefined) return { ok: false, error: 'TLS is not on: start the hub with --tls-cert and --tls-key' }
      return tlsReloader.reload(trigger)
    },
    get running(): RunningHub {
      if (!running) throw new RollcallError('UNAVAILABLE', 'hub is not started')
      return running
    },
  }
}

export type Hub = ReturnType<typeof createHub>
