import { randomUUID } from 'node:crypto'
import { systemClock, systemMonotonic, type Clock, type ClockTimer, type Monotonic, type Random } from '../common/clock.js'
import { silentLogger, type Logger } from '../common/logger.js'
import { VERSION } from '../common/version.js'
import { decode } from '../protocol/codec.js'
import { EVENT_LEVELS } from '../protocol/limits.js'
import { isSensorName } from '../protocol/ids.js'
import type { AgentConfig } from './config.js'
import { builtinCommands, commandsAsTasks, redactedConfig, type AgentView, type CommandHandler } from './command-handlers.js'
import { CommandRunner, type CommandRunnerStats } from './command-runner.js'
import { builtinHandlers, checkHandlers, HandlerRegistry, loadHandlersModule, shellSettings, type JobHandler } from './job-handlers.js'
import { planReload, type ReloadPlan } from './config-reload.js'
import { JobPuller, type JobPullerStats } from './job-puller.js'
import { JobQueue, type JobOutcome } from './job-queue.js'
import { JobReporter, type JobReporterStats } from './job-reporter.js'
import { JobRunner } from './job-runner.js'
import { HubClock, kernelBootId, TIME_CAPABILITY, type HubClockStats } from './hub-clock.js'
import { Ledger } from './ledger.js'
import { shellAllowWarnings } from './shell-allow.js'
import { LocalSchedules } from './local-schedules.js'
import { Link, type LinkStats } from './link.js'
import { DEFAULT_RECONNECT_POLICY } from './reconnect.js'
import { Outbox, type OutboxStats } from './outbox.js'
import { eventRecord, localOutcomeRecord, type EventLevel } from './events.js'
import { Sampler, type SampleReport, type SamplerStats } from './sampler.js'
import { Sender, type SenderStats } from './sender.js'
import { TelemetryBatcher } from './telemetry-batcher.js'
import { builtinSensors, sensorUnits, simulatedSensor, type SensorSource } from './sensors.js'

/**
 * The agent's composition root. `start()` loads the job and command
 * handlers, opens the ledger (recording jobs and commands a previous run left
 * running as INTERRUPTED), then starts the command runner, the job runner,
 * the job reporter and puller, the sender, the link, the sampler and the
 * local schedules; `stop()` releases them in reverse order (schedules,
 * sampler, puller, job and command runners with a short grace for what is
 * running, reporter, sender, link with a death for the current epoch,
 * ledger) and is safe to call twice.
 */

export interface AgentDeps {
  readonly logger?: Logger
  /**
   * The device's wall clock (a test may set it hours wrong); deadlines and timestamps use the hub's time once known
   * (agent/hub-clock.ts). Every timer of the agent runs on it too, so a test's manual clock moves them all; only the
   * bounds on a stop's real waits (handlers, the socket) stay on real time.
   */
  readonly clock?: Clock
  /** A clock NTP never steps: CLOCK_MONOTONIC by default. */
  readonly monotonic?: Monotonic
  /**
   * The kernel's boot id, which monotonic readings are relative to; read from
   * /proc/sys/kernel/random/boot_id by default (a test injects one to play a reboot).
   */
  readonly kernelBootId?: string
  /** Jitter for the reconnect backoff. */
  readonly random?: Random
  /** Extra sensors, sampled with the configured ones (the simulator injects its models here). */
  readonly sensors?: readonly SensorSource[]
  /** Identifies this run of the agent in its births; a random UUID by default. */
  readonly bootId?: string
  /** Job handlers by task name, on top of the built-ins and the config's handlersModule. */
  readonly handlers?: Readonly<Record<string, JobHandler>>
  /** Command handlers by name, on top of the built-ins and the config's handlersModule. */
  readonly commands?: Readonly<Record<string, CommandHandler>>
}

