import { ensurePrivateDir } from '../common/private-files.js'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { silentLogger, type Logger } from '../common/logger.js'
import { chaosSchedule, formatSchedule, type ChaosAction, type ChaosEvent } from './chaos.js'
import { account, openJobs } from './accounting.js'
import { watchAckLag } from './ack-lag.js'
import { simTimeline, type SimStep } from './timeline.js'
import { sleep, startWorkload } from './workload.js'
import type { SimHub } from './hub-control.js'
import { deviceModels, sensorList, type SensorModel, type VibrationModel } from './models.js'
import { NetworkSimulator } from './network.js'
import { fleetPlans, summarizePlans, type ConnectivityPlan, type ConnectivityProfile, type ProfileChoice } from './profiles.js'
import { streamFor } from './random.js'
import { startReactions, type Reactions, type ReactionScenario, type ReactionsReport } from './reactions.js'

/**
 * The simulator's run: real agents (the agent code, in this process), each
 * with seeded sensor models and its own TCP link to the hub through the
 * NetworkSimulator, carrying out a connectivity plan per device and a chaos
 * schedule, while a workload of jobs and commands runs through the hub's API.
 * At the end the links come back, the fleet drains, and the accounting
 * compares what the devices generated with what the hub stored.
 *
 *   provision (+ the reactions scenario's rule) -> network -> agents connect (staggered)
 *   -> plan + chaos + workload -> end: sensors stop, links up, crashed agents back
 *   -> drain -> accounting
 */

export interface SimOptions {
  readonly hub: SimHub
  readonly devices: number
  readonly durationMs: number
  readonly profile: ProfileChoice
  readonly seed: number
  /** Time between two readings of a device's sensors. */
  readonly sampleIntervalMs: number
  readonly chaos: readonly ChaosEvent[]
  /** Where the agents' ledgers go. */
  readonly workDir: string
  /** Device ids are `${prefix}-0001`...; default "sim". */
  readonly prefix?: string
  /** Connects are spread over this long (default: the profile's, 200 connects/s). */
  readonly staggerMs?: number
  /** A job to the whole fleet this often (0: none). Default 15 s. */
  readonly jobEveryMs?: number
  /** A ping to one device this often (0: none). Default 500 ms. */
  readonly commandEveryMs?: number
  /** The longest the fleet may take to drain after the run. Default 60 s. */
  readonly drainTimeoutMs?: number
  /** The reactions scenario (devices-sim/reactions.ts): a rule on vibration bursts; undefined: none. */
  readonly reactions?: ReactionScenario
  /** Count every stored sample over the API (lost and duplicates exact); default on up to 500 devices. */
  readonly exactCount?: boolean
  readonly logger?: Logger
  /** Lines for the operator (the schedule, phases). */
  readonly say?: (line: string) => void
  /** Called about once a second while the run lasts. */
  readonly onProgress?: (p: SimProgress) => void
  /** Ends the run early (Ctrl-C): the agents are stopped cleanly and runSim rejects with an AbortError. */
  readonly signal?: AbortSignal
}

export interface SimProgress {
  readonly elapsedMs: number
  readonly durationMs: number
  readonly phase: 'running' | 'draining' | 'accounting'
  readonly online: number
  readonly devices: number
  readonly samplesPerSec: number
  readonly backlog: number
}

export interface Quantiles { readonly count: number; readonly p50: number; readonly p99: number }

