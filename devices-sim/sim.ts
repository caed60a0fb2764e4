import { ensurePrivateDir } from '../common/private-files.js'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { percentiles } from '../common/latency.js'
import { silentLogger, type Logger } from '../common/logger.js'
import { chaosSchedule, formatSchedule, type ChaosAction, type ChaosEvent } from './chaos.js'
import type { SimHub } from './hub-control.js'
import { deviceSensors, type SensorModel } from './models.js'
import { NetworkSimulator } from './network.js'
import { fleetPlans, linkChanges, summarizePlans, type ConnectivityPlan, type ConnectivityProfile, type ProfileChoice } from './profiles.js'
import { streamFor } from './random.js'

/**
 * The simulator's run: real agents (the agent code, in this process), each
 * with seeded sensor models and its own TCP link to the hub through the
 * NetworkSimulator, carrying out a connectivity plan per device and a chaos
 * schedule, while a workload of jobs and commands runs through the hub's API.
 * At the end the links come back, the fleet drains, and the accounting
 * compares what the devices generated with what the hub stored.
 *
 *   provision -> network -> agents connect (staggered) -> plan + chaos + workload
 *   -> end: sensors stop, links up, crashed agents back -> drain -> accounting
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
  }
  readonly drainedMs: number
  readonly ok: boolean
}

/** Resolves after `ms`, or at once when `signal` aborts (then the caller checks the signal). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, Math.max(0, ms))
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}
const quantiles = (xs: number[]): Quantiles => {
  const p = percentiles(xs)
  return { count: xs.length, p50: Math.round(p.p50 * 10) / 10, p99: Math.round(p.p99 * 10) / 10 }
}

interface SimDevice {
  readonly id: string
  readonly index: number
  readonly plan: ConnectivityPlan
  readonly models: SensorModel[]
  token: string
  agent: Agent | undefined
  /** Samples the sensors produced (the ground truth of "generated"). */
  produced: number
  firstOnlineAt: number | null
  /** Message counts of agents that crashed, carried over. */
  readonly messages: Record<string, number>
}