export interface AgentJobStats {
  readonly queued: number
  readonly running: number
  readonly done: number
  readonly updatesPending: number
  readonly pulls: number
  readonly batchesReceived: number
  /** Jobs ended since start, by outcome. */
  readonly outcomes: Readonly<Record<JobOutcome, number>>
  readonly puller: JobPullerStats
  readonly reporter: JobReporterStats
}

export type { EventLevel } from './events.js'

export interface AgentStats {
  readonly deviceId: string
  /** Undefined until start() opened the ledger. */
  readonly storeId: string | undefined
  readonly bootId: string
  readonly connected: boolean
  readonly link: LinkStats
  readonly outbox: OutboxStats | undefined
  readonly sender: SenderStats | undefined
  readonly sampler: SamplerStats | undefined
  readonly jobs: AgentJobStats | undefined
  readonly commands: CommandRunnerStats | undefined
  /** Whether the agent knows the hub's time, and the device clock's offset from it. */
  readonly clock: HubClockStats
}

export interface Agent {
  readonly deviceId: string
  readonly bootId: string
  start(): Promise<void>
  stop(): Promise<void>
  /** Dies abruptly, as a killed process would (no death message, nothing finished); for the simulator. */
  crash(): Promise<void>
  stats(): AgentStats
  /** Samples every sensor now (also what the timer does every sampleIntervalMs); returns the sample count. */
  sampleNow(): number
  /** Appends a device event to the outbox; it is sent and acked like telemetry. */
  emitEvent(kind: string, level: EventLevel, message: string, data?: Record<string, unknown>): void
  /** The outbox, once started (tests and the simulator's accounting read it). */
  readonly outbox: Outbox | undefined
  readonly ledger: Ledger | undefined
  /** The job queue, once started (tests and the simulator read it). */
  readonly jobQueue: JobQueue | undefined
  isConnected(): boolean
  /**
   * Applies a newly loaded config (SIGHUP): the live keys of config-reload.ts
   * at once, the others only after a restart. Returns what changed and how.
   * The log level is the caller's: it owns the root logger.
   */
  reconfigure(next: AgentConfig): Promise<ReloadPlan>
  /** The config the agent runs with now: the one it started with, plus the live keys of every reload. */
  readonly config: AgentConfig
}

/**
 * What the birth advertises. "telemetry.backlog": this agent understands an
 * ack's `accepts` and then reports its outbox backlog in each batch. "time":
 * it takes `hubTime` in acks (agent/hub-clock.ts).
 */
export const AGENT_CAPABILITIES = ['telemetry', 'events', 'jobs', 'commands', 'telemetry.backlog', TIME_CAPABILITY] as const

/** How often done jobs are pruned from the ledger (also once at start). */
const JOB_PRUNE_INTERVAL_MS = 3_600_000

/** The version a birth reports: the package's, cut to what the protocol takes. */
export function agentVersion(): string {
  return VERSION.slice(0, 32)
}

