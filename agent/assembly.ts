import type { Clock, Monotonic, Random } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { VERSION } from '../common/version.js'
import type { AgentConfig } from './config.js'
import { builtinCommands, commandsAsTasks, type AgentView, type CommandHandler } from './command-handlers.js'
import { CommandRunner } from './command-runner.js'
import { builtinHandlers, checkHandlers, HandlerRegistry, loadHandlersModule, type JobHandler, type ShellSettings } from './job-handlers.js'
import { JobPuller } from './job-puller.js'
import { JobQueue } from './job-queue.js'
import { JobReporter } from './job-reporter.js'
import { JobRunner } from './job-runner.js'
import { TIME_CAPABILITY, type HubClock } from './hub-clock.js'
import { Ledger } from './ledger.js'
import { shellAllowWarnings } from './shell-allow.js'
import { LocalSchedules } from './local-schedules.js'
import { Link } from './link.js'
import { DEFAULT_RECONNECT_POLICY } from './reconnect.js'
import { Outbox } from './outbox.js'
import { localOutcomeRecord } from './events.js'
import { Sampler } from './sampler.js'
import { Sender } from './sender.js'
import { TelemetryBatcher } from './telemetry-batcher.js'
import type { SensorSource } from './sensors.js'

/**
 * What a started agent is made of, and how the parts are wired together: the
 * ledger and its outbox and job queue, the batcher and sampler in front of the
 * outbox, the link, the sender that drains the outbox over it, the job runner,
 * reporter and puller, the command runner and the local schedules.
 *
 * assembleAgent() builds them in an order where each part exists before
 * anything that calls it, writes each into `parts` as soon as it exists (a
 * start that fails half-way still shows what it opened), and pushes each
 * one's release onto `releasers` right after it: the agent undoes them last-in
 * first-out (agent/agent.ts), so a stop releases the schedules and sampler
 * first and the ledger last, and a failed start releases exactly what it built.
 */

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

/** How a release is asked to end its part: 'stop' gives running work its grace and flushes what is held; 'crash' dies as a killed process would. */
export type ReleaseHow = 'stop' | 'crash'
export type Releaser = (how: ReleaseHow) => Promise<unknown> | void

/** The parts of the agent; each is set once start() built it. The sampler and schedules change on a reload. */
export interface AgentParts {
  ledger?: Ledger
  outbox?: Outbox
  jobQueue?: JobQueue
  batcher?: TelemetryBatcher
  sampler?: Sampler
  link?: Link
  sender?: Sender
  runner?: JobRunner
  reporter?: JobReporter
  puller?: JobPuller
  commands?: CommandRunner
  schedules?: LocalSchedules
}

/** What the agent hands the assembly: its config, clocks and loggers, and the callbacks the parts call back into. */
export interface AssemblyInput {
  readonly config: AgentConfig
  /** The device's wall clock: its timers run every timer of the agent. */
  readonly clock: Clock
  /** The hub's time once known (HubClock.clock): what deadlines and timestamps are judged on. */
  readonly hubTime: Clock
  readonly hubClock: HubClock
  readonly monotonic: Monotonic
  readonly random: Random
  readonly bootId: string
  /** Logs as the agent. */
  readonly log: Logger
  /** The device's logger, for the parts that name their own component. */
  readonly deviceLog: Logger
  readonly sensors: readonly SensorSource[]
  readonly units: Readonly<Record<string, string>>
  /** The shell task's settings at each run (a reload may change them). */
  readonly shell: () => ShellSettings
  /** Job and command handlers given in code (AgentDeps), on top of the built-ins and the handlersModule. */
  readonly handlers: Readonly<Record<string, JobHandler>> | undefined
  readonly commands: Readonly<Record<string, CommandHandler>> | undefined
  readonly agentView: AgentView
  readonly sampleSensors: () => Record<string, number>
  readonly onMessage: (topic: string, payload: Buffer) => void
}