export interface SimReport {
  readonly seed: number
  readonly devices: number
  readonly durationMs: number
  readonly profile: ProfileChoice
  readonly sampleIntervalMs: number
  /** The chaos schedule, as printed at the start. */
  readonly schedule: readonly string[]
  readonly totals: {
    readonly generated: number
    readonly stored: number
    readonly lost: number
    readonly duplicates: number
    /** Dropped on the device by the outbox's overflow policy (counted, not lost by accident). */
    readonly dropped: number
    readonly jobs: { readonly issued: number; readonly finished: number; readonly lost: number; readonly duplicates: number; readonly byState: Readonly<Record<string, number>> }
    readonly commands: { readonly sent: number; readonly byOutcome: Readonly<Record<string, number>> }
  }
  readonly byProfile: ReadonlyArray<{ readonly profile: ConnectivityProfile; readonly devices: number; readonly generated: number; readonly stored: number; readonly lost: number; readonly duplicates: number; readonly onlineShare: number }>
  /** Whether the hub's own marks (every seq up to its mark stored) agree with the rows counted. */
  readonly hubAgrees: boolean
  readonly exactCount: boolean
  /**
   * The stagger: every device has a connect slot by `connectsByMs`.
   * `allOnlineByMs`: when the last device planned online from its connect was
   * first seen online. How late after its slot a device comes online depends
   * on how busy the machine is, above all this simulator's own process (it
   * opens every agent's ledger on one thread): `agentStartMs` and
   * `loopDelayMs` say how much of the lateness was spent here.
   */
  readonly online: {
    readonly connectsByMs: number; readonly allOnlineByMs: number | null; readonly everOnline: number
    /** How long after its connect slot each device was first online (devices planned online from their connect). */
    readonly lateAfterSlotMs: Quantiles & { readonly max: number }
    /** How long opening one agent (its ledger, its first epoch) held the simulator's thread. */
    readonly agentStartMs: Quantiles & { readonly max: number }
    /** The simulator's event-loop delay from the first slot until the last one: how late any timer of its agents ran. */
    readonly loopDelayMs: { readonly p50: number; readonly p99: number; readonly max: number }
  }
  readonly presence: { readonly expectedOutages: number; readonly offlineTransitionsSeen: number }
  readonly patterns: {
    readonly telemetry: { readonly sampledToStoredMs: Quantiles; readonly messagesPerSample: number }
    readonly jobs: { readonly createdToStartedMs: Quantiles; readonly createdToFinishedMs: Quantiles; readonly waitingForLinkMs: Quantiles; readonly messagesPerExecution: number }
    readonly commands: { readonly roundTripMs: Quantiles; readonly refusedOfflineShare: number; readonly messagesPerCommand: number }
    /** With the reactions scenario: sample taken -> rule fired -> command at the device. */
    readonly reactions?: ReactionsReport
  }
  readonly drainedMs: number
  readonly ok: boolean
}

/** One simulated device's state during a run. */
export interface SimDevice {
  readonly id: string
  readonly index: number
  readonly plan: ConnectivityPlan
  readonly models: SensorModel[]
  readonly vibration: VibrationModel
  token: string
  agent: Agent | undefined
  /** Samples the sensors produced (the ground truth of "generated"). */
  produced: number
  firstOnlineAt: number | null
  /** Message counts of agents that crashed, carried over. */
  readonly messages: Record<string, number>
}

