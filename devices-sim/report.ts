import type { Quantiles, SimProgress, SimReport } from './sim.js'

/**
 * How a simulated run reads to a person (issue #5): the live progress line
 * while it runs, and the report at the end. The headline first (lost,
 * duplicated, dropped), then where it came from (per profile, jobs,
 * commands), then the pattern report that puts push, pull and event-driven
 * side by side, then presence, the online promise and the drain. Pure: a
 * report in, lines out; `--json` prints the report itself instead.
 */

const n = (x: number) => x.toLocaleString('en-US')

/** A latency for people: 0.4 ms, 12 ms, 1.3 s, 2.1 min. */
export function formatLatency(ms: number): string {
  if (ms < 10) return `${(Math.round(ms * 10) / 10).toString()} ms`
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 120_000) return `${(Math.round(ms / 100) / 10).toString()} s`
  return `${(Math.round(ms / 6000) / 10).toString()} min`
}

/** 1, 0.5, 30 per minute... as samples per device: "1/s", "2/min". */
export function formatRate(sampleIntervalMs: number): string {
  const perSecond = 1000 / sampleIntervalMs
  if (perSecond >= 1) return `${round2(perSecond)}/s`
  return `${round2(perSecond * 60)}/min`
}

const round2 = (x: number) => (Math.round(x * 100) / 100).toString()
const pct = (share: number) => `${Math.round(share * 1000) / 10}%`
const seconds = (ms: number) => `${Math.round(ms / 1000)}s`

/** Columns padded to their widest cell; `align` has an l (text) or r (figure) per column, default text first and figures after. */
function table(rows: ReadonlyArray<readonly string[]>, align = 'l'): string[] {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length) })
  const left = (i: number) => (align[i] ?? 'r') === 'l'
  return rows.map((row) => `  ${row.map((cell, i) => (left(i) ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ')}`.trimEnd())
}

function byCount(record: Readonly<Record<string, number>>): string {
  const entries = Object.entries(record).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
  return entries.length === 0 ? 'none' : entries.map(([k, v]) => `${k} ${n(v)}`).join(', ')
}

function quantileCells(q: Quantiles): [string, string, string] {
  if (q.count === 0) return ['-', '-', '0']
  return [formatLatency(q.p50), formatLatency(q.p99), n(q.count)]
}

/** The one-line verdict: what was lost or duplicated, or that nothing was. */
export function headline(r: SimReport): string {
  const t = r.totals
  const problems: string[] = []
  if (t.lost > 0) problems.push(`${n(t.lost)} samples lost`)
  if (t.duplicates > 0) problems.push(`${n(t.duplicates)} samples duplicated`)
  if (t.jobs.lost > 0) problems.push(`${n(t.jobs.lost)} job executions never finished`)
  if (t.jobs.duplicates > 0) problems.push(`${n(t.jobs.duplicates)} job steps applied twice`)
  if (problems.length > 0) return `FAILED: ${problems.join(', ')}`
  return r.ok ? 'OK: nothing lost, nothing duplicated' : 'FAILED'
}

