import { randomUUID } from 'node:crypto'
import { systemClock, systemMonotonic, type Clock, type Monotonic, type Random } from '../common/clock.js'
import { silentLogger, type Logger } from '../common/logger.js'
import { EVENT_LEVELS } from '../protocol/limits.js'
import { isSensorName } from '../protocol/ids.js'
import { agentVersion, assembleAgent, localSchedules, type AgentParts, type AssemblyInput, type Releaser, type ReleaseHow } from './assembly.js'
import type { AgentConfig } from './config.js'
import { redactedConfig, type AgentView, type CommandHandler } from './command-handlers.js'
import type { CommandRunnerStats } from './command-runner.js'
import { shellSettings, type JobHandler } from './job-handlers.js'
import { planReload, type ReloadPlan } from './config-reload.js'
import type { JobPullerStats } from './job-puller.js'
import type { JobOutcome } from './job-outcome.js'
import type { JobQueue } from './job-queue.js'
import type { JobReporterStats } from './job-reporter.js'
import { createHubInbox } from './hub-inbox.js'
import { HubClock, kernelBootId, type HubClockStats } from './hub-clock.js'
import type { Ledger } from './ledger.js'
import { shellAllowWarnings } from './shell-allow.js'
import type { LinkStats } from './link.js'
import type { Outbox, OutboxStats } from './outbox.js'
import { eventRecord, type EventLevel } from './events.js'
import { Sampler, type SampleReport, type SamplerStats } from './sampler.js'
import type { SenderStats } from './sender.js'
import { builtinSensors, sensorUnits, simulatedSensor, type SensorSource } from './sensors.js'