/** Builds and starts every part (see the header); returns the handler names for the start log. */
export async function assembleAgent(input: AssemblyInput, parts: AgentParts, releasers: Releaser[]): Promise<{ tasks: string[]; commands: string[] }> {
  const { config, clock, hubTime, hubClock, log, deviceLog } = input
  const userModule = config.handlersModule === undefined ? undefined : await loadHandlersModule<CommandHandler>(config.handlersModule)
  const commandHandlers = new HandlerRegistry<CommandHandler>(
    builtinCommands(input.agentView),
    userModule?.commands ?? {},
    input.commands === undefined ? {} : checkHandlers<CommandHandler>(input.commands, 'AgentDeps.commands', 'command'),
  )
  const handlers = new HandlerRegistry(
    // Every command also runs as the job task "cmd.<name>": what a command queued for an
    // offline device (ifOffline "queue") becomes. The prefix keeps the two sets of names apart.
    commandsAsTasks(commandHandlers),
    builtinHandlers(input.shell),
    userModule?.handlers ?? {},
    input.handlers === undefined ? {} : checkHandlers(input.handlers, 'AgentDeps.handlers'),
  )
  // A plain entry allows any arguments: say so at start for commands that run other commands (#12 section 4).
  for (const w of shellAllowWarnings(input.shell().rules)) log.warn({ component: 'shell' }, w)
  const ledger = new Ledger({ dataDir: config.dataDir, synchronous: config.synchronous, logger: log })
  parts.ledger = ledger
  const o = new Outbox(ledger, { maxRows: config.outboxMaxRows, maxBytes: config.outboxMaxBytes })
  parts.outbox = o
  releasers.push((how) => {
    if (how === 'stop' && ledger.isOpen) {
      try {
        // Acked rows leave the file, so a stopped agent's ledger holds only what is unacked.
        o.flush()
      } catch (err) {
        log.warn({ err }, 'could not delete acked rows from the ledger')
      }
    }
    ledger.close()
  })
  const queue = new JobQueue(ledger, {
    capacity: config.jobQueueMax,
    // Inside the queue's transaction: a local job's end and its event commit together.
    onLocalOutcome: (outcomes) => { o.append(outcomes.map((x) => localOutcomeRecord(x, hubClock.unsyncedSuffix()))) },
  })
  parts.jobQueue = queue
  const now = hubTime.now()
  const interrupted = queue.recoverInterrupted(now)
  if (interrupted > 0) log.warn({ jobs: interrupted }, 'jobs that were running when the agent last stopped are reported as failed (INTERRUPTED)')
  queue.prune(now)
  const batcher = new TelemetryBatcher(o, { commitMs: config.outboxCommitMs, maxRows: config.batchMaxSamples, logger: log, clock })
  parts.batcher = batcher
  const sampler = new Sampler(batcher, input.sensors, { intervalMs: config.sampleIntervalMs, clock: hubTime, logger: log, unsyncedSuffix: () => hubClock.unsyncedSuffix() })
  parts.sampler = sampler
  const l = new Link({
    hub: config.hub,
    tls: { caFile: config.caFile, certFile: config.certFile, keyFile: config.keyFile },
    deviceId: config.id,
    token: config.token,
    storeId: ledger.storeId,
    bootId: input.bootId,
    agentVersion: agentVersion(),
    capabilities: AGENT_CAPABILITIES,
    units: input.units,
    keepaliveSec: config.keepaliveSec,
    connectTimeoutMs: config.connectTimeoutMs,
    stopTimeoutMs: config.stopTimeoutMs,
    reconnect: { ...DEFAULT_RECONNECT_POLICY, baseMs: config.reconnectBaseMs, maxMs: config.reconnectMaxMs, stableAfterMs: config.reconnectStableMs },
    nextEpoch: () => ledger.nextEpoch(),
    clock,
    onBirthClock: (wallMs) => { hubClock.onBirthClock(wallMs) },
    random: input.random,
    logger: log,
  })
  parts.link = l
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
  const s = new Sender(o, { isConnected: () => l.isConnected(), publish: (topic, payload) => l.publish(topic, payload) }, {
    deviceId: config.id,
    storeId: ledger.storeId,
    inflightBatches: config.inflightBatches,
    batchMaxSamples: config.batchMaxSamples,
    batchMaxBytes: config.batchMaxBytes,
    ackTimeoutMs: config.ackTimeoutMs,
    coalesceMs: config.coalesceMs,
    logger: log,
    clock,
    monotonic: () => input.monotonic.now(),
    wireBody: (kind, body) => hubClock.wireBody(kind, body),
  })
  parts.sender = s
  releasers.push(() => { s.stop() })
  const transport = { isConnected: () => l.isConnected(), publish: (topic: string, payload: string | Buffer) => l.publish(topic, payload) }
  const r = new JobRunner(queue, handlers, {
    concurrency: config.jobConcurrency,
    deviceId: config.id,
    clock: hubTime,
    clockSynced: () => hubClock.synced,
    logger: deviceLog,
    sampleSensors: input.sampleSensors,
    onRoom: () => { parts.puller?.onRoom() },
  })
  parts.runner = r
  const rep = new JobReporter(queue, transport, {
    deviceId: config.id,
    storeId: ledger.storeId,
    inflightBatches: config.inflightBatches,
    batchMaxBytes: config.batchMaxBytes,
    ackTimeoutMs: config.ackTimeoutMs,
    logger: deviceLog,
    clock,
  })
  parts.reporter = rep
  releasers.push(() => { rep.stop() })
  const p = new JobPuller(queue, r, transport, {
    deviceId: config.id,
    pullIntervalMs: config.pullIntervalMs,
    ackTimeoutMs: config.ackTimeoutMs,
    clock: hubTime,
    random: input.random,
    logger: deviceLog,
  })
  parts.puller = p
  const c = new CommandRunner(ledger, commandHandlers, transport, {
    deviceId: config.id,
    maxRunning: config.commandConcurrency,
    clock: hubTime,
    clockSynced: () => hubClock.synced,
    logger: deviceLog,
    sampleSensors: input.sampleSensors,
  })
  parts.commands = c
  // Before the link closes (releasers run last-in first-out): what the stop interrupts is still answered.
  releasers.push((how) => Promise.all([r.stop(how === 'stop' ? config.stopTimeoutMs : 0), c.stop(how === 'stop' ? config.stopTimeoutMs : 0)]))
  releasers.push(() => { p.stop() })
  // Held samples go into the outbox (and out, if the link still has time to send them); a crash loses them, as a killed process would.
  releasers.push((how) => { if (how === 'stop') batcher.stop(); else batcher.discard() })
  // The sampler in force: a reload may have replaced it.
  releasers.push(() => { parts.sampler?.stop() })
  releasers.push(async (how) => {
    try {
      await parts.schedules?.stop()
    } catch (err) {
      if (how === 'stop') log.warn({ err }, 'error while stopping the local schedules')
    }
  })
  const schedules = localSchedules(config, input, queue, r)
  parts.schedules = schedules
  // 'connected' is emitted right after the birth is published: the next ack answers it.
  l.on('connected', () => { hubClock.onBirthSent(); s.onConnected(); rep.onConnected(); p.onConnected() })
  l.on('disconnected', () => { hubClock.onDisconnected(); s.onDisconnected(); rep.onDisconnected(); p.onDisconnected() })
  l.on('message', input.onMessage)
  c.start()
  r.start()
  rep.start()
  p.start()
  s.start()
  l.start()
  sampler.start()
  schedules.start()
  const pruneTimer = clock.setInterval(() => {
    try {
      queue.prune(hubTime.now())
    } catch (err) {
      log.warn({ err }, 'could not prune done jobs')
    }
  }, JOB_PRUNE_INTERVAL_MS).unref()
  releasers.push(() => { clock.clearTimer(pruneTimer) })
  return { tasks: handlers.names, commands: commandHandlers.names }
}

/** The local schedules of config `c`, enqueuing into the agent's queue (at start, and anew when a reload changes them). */
export function localSchedules(c: AgentConfig, input: Pick<AssemblyInput, 'hubTime' | 'clock' | 'deviceLog'>, queue: JobQueue, runner: JobRunner): LocalSchedules {
  return new LocalSchedules(c.schedules, {
    enqueue: (job) => {
      queue.enqueue([job], input.hubTime.now(), 'local')
      runner.kick()
    },
    clock: input.clock,
    logger: input.deviceLog,
  })
}