/** The report as printed at the end of `rollcall sim` (without --json). */
export function renderReport(r: SimReport): string[] {
  const t = r.totals
  const lines: string[] = []
  lines.push(
    `rollcall sim report: ${n(r.devices)} devices (${r.profile}), ${seconds(r.durationMs)}, ${formatRate(r.sampleIntervalMs)} per device, seed ${r.seed}`,
    '',
    `  ${headline(r)}`,
    '',
    `telemetry  generated ${n(t.generated)}  stored ${n(t.stored)}  lost ${n(t.lost)}  duplicates ${n(t.duplicates)}  dropped ${n(t.dropped)}`,
    `  counted ${r.exactCount ? 'every stored row' : 'from the hub\'s marks (not every row: a large fleet)'}; hub's marks agree with the rows: ${r.hubAgrees ? 'yes' : 'NO'}`,
  )
  if (t.dropped > 0) lines.push('  dropped: removed on the device by its outbox overflow policy (counted, not lost)')
  lines.push('')
  lines.push(...table([
    ['profile', 'devices', 'planned online', 'generated', 'stored', 'lost', 'duplicates'],
    ...r.byProfile.map((p) => [p.profile, n(p.devices), pct(p.onlineShare), n(p.generated), n(p.stored), n(p.lost), n(p.duplicates)]),
  ]))
  lines.push(
    '',
    `jobs       issued ${n(t.jobs.issued)}  finished ${n(t.jobs.finished)}  lost ${n(t.jobs.lost)}  duplicates ${n(t.jobs.duplicates)}`,
    `  by state: ${byCount(t.jobs.byState)}`,
    `commands   sent ${n(t.commands.sent)}`,
    `  by outcome: ${byCount(t.commands.byOutcome)}`,
    '',
    'patterns, side by side',
  )
  const p = r.patterns
  const [tp50, tp99, tn] = quantileCells(p.telemetry.sampledToStoredMs)
  const [sp50, sp99, sn] = quantileCells(p.jobs.createdToStartedMs)
  const [fp50, fp99, fn] = quantileCells(p.jobs.createdToFinishedMs)
  const [wp50, wp99, wn] = quantileCells(p.jobs.waitingForLinkMs)
  const [cp50, cp99, cn] = quantileCells(p.commands.roundTripMs)
  const rx = p.reactions
  const reactionRows = rx === undefined ? [] : [
    ['reactions (rules)', 'sampled -> fired', ...quantileCells(rx.sampledToFiredMs), '', ''],
    ['', 'fired -> command at device', ...quantileCells(rx.firedToDeliveredMs), '', ''],
    ['', 'sampled -> command at device', ...quantileCells(rx.sampledToDeliveredMs), '', ''],
  ]
  lines.push(...table([
    ['pattern', 'measure', 'p50', 'p99', 'n', 'MQTT messages', ''],
    ['event-driven (telemetry)', 'sampled -> stored', tp50, tp99, tn, round2(p.telemetry.messagesPerSample), 'per sample'],
    ['pull (jobs)', 'created -> started', sp50, sp99, sn, round2(p.jobs.messagesPerExecution), 'per execution'],
    ['', 'created -> finished', fp50, fp99, fn, '', ''],
    ['', 'created -> delivered', wp50, wp99, wn, '', ''],
    ['push (commands)', 'round trip', cp50, cp99, cn, round2(p.commands.messagesPerCommand), 'per command'],
    ...reactionRows,
  ], 'llrrrrl'))
  const refused = t.commands.byOutcome.DEVICE_OFFLINE ?? 0
  lines.push(`  commands refused as offline: ${pct(p.commands.refusedOfflineShare)} (${n(refused)} of ${n(t.commands.sent)})`)
  if (rx) {
    lines.push(
      `  reactions: rule ${rx.rule}: bursts ${n(rx.bursts)}, fired ${n(rx.fired)}, suppressed ${n(rx.suppressed)}; sensors.sample at the device ${n(rx.delivered)}, not delivered: ${byCount(rx.notDelivered)}; jobs to the group ${n(rx.jobs)} (in the jobs above)`,
    )
  }
  lines.push(
    '',
    `presence   expected outages ${n(r.presence.expectedOutages)}, offline transitions the hub recorded ${n(r.presence.offlineTransitionsSeen)}`,
    `online     every device had its connect slot by ${formatLatency(r.online.connectsByMs)}; ${
      r.online.allOnlineByMs === null
        ? 'NOT every device planned online from its connect came online'
        : `the devices planned online from their connect were all online by ${formatLatency(r.online.allOnlineByMs)}`}`,
    `           online after their slot p50 ${formatLatency(r.online.lateAfterSlotMs.p50)}, p99 ${formatLatency(r.online.lateAfterSlotMs.p99)}; this process spent p50 ${formatLatency(r.online.agentStartMs.p50)} opening an agent, and its timers ran up to ${formatLatency(r.online.loopDelayMs.p99)} late (p99) during the connects`,
    `           ${n(r.online.everOnline)} of ${n(r.devices)} devices were online at some point`,
    `drain      ${formatLatency(r.drainedMs)} after the run for every outbox to empty and every job to finish`,
  )
  return lines
}

/** The live line: "12s / 60s  online 48/50  199 samples/s  backlog 23  48s left". */
export function renderProgress(p: SimProgress): string {
  const common = `online ${n(p.online)}/${n(p.devices)}  ${n(p.samplesPerSec)} samples/s  backlog ${n(p.backlog)}`
  if (p.phase === 'draining') return `draining  ${common}  (${seconds(Math.max(0, p.elapsedMs - p.durationMs))} past the end)`
  if (p.phase === 'accounting') return `counting  ${common}  (checking what the hub stored)`
  return `${seconds(p.elapsedMs)} / ${seconds(p.durationMs)}  ${common}  ${seconds(Math.max(0, p.durationMs - p.elapsedMs))} left`
}

/** `rollcall sim`'s exit status: 1 when anything was lost or duplicated. */
export function exitCodeFor(r: SimReport): 0 | 1 {
  return r.ok ? 0 : 1
}