/**
 * The agent: its lifecycle and its public face. `start()` has the parts built
 * and wired (agent/assembly.ts: the ledger, recording jobs and commands a
 * previous run left running as INTERRUPTED, then the command runner, the job
 * runner, the job reporter and puller, the sender, the link, the sampler and
 * the local schedules); `stop()` releases them in reverse order (schedules,
 * sampler, puller, job and command runners with a short grace for what is
 * running, reporter, sender, link with a death for the current epoch,
 * ledger) and is safe to call twice; `crash()` does the same as a killed
 * process would. Messages from the hub go through agent/hub-inbox.ts; a
 * reload (`reconfigure`) swaps what can change live.
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

  /** The parts, each set once start() built it (agent/assembly.ts). */
  const parts: AgentParts = {}
  let phase: 'new' | 'starting' | 'started' | 'stopping' | 'stopped' = 'new'
  let stopping: Promise<void> | undefined
  /**
   * What start() set up, undone last-in first-out by stop() and crash() alike.
   * Each step is told how: 'stop' gives running work its grace and flushes
   * what is held; 'crash' dies as a killed process would (crash() below).
   */
  const releasers: Releaser[] = []

  async function start(): Promise<void> {
    if (phase !== 'new') return
    phase = 'starting'
    try {
      const input: AssemblyInput = {
        config, clock, hubTime, hubClock, monotonic, random, bootId, log, deviceLog, sensors, units,
        shell: () => shell,
        handlers: deps.handlers,
        commands: deps.commands,
        agentView,
        sampleSensors,
        onMessage: createHubInbox(config.id, parts, hubClock, log),
      }
      const names = await assembleAgent(input, parts, releasers)
      log.info({ storeId: parts.ledger!.storeId, dataDir: config.dataDir, sensors: parts.sampler!.sensorNames, backlog: parts.outbox!.stats().backlogRows, jobs: parts.jobQueue!.stats().queued, tasks: names.tasks, commands: names.commands }, 'agent started')
      phase = 'started'
    } catch (err) {
      await release('stop')
      phase = 'stopped'
      throw err
    }
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
    const nextSampler = (newSensors || changed.has('sampleIntervalMs')) && parts.batcher
      ? new Sampler(parts.batcher, list, { intervalMs: c.sampleIntervalMs, clock: hubTime, logger: log, unsyncedSuffix: () => hubClock.unsyncedSuffix() })
      : undefined
    if (nextShell !== shell) {
      shell = nextShell
      for (const w of shellAllowWarnings(shell.rules)) log.warn({ component: 'shell' }, w)
    }
    if (changed.has('jobConcurrency')) parts.runner?.setConcurrency(c.jobConcurrency)
    if (changed.has('commandConcurrency')) parts.commands?.setMaxRunning(c.commandConcurrency)
    if (nextSampler) {
      parts.sampler?.stop()
      parts.sampler = nextSampler
      sensors = list
      if (newSensors) parts.link?.setUnits(unitsOf(list))
      nextSampler.start()
    }
    if (changed.has('schedules') && parts.jobQueue && parts.runner) {
      await parts.schedules?.stop()
      parts.schedules = localSchedules(c, { hubTime, clock, deviceLog }, parts.jobQueue, parts.runner)
      parts.schedules.start()
    }
    current = c
    return plan
  }

  /** Undoes what start() set up, newest first. */
  async function release(how: ReleaseHow): Promise<void> {
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
      parts.link?.kill()
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
    if (!parts.outbox || phase !== 'started') throw new Error('emitEvent: the agent is not started')
    if (!isSensorName(kind)) throw new Error(`emitEvent: kind ${JSON.stringify(kind)} must match the sensor-name pattern`)
    if (!EVENT_LEVELS.includes(level)) throw new Error(`emitEvent: level must be one of ${EVENT_LEVELS.join(', ')}`)
    if (data !== undefined && (typeof data !== 'object' || data === null || Array.isArray(data))) {
      // The hub would dead-letter the whole batch: refuse it here, where the caller can fix it.
      throw new Error('emitEvent: data must be a plain JSON object')
    }
    parts.outbox.append([eventRecord(Math.floor(hubTime.now()), kind, level, message, data, hubClock.unsyncedSuffix())])
  }

  /** A sample someone asked for is committed at once, with any the batcher held. */
  function sampleAndCommit(report?: SampleReport): number {
    const n = parts.sampler!.sampleNow(report)
    try {
      parts.batcher?.commit()
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
      const o = parts.ledger?.isOpen ? parts.outbox?.stats() : undefined
      const q = parts.ledger?.isOpen ? parts.jobQueue?.stats() : undefined
      return {
        deviceId: config.id,
        agentVersion: agentVersion(),
        uptimeMs: Math.round(process.uptime() * 1000),
        bootId,
        storeId: parts.ledger?.storeId,
        epoch: parts.link?.epoch,
        outbox: o && { backlogRows: o.backlogRows, backlogBytes: o.backlogBytes, droppedTelemetry: o.droppedTelemetry, droppedEvents: o.droppedEvents },
        jobs: q && { queued: q.queued, running: q.running, done: q.done, updatesPending: q.updatesPending },
        commands: parts.commands && { running: parts.commands.activeCount },
      }
    },
    sample: () => {
      const report: SampleReport = { ts: Math.floor(hubTime.now()), values: {} }
      const stored = parts.sampler ? sampleAndCommit(report) : 0
      return { ts: report.ts, values: report.values, stored }
    },
    config: () => redactedConfig(current),
    pullJobs: () => ({ ...(parts.puller?.pullNow() ?? { pulled: false, room: 0, reason: 'stopped' }) }),
  }

  function jobStats(): AgentJobStats | undefined {
    if (!parts.jobQueue || !parts.ledger?.isOpen || !parts.puller || !parts.reporter) return undefined
    const q = parts.jobQueue.stats()
    const p = parts.puller.stats()
    return {
      queued: q.queued,
      running: q.running,
      done: q.done,
      updatesPending: q.updatesPending,
      pulls: p.pulls,
      batchesReceived: p.batchesReceived,
      outcomes: q.outcomes,
      puller: p,
      reporter: parts.reporter.stats(),
    }
  }

  return {
    deviceId: config.id,
    bootId,
    start,
    stop,
    crash,
    sampleNow: () => (phase === 'started' && parts.sampler ? sampleAndCommit() : 0),
    emitEvent,
    isConnected: () => parts.link?.isConnected() ?? false,
    get outbox() { return parts.outbox },
    get ledger() { return parts.ledger },
    get jobQueue() { return parts.jobQueue },
    get config() { return current },
    reconfigure,
    stats: () => ({
      deviceId: config.id,
      storeId: parts.ledger?.storeId,
      bootId,
      connected: parts.link?.isConnected() ?? false,
      link: parts.link?.stats() ?? { connected: false, epoch: 0, attempts: 0, connects: 0, disconnects: 0, messages: { sent: {}, received: {} }, lastError: undefined },
      outbox: parts.ledger?.isOpen ? parts.outbox?.stats() : undefined,
      sender: parts.sender?.stats(),
      sampler: parts.sampler?.stats(),
      jobs: jobStats(),
      commands: parts.commands?.stats(),
      clock: hubClock.stats(),
    }),
  }
}
