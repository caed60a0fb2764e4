import { percentiles } from '../common/latency.js'
import type { ChaosAction } from './chaos.js'
import type { SimHub } from './hub-control.js'
import type { ConnectivityProfile, summarizePlans } from './profiles.js'
import type { ReactionsReport } from './reactions.js'
import type { Quantiles, SimDevice, SimOptions, SimReport } from './sim.js'

/**
 * The accounting at the end of a run: what the devices generated against
 * what the hub holds, per device and per profile, the jobs and commands of
 * the workload, and the patterns side by side. The per-device arithmetic is
 * tallyDevice, pure and table-tested.
 */

/** What one device's counts say (tallyDevice). */
export interface DeviceTallyInput {
  /** Samples its sensors produced: the ground truth of "generated". */
  readonly produced: number
  /** The newest seq its ledger numbered. */
  readonly newestSeq: number
  /** Rows its outbox dropped by its overflow policy (never sent, so never stored). */
  readonly dropped: number
  /** The hub's mark for its store: every seq up to it that the device sent is stored. */
  readonly mark: number
  /** With an exact count: the seqs the hub holds, read row by row, and whether the read was cut short. */
  readonly rows?: { readonly seqs: readonly number[]; readonly truncated: boolean } | undefined
}

export interface DeviceTally {
  readonly stored: number
  readonly lost: number
  readonly duplicates: number
  /** False when the rows counted and the hub's mark tell different stories. */
  readonly hubAgrees: boolean
}

/**
 * One device's account: stored is what the hub holds (its rows when they were
 * counted, else its mark less what the device dropped); lost is what the
 * device numbered and did not drop that the hub does not hold, plus what the
 * sensors produced that the ledger never numbered.
 */
export function tallyDevice(d: DeviceTallyInput): DeviceTally {
  let stored = Math.max(0, d.mark - d.dropped)
  let duplicates = 0
  let hubAgrees = true
  if (d.rows !== undefined) {
    const distinct = new Set(d.rows.seqs)
    duplicates = d.rows.seqs.length - distinct.size
    stored = distinct.size
    hubAgrees = !d.rows.truncated && distinct.size + d.dropped === d.mark
  }
  const lost = Math.max(0, d.newestSeq - d.dropped - stored) + Math.max(0, d.produced - d.newestSeq)
  return { stored, lost, duplicates, hubAgrees }
}

export const quantiles = (xs: number[]): Quantiles => {
  const p = percentiles(xs)
  return { count: xs.length, p50: Math.round(p.p50 * 10) / 10, p99: Math.round(p.p99 * 10) / 10 }
}

export async function openJobs(hub: SimHub, ids: readonly string[]): Promise<number> {
  let open = 0
  for (const id of ids) {
    const r = await hub.api<{ status: string }>('GET', `/api/jobs/${id}?limit=1`)
    if (r.status !== 200 || r.body.status === 'active') open++
  }
  return open
}

export interface AccountInput {
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
  readonly reactions?: ReactionsReport
}

/** The accounting: what the devices generated against what the hub holds, per device and per profile; then the patterns side by side. */
export async function account(o: SimOptions, a: AccountInput): Promise<SimReport> {
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
    const droppedHere = (s.outbox?.droppedTelemetry ?? 0) + (s.outbox?.droppedEvents ?? 0)
    const info = await api<{ streams: Array<{ storeId: string; upTo: number }> }>('GET', `/api/devices/${d.id}`)
    let counted: DeviceTallyInput['rows']
    if (a.exactCount) {
      const r = await api<{ samples: Array<{ seq: number }>; truncated: boolean }>('GET', `/api/devices/${d.id}/telemetry?since=0&limit=100000`)
      counted = { seqs: r.body.samples.map((x) => x.seq), truncated: r.body.truncated }
    }
    const t = tallyDevice({
      produced: d.produced, newestSeq: s.outbox?.newestSeq ?? 0, dropped: droppedHere,
      mark: info.body.streams?.find((x) => x.storeId === s.storeId)?.upTo ?? 0, rows: counted,
    })
    if (!t.hubAgrees) hubAgrees = false
    const storedHere = t.stored, lostHere = t.lost, dupHere = t.duplicates
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
        // The rule's commands that reached a device went the same way (request and answer): counted in both.
        messagesPerCommand: round(sum('cmd') / Math.max(1, a.commandsSent - (a.commandOutcomes.DEVICE_OFFLINE ?? 0) + (a.reactions?.delivered ?? 0))),
      },
      ...(a.reactions ? { reactions: a.reactions } : {}),
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