interface Timed { readonly atMs: number; readonly run: () => Promise<void> | void }

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
  const mqttPort = Number(new URL(o.hub.mqttUrl).port || 1883)
  const hubUrl = new URL(o.hub.mqttUrl)
  const net = await NetworkSimulator.start({ targetPort: mqttPort, targetHost: hubUrl.hostname, deviceIds: ids })

  let sensorsOn = true
  const devices: SimDevice[] = ids.map((id, index) => ({
    id, index, plan: plans[index]!, models: deviceSensors(o.seed, index, { tickMs: o.sampleIntervalMs }),
    token: tokens.get(id)!, agent: undefined, produced: 0, firstOnlineAt: null, messages: {},
  }))
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
    }), { logger, sensors, random: streamFor(o.seed, 'backoff', d.index) })
    d.agent = agent
    const started = performance.now()
    await agent.start()
    agentStarts.push(performance.now() - started)
    const outbox = agent.outbox!
    const open = new Map<number, number>()
    let appends = 0
    outbox.onAppend((seq) => { if (appends++ % 10 === 0) open.set(seq, Date.now()) })
    outbox.onAck((upTo) => {
      const now = Date.now()
      for (const [seq, at] of open) {
        if (seq > upTo) continue
        latency.push(now - at)
        open.delete(seq)
      }
    })
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
  const timeline: Timed[] = []
  for (const d of devices) {
    for (const c of linkChanges(d.plan)) {
      if (c.change === 'connect') timeline.push({ atMs: c.atMs, run: () => startAgent(d) })
      else if (c.change === 'down') timeline.push({ atMs: c.atMs, run: () => { net.cut([d.id], 'profile') } })
      else timeline.push({ atMs: c.atMs, run: () => { net.restore([d.id], 'profile') } })
    }
  }
  let hubDown = false
  const chaosRun = (a: ChaosAction): Timed['run'] => {
    const members = (a.devices ?? []).map((id) => byId.get(id)!)
    switch (a.action) {
      case 'cut': return () => { net.cut(a.devices ?? [], 'partition') }
      case 'restore': return () => { net.restore(a.devices ?? [], 'partition') }
      case 'drop': return () => { net.drop(a.devices ?? []) }
      case 'hub-kill': return async () => { hubDown = true; say(`chaos: hub SIGKILLed at ${elapsed()}`); await o.hub.kill() }
      case 'hub-start': return async () => { await o.hub.restart(); hubDown = false; say(`chaos: hub back at ${elapsed()}`) }
      case 'agent-crash': return async () => { await Promise.all(members.map(crashAgent)) }
      case 'agent-start': return async () => { await Promise.all(members.map(startAgent)) }
      default: {
        const never: never = a.action
        return never
      }
    }
  }
  for (const a of schedule) timeline.push({ atMs: a.atMs, run: chaosRun(a) })
  timeline.sort((a, b) => a.atMs - b.atMs)
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`

  // ---- workload: jobs to the fleet, pings to single devices ----
  const jobIds: Array<{ id: string; createdAt: number }> = []
  const commandOutcomes: Record<string, number> = {}
  const roundTrips: number[] = []
  let commandsSent = 0
  const pick = streamFor(o.seed, 'workload')
  const jobEvery = o.jobEveryMs ?? 15_000
  const commandEvery = o.commandEveryMs ?? 500
  let workloadOn = true
  // Ends the workload's waits at once when the run ends (or is stopped).
  const workloadStop = new AbortController()
  const stopWorkload = () => { workloadOn = false; workloadStop.abort() }
  o.signal?.addEventListener('abort', stopWorkload, { once: true })
  const workload: Array<Promise<void>> = []
  if (jobEvery > 0) {
    workload.push((async () => {
      for (let n = 1; workloadOn; n++) {
        await sleep(jobEvery, workloadStop.signal)
        if (!workloadOn) break
        if (hubDown) continue
        const r = await o.hub.api<{ id: string; createdAt: number }>('POST', '/api/jobs', { name: 'echo', target: `group:${group}`, payload: { n }, timeout: '30s' })
        if (r.status === 201) jobIds.push({ id: r.body.id, createdAt: r.body.createdAt })
      }
    })())
  }
  if (commandEvery > 0) {
    workload.push((async () => {
      while (workloadOn) {
        await sleep(commandEvery, workloadStop.signal)
        if (!workloadOn || hubDown) continue
        const d = devices[Math.floor(pick() * devices.length)]!
        commandsSent++
        const r = await o.hub.api<{ ok?: boolean; durationMs?: number; error?: { code: string } }>('POST', `/api/devices/${d.id}/commands`, { name: 'ping', timeout: '2s' })
        const outcome = r.status === 200 ? (r.body.ok ? 'succeeded' : 'failed') : r.body.error?.code ?? `HTTP_${r.status}`
        commandOutcomes[outcome] = (commandOutcomes[outcome] ?? 0) + 1
        if (r.status === 200 && r.body.ok && r.body.durationMs !== undefined) roundTrips.push(r.body.durationMs)
      }
    })())
  }

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
        await t.run()
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
    await Promise.allSettled(workload)
    const drainStart = Date.now()
    const drainDeadline = drainStart + (o.drainTimeoutMs ?? 60_000)
    for (;;) {
      const busy = devices.filter((d) => {
        const s = d.agent?.stats()
        return !s || !s.connected || (s.outbox?.backlogRows ?? 0) > 0 || (s.jobs?.updatesPending ?? 0) > 0 || (s.jobs?.running ?? 0) > 0
      }).length
      const jobsOpen = await openJobs(o.hub, jobIds.map((j) => j.id))
      if (busy === 0 && jobsOpen === 0) break
      if (Date.now() > drainDeadline) {
        say(`drain: gave up after ${o.drainTimeoutMs ?? 60_000} ms with ${busy} devices still busy and ${jobsOpen} jobs open`)
        break
      }
      await sleep(250, o.signal)
      stopped()
    }
    drainedMs = Date.now() - drainStart
    phase = 'accounting'

    return await account(o, { devices, summary, scheduleLines, exactCount, latency, jobIds, commandOutcomes, commandsSent, roundTrips, drainedMs, schedule, agentStarts, loopDelayMs })
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

async function openJobs(hub: SimHub, ids: readonly string[]): Promise<number> {
  let open = 0
  for (const id of ids) {
    const r = await hub.api<{ status: string }>('GET', `/api/jobs/${id}?limit=1`)
    if (r.status !== 200 || r.body.status === 'active') open++
  }
  return open
}

interface AccountInput {
  readonly devices: SimDevice[]
  readonly summary: ReturnType<typeof summarizePlans>
  readonly scheduleLines: string[]
  readonly exactCount: boolean
  readonly latency: number[]
  readonly jobIds: Array<{ id: string; createdAt: number }>
  readonly commandOutcomes: Record<string, number>
  readonly commandsSent: number
  readonly roundTrips: number[]
  readonly drainedMs: number
  readonly schedule: readonly ChaosAction[]
  readonly agentStarts: number[]
  readonly loopDelayMs: SimReport['online']['loopDelayMs']
}

/** The accounting: what the devices generated against what the hub holds, per device and per profile; then the patterns side by side. */
async function account(o: SimOptions, a: AccountInput): Promise<SimReport> {
  const api = o.hub.api
  let generated = 0, stored = 0, lost = 0, duplicates = 0, dropped = 0
  let hubAgrees = true
  const rows = new Map<ConnectivityProfile, { devices: number; generated: number; stored: number; lost: number; duplicates: number }>()
  const messages: Record<string, number> = {}
  let offlineSeen = 0
  for (const d of a.devices) {
    const s = d.agent!.stats()
    for (const [k, v] of [...Object.entries(d.messages), ...Object.entries(s.link.messages.sent), ...Object.entries(s.link.messages.received)]) {
      messages[k] = (messages[k] ?? 0) + v
    }
    const newest = s.outbox?.newestSeq ?? 0
    const droppedHere = (s.outbox?.droppedTelemetry ?? 0) + (s.outbox?.droppedEvents ?? 0)
    const info = await api<{ streams: Array<{ storeId: string; upTo: number }> }>('GET', `/api/devices/${d.id}`)
    // The hub's mark: every seq up to it that the device sent is stored (rows the device dropped were never sent).
    const mark = info.body.streams?.find((x) => x.storeId === s.storeId)?.upTo ?? 0
    let storedHere = Math.max(0, mark - droppedHere)
    let dupHere = 0
    if (a.exactCount) {
      const r = await api<{ samples: Array<{ seq: number }>; truncated: boolean }>('GET', `/api/devices/${d.id}/telemetry?since=0&limit=100000`)
      const seqs = r.body.samples.map((x) => x.seq)
      const distinct = new Set(seqs)
      dupHere = seqs.length - distinct.size
      storedHere = distinct.size
      // The rows counted and the hub's mark tell the same story.
      if (r.body.truncated || distinct.size + droppedHere !== mark) hubAgrees = false
    }
    // Numbered by the device, not dropped by its overflow policy, not held by the hub.
    let lostHere = Math.max(0, newest - droppedHere - storedHere)
    // Samples the sensors produced that the ledger never numbered would be lost before the outbox.
    lostHere += Math.max(0, d.produced - newest)
    generated += d.produced
    stored += storedHere
    lost += lostHere
    duplicates += dupHere
    dropped += droppedHere
    const row = rows.get(d.plan.profile) ?? { devices: 0, generated: 0, stored: 0, lost: 0, duplicates: 0 }
    row.devices++
    row.generated += d.produced
    row.stored += storedHere
    row.lost += lostHere
    row.duplicates += dupHere
    rows.set(d.plan.profile, row)
    const h = await api<{ history: Array<{ status: string }> }>('GET', `/api/devices/${d.id}/presence?limit=10000`)
    offlineSeen += (h.body.history ?? []).filter((e) => e.status === 'offline').length
  }

  // Jobs: every execution of every job the run made, by state; history steps applied twice would show as duplicates.
  const byState: Record<string, number> = {}
  let issued = 0
  let jobDup = 0
  const toStart: number[] = [], toFinish: number[] = [], waiting: number[] = []
  for (const j of a.jobIds) {
    const r = await api<{ counts: Record<string, number>; executions: Array<{ execId: string; startedAt: number | null; finishedAt: number | null; deliveredAt: number | null; attempt: number }> }>(
      'GET', `/api/jobs/${j.id}?limit=10000`)
    if (r.status !== 200) continue
    for (const [state, n] of Object.entries(r.body.counts)) {
      byState[state] = (byState[state] ?? 0) + n
      issued += n
    }
    for (const e of r.body.executions) {
      if (a.exactCount) {
        // Each step of each attempt once: an update applied twice would show here.
        const h = await api<{ history: Array<{ attempt: number; state: string }> }>('GET', `/api/executions/${e.execId}`)
        const steps = (h.body.history ?? []).map((x) => `${x.attempt}:${x.state}`)
        jobDup += steps.length - new Set(steps).size
      }
      if (e.startedAt !== null) toStart.push(e.startedAt - j.createdAt)
      if (e.finishedAt !== null) toFinish.push(e.finishedAt - j.createdAt)
      if (e.deliveredAt !== null) waiting.push(e.deliveredAt - j.createdAt)
    }
  }
  const finished = issued - (byState.queued ?? 0) - (byState.in_progress ?? 0)
  const jobsLost = (byState.queued ?? 0) + (byState.in_progress ?? 0)

  const expectedOutages = a.devices.reduce((s, d) => s + d.plan.outages.length, 0)
    + a.schedule.filter((x) => x.action === 'cut' || x.action === 'agent-crash' || x.action === 'drop').reduce((s, x) => s + (x.devices?.length ?? 0), 0)
    + a.schedule.filter((x) => x.action === 'hub-kill').length * a.devices.length

  const sum = (prefix: string) => Object.entries(messages).filter(([k]) => k === prefix || k.startsWith(`${prefix}/`)).reduce((s, [, v]) => s + v, 0)
  const executions = issued || 1
  const report: SimReport = {
    seed: o.seed, devices: o.devices, durationMs: o.durationMs, profile: o.profile, sampleIntervalMs: o.sampleIntervalMs,
    schedule: a.scheduleLines,
    totals: {
      generated, stored, lost, duplicates, dropped,
      jobs: { issued, finished, lost: jobsLost, duplicates: jobDup, byState },
      commands: { sent: a.commandsSent, byOutcome: a.commandOutcomes },
    },
    byProfile: [...rows].map(([profile, r]) => ({
      profile, ...r, onlineShare: Math.round((a.summary.byProfile[profile]?.onlineShare ?? 1) * 1000) / 1000,
    })),
    hubAgrees,
    exactCount: a.exactCount,
    online: onlineFigures(a.devices, a.summary.allConnectedByMs, a.agentStarts, a.loopDelayMs),
    presence: { expectedOutages, offlineTransitionsSeen: offlineSeen },
    patterns: {
      telemetry: { sampledToStoredMs: quantiles(a.latency), messagesPerSample: round((sum('telemetry') + sum('events')) / Math.max(1, generated)) },
      jobs: {
        createdToStartedMs: quantiles(toStart), createdToFinishedMs: quantiles(toFinish), waitingForLinkMs: quantiles(waiting),
        messagesPerExecution: round(sum('jobs') / executions),
      },
      commands: {
        roundTripMs: quantiles(a.roundTrips),
        refusedOfflineShare: round((a.commandOutcomes.DEVICE_OFFLINE ?? 0) / Math.max(1, a.commandsSent)),
        messagesPerCommand: round(sum('cmd') / Math.max(1, a.commandsSent - (a.commandOutcomes.DEVICE_OFFLINE ?? 0))),
      },
    },
    drainedMs: a.drainedMs,
    ok: lost === 0 && duplicates === 0 && jobsLost === 0 && jobDup === 0,
  }
  return report
}


const round = (x: number) => Math.round(x * 100) / 100

function onlineFigures(devices: readonly SimDevice[], connectsByMs: number, agentStarts: number[], loopDelayMs: SimReport['online']['loopDelayMs']): SimReport['online'] {
  // Only devices whose plan had them online from their connect count for "all online by".
  const firsts = devices.map((d) => d.firstOnlineAt)
  const everOnline = firsts.filter((x) => x !== null).length
  const planned = devices.filter((d) => d.plan.outages[0]?.fromMs !== d.plan.connectAtMs)
  const plannedFirsts = planned.map((d) => d.firstOnlineAt)
  const allOnlineByMs = plannedFirsts.every((x) => x !== null) && plannedFirsts.length > 0 ? Math.max(...(plannedFirsts)) : null
  const late = planned.filter((d) => d.firstOnlineAt !== null).map((d) => d.firstOnlineAt! - d.plan.connectAtMs)
  const withMax = (xs: number[]) => ({ ...quantiles(xs), max: xs.length > 0 ? Math.round(Math.max(...xs) * 10) / 10 : 0 })
  return { connectsByMs, allOnlineByMs, everOnline, lateAfterSlotMs: withMax(late), agentStartMs: withMax(agentStarts), loopDelayMs }
}

/** For the CLI: a working dir for the run's ledgers. */
export function simWorkDir(base: string, seed: number): string {
  const dir = join(base, `run-${seed}-${Date.now()}`)
  ensurePrivateDir(dir)
  return dir
}