export async function runSim(o: SimOptions): Promise<SimReport> {
  const say = o.say ?? (() => {})
  const logger = o.logger ?? silentLogger()
  const prefix = o.prefix ?? 'sim'
  const ids = Array.from({ length: o.devices }, (_, i) => `${prefix}-${String(i + 1).padStart(4, '0')}`)
  const plans = fleetPlans(o.profile, o.seed, o.devices, o.durationMs, o.staggerMs === undefined ? {} : { staggerMs: o.staggerMs })
  const summary = summarizePlans(plans, o.durationMs)
  const schedule = chaosSchedule(o.chaos, o.seed, ids, o.durationMs)
  const scheduleLines = formatSchedule(schedule)
  if (schedule.some((a) => a.action === 'hub-kill') && !o.hub.own) {
    throw new Error('hub-kill chaos needs the simulator\'s own hub: drop --hub')
  }
  for (const line of scheduleLines) say(line)
  const exactCount = o.exactCount ?? o.devices <= 500

  // ---- provision ----
  const group = `${prefix}-fleet`
  const tokens = new Map<string, string>()
  for (let i = 0; i < ids.length; i += 1000) {
    const r = await o.hub.api<{ devices: Array<{ id: string; token: string }> }>('POST', '/api/devices/bulk', {
      devices: ids.slice(i, i + 1000).map((id) => ({ id, group })), existing: 'rotate',
    })
    if (r.status !== 200) throw new Error(`provisioning the simulated devices failed: ${r.status} ${JSON.stringify(r.body)}`)
    for (const d of r.body.devices) tokens.set(d.id, d.token)
  }
  // Before any device connects, so the rule sees every sample.
  const reactions: Reactions | undefined = o.reactions ? await startReactions(o.hub, prefix, group) : undefined
  if (reactions) say(`reactions: rule ${reactions.rule} on group:${group}: a vibration burst sends sensors.sample to its device and a job to the group`)
  const mqttPort = Number(new URL(o.hub.mqttUrl).port || 1883)
  const hubUrl = new URL(o.hub.mqttUrl)
  const net = await NetworkSimulator.start({ targetPort: mqttPort, targetHost: hubUrl.hostname, deviceIds: ids })

  let sensorsOn = true
  const devices: SimDevice[] = ids.map((id, index) => {
    const m = deviceModels(o.seed, index, { tickMs: o.sampleIntervalMs, ...(o.reactions ? { anomalyEveryTicks: o.reactions.burstsEveryTicks } : {}) })
    return {
      id, index, plan: plans[index]!, models: sensorList(m), vibration: m.vibration,
      token: tokens.get(id)!, agent: undefined, produced: 0, firstOnlineAt: null, messages: {},
    }
  })
  const byId = new Map(devices.map((d) => [d.id, d]))

  // Telemetry latency, sampled: every 10th append of a device, the time; its ack closes it.
  const latency: number[] = []
  // What the simulator's own process costs the connects: each agent's start, and the loop's lag.
  const agentStarts: number[] = []
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  let loopDelayMs: SimReport['online']['loopDelayMs'] = { p50: 0, p99: 0, max: 0 }
  const t0 = Date.now()

  async function startAgent(d: SimDevice): Promise<void> {
    if (d.agent) return
    const sensors = d.models.map((m) => ({
      name: m.name,
      unit: m.unit,
      read: (now: number) => {
        if (!sensorsOn) return undefined
        d.produced++
        return m.read(now)
      },
    }))
    // Over TLS the relay carries the handshake end to end: the agent verifies the hub's certificate for 127.0.0.1 (rollcall tls init always adds it).
    const url = o.hub.mqttUrl.startsWith('mqtts:') ? net.urlFor(d.id).replace(/^mqtt:/, 'mqtts:') : net.urlFor(d.id)
    const agent = createAgent(resolveAgentConfig({
      hub: url, ...(o.hub.ca !== undefined ? { caFile: o.hub.ca } : {}), id: d.id, token: d.token, dataDir: join(o.workDir, 'agents', d.id),
      // outboxCommitMs 0: the accounting counts every sensor read, and a simulated crash would lose held ones.
      builtinSensors: false, sampleIntervalMs: o.sampleIntervalMs, outboxCommitMs: 0, keepaliveSec: 10,
      reconnectBaseMs: 250, reconnectMaxMs: 4000, reconnectStableMs: 5000, ackTimeoutMs: 3000, logLevel: 'silent',
    }), {
      logger, sensors, random: streamFor(o.seed, 'backoff', d.index),
      ...(reactions ? { commands: { 'sensors.sample': reactions.sensorsSample(() => d.agent?.sampleNow() ?? 0) } } : {}),
    })
    d.agent = agent
    const started = performance.now()
    await agent.start()
    agentStarts.push(performance.now() - started)
    watchAckLag(agent.outbox!, Date.now, (lagMs) => latency.push(lagMs))
  }

  // When each device first came online: one sweep over those not yet seen, not a timer per device.
  const onlineWatch = setInterval(() => {
    const now = Date.now() - t0
    for (const d of devices) if (d.firstOnlineAt === null && d.agent?.isConnected()) d.firstOnlineAt = now
  }, 50)

  async function crashAgent(d: SimDevice): Promise<void> {
    const agent = d.agent
    if (!agent) return
    d.agent = undefined
    for (const [k, v] of Object.entries(agent.stats().link.messages.sent)) d.messages[k] = (d.messages[k] ?? 0) + v
    for (const [k, v] of Object.entries(agent.stats().link.messages.received)) d.messages[k] = (d.messages[k] ?? 0) + v
    await agent.crash()
  }

  // ---- the timeline: connects and outages of each plan, and the chaos schedule ----
  const timeline = simTimeline(devices, schedule)
  let hubDown = false
  const chaosRun = async (a: ChaosAction): Promise<void> => {
    const members = (a.devices ?? []).map((id) => byId.get(id)!)
    switch (a.action) {
      case 'cut': net.cut(a.devices ?? [], 'partition'); return
      case 'restore': net.restore(a.devices ?? [], 'partition'); return
      case 'drop': net.drop(a.devices ?? []); return
      case 'hub-kill': hubDown = true; say(`chaos: hub SIGKILLed at ${elapsed()}`); await o.hub.kill(); return
      case 'hub-start': await o.hub.restart(); hubDown = false; say(`chaos: hub back at ${elapsed()}`); return
      case 'agent-crash': await Promise.all(members.map(crashAgent)); return
      case 'agent-start': await Promise.all(members.map(startAgent)); return
      default: {
        const never: never = a.action
        return never
      }
    }
  }
  const run = async (step: SimStep): Promise<void> => {
    switch (step.kind) {
      case 'connect': await startAgent(byId.get(step.deviceId)!); return
      case 'down': net.cut([step.deviceId], 'profile'); return
      case 'up': net.restore([step.deviceId], 'profile'); return
      case 'chaos': await chaosRun(step.action); return
    }
  }
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`

  // ---- workload: jobs to the fleet, pings to single devices ----
  const workload = startWorkload({
    hub: o.hub, seed: o.seed, group, deviceIds: ids, jobEveryMs: o.jobEveryMs ?? 15_000, commandEveryMs: o.commandEveryMs ?? 500, hubDown: () => hubDown,
  })
  const stopWorkload = () => { workload.stop() }
  o.signal?.addEventListener('abort', stopWorkload, { once: true })

  // ---- progress ----
  let phase: SimProgress['phase'] = 'running'
  let lastProduced = 0
  let lastAt = Date.now()
  const progress = setInterval(() => {
    const now = Date.now()
    const produced = devices.reduce((s, d) => s + d.produced, 0)
    const backlog = devices.reduce((s, d) => s + (d.agent?.stats().outbox?.backlogRows ?? 0), 0)
    o.onProgress?.({
      elapsedMs: now - t0, durationMs: o.durationMs, phase, devices: o.devices,
      online: devices.filter((d) => d.agent?.isConnected()).length,
      samplesPerSec: Math.round(((produced - lastProduced) * 1000) / Math.max(1, now - lastAt)), backlog,
    })
    lastProduced = produced
    lastAt = now
  }, 1000)

  let drainedMs = 0
  try {
    // ---- run the timeline ----
    const stopped = () => {
      if (o.signal?.aborted) throw Object.assign(new Error('the simulation was stopped'), { name: 'AbortError' })
    }
    loopDelay.enable()
    let connectsMeasured = false
    const endConnects = () => {
      if (connectsMeasured) return
      connectsMeasured = true
      loopDelay.disable()
      const ms = (ns: number) => Math.round(ns / 1e5) / 10
      loopDelayMs = { p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max) }
    }
    for (const t of timeline) {
      if (t.atMs > summary.allConnectedByMs) endConnects()
      await sleep(t0 + t.atMs - Date.now(), o.signal)
      stopped()
      try {
        await run(t)
      } catch (err) {
        logger.error({ err }, 'a simulator step failed')
        say(`step at ${t.atMs} ms failed: ${(err as Error).message}`)
      }
    }
    endConnects()
    await sleep(t0 + o.durationMs - Date.now(), o.signal)
    stopped()

    // ---- end: stop producing, bring everything back, drain ----
    sensorsOn = false
    stopWorkload()
    phase = 'draining'
    net.restore(ids)
    if (hubDown) { await o.hub.restart(); hubDown = false }
    await Promise.all(devices.map(startAgent))
    await workload.done
    const drainStart = Date.now()
    const drainDeadline = drainStart + (o.drainTimeoutMs ?? 60_000)
    for (;;) {
      const busy = devices.filter((d) => {
        const s = d.agent?.stats()
        return !s || !s.connected || (s.outbox?.backlogRows ?? 0) > 0 || (s.jobs?.updatesPending ?? 0) > 0 || (s.jobs?.running ?? 0) > 0
      }).length
      const jobsOpen = await openJobs(o.hub, workload.results.jobIds.map((j) => j.id))
      const reactionsOpen = reactions ? await reactions.unfinished() : 0
      if (busy === 0 && jobsOpen === 0 && reactionsOpen === 0) break
      if (Date.now() > drainDeadline) {
        say(`drain: gave up after ${o.drainTimeoutMs ?? 60_000} ms with ${busy} devices still busy and ${jobsOpen} jobs open${reactions ? `, ${reactionsOpen} rule actions and rule jobs unfinished` : ''}`)
        break
      }
      await sleep(250, o.signal)
      stopped()
    }
    drainedMs = Date.now() - drainStart
    phase = 'accounting'

    const w = workload.results
    // The rule's jobs are counted with the workload's: lost and duplicated steps are looked for in both.
    const reacted = reactions ? await reactions.account(devices) : undefined
    return await account(o, {
      devices, summary, scheduleLines, exactCount, latency, jobIds: [...w.jobIds, ...(reacted?.jobIds ?? [])], commandOutcomes: w.commandOutcomes, commandsSent: w.commandsSent,
      roundTrips: w.roundTrips, drainedMs, schedule, agentStarts, loopDelayMs, ...(reacted ? { reactions: reacted.report } : {}),
    })
  } finally {
    loopDelay.disable()
    clearInterval(progress)
    clearInterval(onlineWatch)
    stopWorkload()
    o.signal?.removeEventListener('abort', stopWorkload)
    await Promise.allSettled(devices.map((d) => d.agent?.stop() ?? Promise.resolve()))
    await net.close()
  }
}

/** For the CLI: a working dir for the run's ledgers. */
export function simWorkDir(base: string, seed: number): string {
  const dir = join(base, `run-${seed}-${Date.now()}`)
  ensurePrivateDir(dir)
  return dir
}