export function createAgent(config: AgentConfig, deps: AgentDeps = {}): Agent {
  const clock = deps.clock ?? systemClock
  const random = deps.random ?? Math.random
  // One binding per key (issue #11): pino appends a child's bindings to its parent's, so a key bound
  // twice is printed twice. The caller may have bound deviceId already (the demo does); the parts that
  // name their own component (job runner, puller, ...) get `deviceLog`, the rest log as the agent.
  const root = deps.logger ?? silentLogger()
  const deviceLog = root.bindings().deviceId === config.id ? root : root.child({ deviceId: config.id })
  const log = deviceLog.child({ component: 'agent' })
  const bootId = deps.bootId ?? randomUUID()
  const monotonic = deps.monotonic ?? systemMonotonic
  // Without a kernel boot id (not Linux), monotonic readings are trusted only within this process.
  const bootRef = deps.kernelBootId ?? kernelBootId() ?? randomUUID()
  const hubClock = new HubClock({ wall: clock, monotonic, bootRef, logger: deviceLog.child({ component: 'clock' }) })
  /** Hub time once known, else the device's: what deadlines and timestamps are judged on. */
  const hubTime = hubClock.clock
  /** The config in force: `config` plus what reloads applied live. */
  let current = config
  const sensorsFor = (c: AgentConfig): SensorSource[] => [
    ...(c.builtinSensors ? builtinSensors() : []),
    ...c.sensors.map(simulatedSensor),
    ...(deps.sensors ?? []),
  ]
  const unitsOf = (list: readonly SensorSource[]): Record<string, string> => {
    const { units, skipped } = sensorUnits(list)
    if (skipped.length > 0) log.warn({ sensors: skipped.slice(0, 10), count: skipped.length }, 'sensor units not declared: invalid, or more than the protocol allows')
    return units
  }
  let sensors = sensorsFor(config)
  const units = unitsOf(sensors)
  // Read by the shell task at each run, so a reload applies to the next job.
  let shell = shellSettings(config)

  let ledger: Ledger | undefined
  let outbox: Outbox | undefined
  let sender: Sender | undefined
  let sampler: Sampler | undefined
  let batcher: TelemetryBatcher | undefined
  let link: Link | undefined
  let jobQueue: JobQueue | undefined
  let runner: JobRunner | undefined
  let reporter: JobReporter | undefined
  let puller: JobPuller | undefined
  let schedules: LocalSchedules | undefined
  let commands: CommandRunner | undefined
  let pruneTimer: ClockTimer | undefined
  let phase: 'new' | 'starting' | 'started' | 'stopping' | 'stopped' = 'new'
  let stopping: Promise<void> | undefined
  /**
   * What start() set up, undone last-in first-out by stop() and crash() alike.
   * Each step is told how: 'stop' gives running work its grace and flushes
   * what is held; 'crash' dies as a killed process would (crash() below).
   */
  const releasers: Array<(how: 'stop' | 'crash') => Promise<unknown> | void> = []

  function onMessage(topic: string, payload: Buffer): void {
    // Without field detail: explaining a bad message would load TypeBox for good.
    const decoded = decode(topic, payload, { schemaDetail: false })
    if (!decoded.ok) {
      log.warn({ topic, error: decoded.error }, 'ignoring an undecodable message')
      return
    }
    if (decoded.topic.deviceId !== config.id) {
      log.warn({ topic }, 'ignoring a message for another device')
      return
    }
    const message = decoded.message
    switch (message.type) {
      case 'telemetry.ack':
        if (message.storeId !== ledger?.storeId) {
          // An ack for an older store of this device (before a re-flash): not ours to apply.
          log.debug({ storeId: message.storeId }, 'ignoring an ack for another store')
          return
        }
        // Before the sender lets the acked batch go: the ack is timed against it.
        hubClock.onAck(message, (upTo) => sender?.sentAtOf(upTo))
        sender?.onAck(message.upTo, message.accepts)
        link?.hubAccepts(message.accepts)
        // The wall clock was stepped since the birth told the hub its time: tell it again.
        if (hubClock.birthSkewStale()) link?.refreshClock()
        return
      case 'jobs.notify':
        puller?.onNotify(message)
        return
      case 'jobs.batch':
        puller?.onBatch(message)
        return
      case 'jobs.ack':
        if (message.storeId !== ledger?.storeId) {
          log.debug({ storeId: message.storeId }, 'ignoring a job ack for another store')
          return
        }
        reporter?.onAck(message)
        return
      case 'cmd.req':
        commands?.onRequest(message)
        return
      case 'cmd.res':
      case 'birth':
      case 'death':
      case 'telemetry':
      case 'events':
      case 'jobs.pull':
      case 'jobs.update':
        log.warn({ topic, type: message.type }, 'ignoring a message the agent does not handle')
        return
      default: {
        const never: never = message
        log.warn({ message: never }, 'unknown message type')
      }
    }
  }

  async function start(): Promise<void> {
    if (phase !== 'new') return
    phase = 'starting'
    try {
      const userModule = config.handlersModule === undefined ? undefined : await loadHandlersModule<CommandHandler>(config.handlersModule)
      const commandHandlers = new HandlerRegistry<CommandHandler>(
        builtinCommands(agentView),
        userModule?.commands ?? {},
        deps.commands === undefined ? {} : checkHandlers<CommandHandler>(deps.commands, 'AgentDeps.commands', 'command'),
      )
      const handlers = new HandlerRegistry(
        // Every command also runs as the job task "cmd.<name>": what a command queued for an
        // offline device (ifOffline "queue") becomes. The prefix keeps the two sets of names apart.
        commandsAsTasks(commandHandlers),
        builtinHandlers(() => shell),
        userModule?.handlers ?? {},
        deps.handlers === undefined ? {} : checkHandlers(deps.handlers, 'AgentDeps.handlers'),
      )
      // A plain entry allows any arguments: say so at start for commands that run other commands (#12 section 4).
      for (const w of shellAllowWarnings(shell.rules)) log.warn({ component: 'shell' }, w)
      ledger = new Ledger({ dataDir: config.dataDir, synchronous: config.synchronous, logger: log })
      const o = new Outbox(ledger, { maxRows: config.outboxMaxRows, maxBytes: config.outboxMaxBytes })
      outbox = o
      releasers.push((how) => {
        if (how === 'stop' && ledger?.isOpen) {
          try {
            // Acked rows leave the file, so a stopped agent's ledger holds only what is unacked.
            o.flush()
          } catch (err) {
            log.warn({ err }, 'could not delete acked rows from the ledger')
          }
        }
        ledger?.close()
      })
      const queue = new JobQueue(ledger, {
        capacity: config.jobQueueMax,
        // Inside the queue's transaction: a local job's end and its event commit together.
        onLocalOutcome: (outcomes) => { o.append(outcomes.map((x) => localOutcomeRecord(x, hubClock.unsyncedSuffix()))) },
      })
      jobQueue = queue
      const now = hubTime.now()
      const interrupted = queue.recoverInterrupted(now)
      if (interrupted > 0) log.warn({ jobs: interrupted }, 'jobs that were running when the agent last stopped are reported as failed (INTERRUPTED)')
      queue.prune(now)
      batcher = new TelemetryBatcher(outbox, { commitMs: config.outboxCommitMs, maxRows: config.batchMaxSamples, logger: log, clock })
      sampler = new Sampler(batcher, sensors, { intervalMs: config.sampleIntervalMs, clock: hubTime, logger: log, unsyncedSuffix: () => hubClock.unsyncedSuffix() })
      const l = new Link({
        hub: config.hub,
        tls: { caFile: config.caFile, certFile: config.certFile, keyFile: config.keyFile },
        deviceId: config.id,
        token: config.token,
        storeId: ledger.storeId,
        bootId,
        agentVersion: agentVersion(),
        capabilities: AGENT_CAPABILITIES,
        units,
        keepaliveSec: config.keepaliveSec,
        connectTimeoutMs: config.connectTimeoutMs,
        stopTimeoutMs: config.stopTimeoutMs,
        reconnect: { ...DEFAULT_RECONNECT_POLICY, baseMs: config.reconnectBaseMs, maxMs: config.reconnectMaxMs, stableAfterMs: config.reconnectStableMs },
        nextEpoch: () => ledger!.nextEpoch(),
        clock,
        onBirthClock: (wallMs) => { hubClock.onBirthClock(wallMs) },
        random,
        logger: log,
      })
      link = l
      releasers.push(async (how) => {
        // A crash killed the link first; a stop lets it send its death message.
        if (how === 'stop') {
          try {
            await l.stop()
          } catch (err) {
            log.warn({ err }, 'error while closing the link')
          }
        }
        l.removeAllListeners()
      })
      const s = new Sender(outbox, { isConnected: () => l.isConnected(), publish: (topic, payload) => l.publish(topic, payload) }, {
        deviceId: config.id,
        storeId: ledger.storeId,
        inflightBatches: config.inflightBatches,
        batchMaxSamples: config.batchMaxSamples,
        batchMaxBytes: config.batchMaxBytes,
        ackTimeoutMs: config.ackTimeoutMs,
        coalesceMs: config.coalesceMs,
        logger: log,
        clock,
        monotonic: () => monotonic.now(),
        wireBody: (kind, body) => hubClock.wireBody(kind, body),
      })
      sender = s
      releasers.push(() => { s.stop() })
      const transport = { isConnected: () => l.isConnected(), publish: (topic: string, payload: string | Buffer) => l.publish(topic, payload) }
      const r = new JobRunner(queue, handlers, {
        concurrency: config.jobConcurrency,
        deviceId: config.id,
        clock: hubTime,
        clockSynced: () => hubClock.synced,
        logger: deviceLog,
        sampleSensors,
        onRoom: () => { puller?.onRoom() },
      })
      runner = r
      const rep = new JobReporter(queue, transport, {
        deviceId: config.id,
        storeId: ledger.storeId,
        inflightBatches: config.inflightBatches,
        batchMaxBytes: config.batchMaxBytes,
        ackTimeoutMs: config.ackTimeoutMs,
        logger: deviceLog,
        clock,
      })
      reporter = rep
      releasers.push(() => { rep.stop() })
      const p = new JobPuller(queue, r, transport, {
        deviceId: config.id,
        pullIntervalMs: config.pullIntervalMs,
        ackTimeoutMs: config.ackTimeoutMs,
        clock: hubTime,
        random,
        logger: deviceLog,
      })
      puller = p
      const c = new CommandRunner(ledger, commandHandlers, transport, {
        deviceId: config.id,
        maxRunning: config.commandConcurrency,
        clock: hubTime,
        clockSynced: () => hubClock.synced,
        logger: deviceLog,
        sampleSensors,
      })
      commands = c
      // Before the link closes (releasers run last-in first-out): what the stop interrupts is still answered.
      releasers.push((how) => Promise.all([r.stop(how === 'stop' ? config.stopTimeoutMs : 0), c.stop(how === 'stop' ? config.stopTimeoutMs : 0)]))
      releasers.push(() => { p.stop() })
      // Held samples go into the outbox (and out, if the link still has time to send them); a crash loses them, as a killed process would.
      releasers.push((how) => { if (how === 'stop') batcher?.stop(); else batcher?.discard() })
      // The sampler in force: a reload may have replaced it.
      releasers.push(() => { sampler?.stop() })
      releasers.push(async (how) => {
        try {
          await schedules?.stop()
        } catch (err) {
          if (how === 'stop') log.warn({ err }, 'error while stopping the local schedules')
        }
      })
      schedules = localSchedules(config, queue, r)
      // 'connected' is emitted right after the birth is published: the next ack answers it.
      l.on('connected', () => { hubClock.onBirthSent(); s.onConnected(); rep.onConnected(); p.onConnected() })
      l.on('disconnected', () => { hubClock.onDisconnected(); s.onDisconnected(); rep.onDisconnected(); p.onDisconnected() })
      l.on('message', onMessage)
      c.start()
      r.start()
      rep.start()
      p.start()
      s.start()
      l.start()
      sampler.start()
      schedules.start()
      pruneTimer = clock.setInterval(() => {
        try {
          queue.prune(hubTime.now())
        } catch (err) {
          log.warn({ err }, 'could not prune done jobs')
        }
      }, JOB_PRUNE_INTERVAL_MS).unref()
      releasers.push(() => {
        clock.clearTimer(pruneTimer)
        pruneTimer = undefined
      })
      log.info({ storeId: ledger.storeId, dataDir: config.dataDir, sensors: sampler.sensorNames, backlog: outbox.stats().backlogRows, jobs: queue.stats().queued, tasks: handlers.names, commands: commandHandlers.names }, 'agent started')
      phase = 'started'
    } catch (err) {
      await release('stop')
      phase = 'stopped'
      throw err
    }
  }

  function localSchedules(c: AgentConfig, queue: JobQueue, r: JobRunner): LocalSchedules {
    return new LocalSchedules(c.schedules, {
      enqueue: (job) => {
        queue.enqueue([job], hubTime.now(), 'local')
        r.kick()
      },
      clock,
      logger: deviceLog,
    })
  }

  /** Serializes reloads: a second SIGHUP waits for the first to finish. */
  let reloading: Promise<unknown> = Promise.resolve()

  function reconfigure(next: AgentConfig): Promise<ReloadPlan> {
    const run = reloading.then(() => applyLive(next))
    reloading = run.catch(() => {})
    return run
  }

  async function applyLive(next: AgentConfig): Promise<ReloadPlan> {
    const plan = planReload(current, next)
    if (phase !== 'started') throw new Error('reconfigure: the agent is not running')
    const changed = new Set<string>(plan.live)
    const c = plan.effective
    // Everything that can fail is built first, so a refused reload changes nothing.
    const nextShell = changed.has('shellAllow') || changed.has('shellMaxOutputBytes') ? shellSettings(c) : shell
    const newSensors = changed.has('sensors') || changed.has('builtinSensors')
    const list = newSensors ? sensorsFor(c) : sensors
    const nextSampler = (newSensors || changed.has('sampleIntervalMs')) && batcher
      ? new Sampler(batcher, list, { intervalMs: c.sampleIntervalMs, clock: hubTime, logger: log, unsyncedSuffix: () => hubClock.unsyncedSuffix() })
      : undefined
    if (nextShell !== shell) {
      shell = nextShell
      for (const w of shellAllowWarnings(shell.rules)) log.warn({ component: 'shell' }, w)
    }
    if (changed.has('jobConcurrency')) runner?.setConcurrency(c.jobConcurrency)
    if (changed.has('commandConcurrency')) commands?.setMaxRunning(c.commandConcurrency)
    if (nextSampler) {
      sampler?.stop()
      sampler = nextSampler
      sensors = list
      if (newSensors) link?.setUnits(unitsOf(list))
      nextSampler.start()
    }
    if (changed.has('schedules') && jobQueue && runner) {
      await schedules?.stop()
      schedules = localSchedules(c, jobQueue, runner)
      schedules.start()
    }
    current = c
    return plan
  }

  /** Undoes what start() set up, newest first. */
  async function release(how: 'stop' | 'crash'): Promise<void> {
    while (releasers.length > 0) {
      try {
        await releasers.pop()!(how)
      } catch (err) {
        // The rest still runs: one part that fails to stop must not leave the others (and the ledger) open.
        if (how === 'stop') log.warn({ err }, 'error while stopping the agent')
        else log.debug({ err }, 'error while crashing the agent (simulated)')
      }
    }
  }

  /**
   * Dies the way a killed process would, for the simulator: the link is cut
   * without a death message (the broker publishes the Will), running jobs and
   * commands are abandoned (their ledger rows say running: the next start
   * reports them INTERRUPTED), nothing is flushed that was not committed.
   * The ledger file stays for a new agent on the same data dir.
   */
  function crash(): Promise<void> {
    if (stopping) return stopping
    stopping = (async () => {
      phase = 'stopping'
      link?.kill()
      await release('crash')
      phase = 'stopped'
      log.info('agent crashed (simulated)')
    })()
    return stopping
  }

  function stop(): Promise<void> {
    if (stopping) return stopping
    stopping = (async () => {
      phase = 'stopping'
      await release('stop')
      phase = 'stopped'
      log.info('agent stopped')
    })()
    return stopping
  }

  function emitEvent(kind: string, level: EventLevel, message: string, data?: Record<string, unknown>): void {
    if (!outbox || phase !== 'started') throw new Error('emitEvent: the agent is not started')
    if (!isSensorName(kind)) throw new Error(`emitEvent: kind ${JSON.stringify(kind)} must match the sensor-name pattern`)
    if (!EVENT_LEVELS.includes(level)) throw new Error(`emitEvent: level must be one of ${EVENT_LEVELS.join(', ')}`)
    if (data !== undefined && (typeof data !== 'object' || data === null || Array.isArray(data))) {
      // The hub would dead-letter the whole batch: refuse it here, where the caller can fix it.
      throw new Error('emitEvent: data must be a plain JSON object')
    }
    outbox.append([eventRecord(Math.floor(hubTime.now()), kind, level, message, data, hubClock.unsyncedSuffix())])
  }

  /** A sample someone asked for is committed at once, with any the batcher held. */
  function sampleAndCommit(report?: SampleReport): number {
    const n = sampler!.sampleNow(report)
    try {
      batcher?.commit()
    } catch (err) {
      log.error({ err }, 'could not append samples to the outbox')
      return 0
    }
    return n
  }

  function sampleSensors(): Record<string, number> {
    const now = clock.now()
    const out: Record<string, number> = {}
    for (const s of sensors) {
      try {
        const v = s.read(now)
        if (typeof v === 'number' && Number.isFinite(v)) out[s.name] = v
      } catch {
        // A failing sensor is left out, as the sampler does.
      }
    }
    return out
  }

  /** What the built-in commands read; called only while started. */
  const agentView: AgentView = {
    now: () => clock.now(),
    sysInfo: () => {
      const o = ledger?.isOpen ? outbox?.stats() : undefined
      const q = ledger?.isOpen ? jobQueue?.stats() : undefined
      return {
        deviceId: config.id,
        agentVersion: agentVersion(),
        uptimeMs: Math.round(process.uptime() * 1000),
        bootId,
        storeId: ledger?.storeId,
        epoch: link?.epoch,
        outbox: o && { backlogRows: o.backlogRows, backlogBytes: o.backlogBytes, droppedTelemetry: o.droppedTelemetry, droppedEvents: o.droppedEvents },
        jobs: q && { queued: q.queued, running: q.running, done: q.done, updatesPending: q.updatesPending },
        commands: commands && { running: commands.activeCount },
      }
    },
    sample: () => {
      const report: SampleReport = { ts: Math.floor(hubTime.now()), values: {} }
      const stored = sampler ? sampleAndCommit(report) : 0
      return { ts: report.ts, values: report.values, stored }
    },
    config: () => redactedConfig(current),
    pullJobs: () => ({ ...(puller?.pullNow() ?? { pulled: false, room: 0, reason: 'stopped' }) }),
  }

  function jobStats(): AgentJobStats | undefined {
    if (!jobQueue || !ledger?.isOpen || !puller || !reporter) return undefined
    const q = jobQueue.stats()
    const p = puller.stats()
    return {
      queued: q.queued,
      running: q.running,
      done: q.done,
      updatesPending: q.updatesPending,
      pulls: p.pulls,
      batchesReceived: p.batchesReceived,
      outcomes: q.outcomes,
      puller: p,
      reporter: reporter.stats(),
    }
  }

  return {
    deviceId: config.id,
    bootId,
    start,
    stop,
    crash,
    sampleNow: () => (phase === 'started' && sampler ? sampleAndCommit() : 0),
    emitEvent,
    isConnected: () => link?.isConnected() ?? false,
    get outbox() { return outbox },
    get ledger() { return ledger },
    get jobQueue() { return jobQueue },
    get config() { return current },
    reconfigure,
    stats: () => ({
      deviceId: config.id,
      storeId: ledger?.storeId,
      bootId,
      connected: link?.isConnected() ?? false,
      link: link?.stats() ?? { connected: false, epoch: 0, attempts: 0, connects: 0, disconnects: 0, messages: { sent: {}, received: {} }, lastError: undefined },
      outbox: ledger?.isOpen ? outbox?.stats() : undefined,
      sender: sender?.stats(),
      sampler: sampler?.stats(),
      jobs: jobStats(),
      commands: commands?.stats(),
      clock: hubClock.stats(),
    }),
  }
}
