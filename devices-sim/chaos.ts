import { RollcallError } from '../common/errors.js'
import { formatDurationMs, parseDurationMs } from '../common/duration.js'
import { parsePercent } from '../common/rate.js'
import { deriveSeed, streamFor } from './random.js'

/**
 * Chaos for a simulated run (issue #5, `--chaos SPEC`): a written spec is
 * parsed into events, and the events are turned into a concrete, seeded
 * schedule of actions the runner carries out at their offsets. Both steps are
 * pure; the same spec, seed and fleet give the same schedule, which is printed
 * so a run can be repeated (acceptance 2).
 *
 * Spec: comma-separated events, `name[=share]@at[+length]`:
 * - `partition=20%@10s+15s`: cut 20 % of the fleet's links at 10 s for 15 s;
 * - `hub-kill@30s[+2s]`: SIGKILL the hub at 30 s, start it again after 2 s (default 1 s);
 * - `agent-crash=5%@40s[+3s]`: crash 5 % of the agents at 40 s, restart them on
 *   the same ledger after 3 s (default 1 s);
 * - `reconnect-burst=50%@45s`: half the fleet drops its connection at the same
 *   instant and reconnects.
 */

export const CHAOS_EXAMPLE = 'partition=20%@10s+15s,hub-kill@30s,agent-crash=5%@40s,reconnect-burst=50%@45s'
export const CHAOS_KINDS = ['partition', 'hub-kill', 'agent-crash', 'reconnect-burst'] as const
export type ChaosKind = (typeof CHAOS_KINDS)[number]

/** Down time of a killed hub or a crashed agent when the spec gives none. */
export const DEFAULT_DOWN_MS = 1000

export type ChaosEvent =
  | { readonly kind: 'partition'; readonly percent: number; readonly atMs: number; readonly forMs: number }
  | { readonly kind: 'hub-kill'; readonly atMs: number; readonly downMs: number }
  | { readonly kind: 'agent-crash'; readonly percent: number; readonly atMs: number; readonly downMs: number }
  | { readonly kind: 'reconnect-burst'; readonly percent: number; readonly atMs: number }

export const CHAOS_ACTIONS = ['cut', 'restore', 'hub-kill', 'hub-start', 'agent-crash', 'agent-start', 'drop'] as const
export type ChaosActionKind = (typeof CHAOS_ACTIONS)[number]

export interface ChaosAction {
  readonly atMs: number
  readonly action: ChaosActionKind
  /** The devices acted on, in fleet order; absent for the hub's actions. */
  readonly devices?: readonly string[]
  /** The event this action carries out, written as in a spec. */
  readonly event: string
}

const SYNTAX: Record<ChaosKind, string> = {
  partition: 'partition=SHARE@AT+FOR, e.g. partition=20%@10s+15s',
  'hub-kill': 'hub-kill@AT[+DOWN], e.g. hub-kill@30s or hub-kill@30s+2s',
  'agent-crash': 'agent-crash=SHARE@AT[+DOWN], e.g. agent-crash=5%@40s',
  'reconnect-burst': 'reconnect-burst=SHARE@AT, e.g. reconnect-burst=50%@45s',
}

function isChaosKind(value: string): value is ChaosKind {
  return (CHAOS_KINDS as readonly string[]).includes(value)
}

function specError(spec: string, index: number, column: number, part: string, problem: string): RollcallError {
  return new RollcallError(
    'BAD_REQUEST',
    `chaos spec, event ${index + 1} "${part}" (column ${column}): ${problem}. A valid spec: ${CHAOS_EXAMPLE}`,
    { spec, event: index + 1, column, part, example: CHAOS_EXAMPLE },
  )
}

/** A duration with its unit ("10s", "500ms", "1.5m"); a bare number is refused here, "@10" is too easy to mean seconds. */
function parseOffset(text: string): number | undefined {
  if (!/[a-z]\s*$/i.test(text)) return undefined
  return parseDurationMs(text)
}

/**
 * Parses a chaos spec. An empty spec is no chaos. Errors are RollcallError
 * BAD_REQUEST naming the event, its column and what to write instead, with a
 * valid example; `details` carries the same for a caller that formats its own.
 */
export function parseChaosSpec(spec: string): ChaosEvent[] {
  const events: ChaosEvent[] = []
  if (spec.trim() === '') return events
  let column = 1
  const parts = spec.split(',')
  for (const [index, raw] of parts.entries()) {
    const original = raw.trim()
    const part = original.toLowerCase()
    const at = column + (raw.length - raw.trimStart().length)
    column += raw.length + 1
    const fail = (problem: string) => specError(spec, index, at, original, problem)
    if (part === '') throw fail('an empty event (two commas in a row, or a trailing comma)')
    const m = /^([a-z-]+)\s*(?:=\s*([^@]*?))?\s*(?:@\s*([^+]*?)\s*(?:\+\s*(.*))?)?$/.exec(part)
    const name = m?.[1] ?? part
    if (!m || !isChaosKind(name)) throw fail(`unknown event "${/^[a-z-]+/.exec(part)?.[0] ?? part}"; use one of ${CHAOS_KINDS.join(', ')}`)
    const [, , shareText, atText, lengthText] = m
    const syntax = SYNTAX[name]
    const needsShare = name !== 'hub-kill'
    if (needsShare && shareText === undefined) throw fail(`${name} needs a share of the fleet: ${syntax}`)
    if (!needsShare && shareText !== undefined) throw fail(`hub-kill takes no share (there is one hub): ${syntax}`)
    if (atText === undefined || atText === '') throw fail(`say when, after "@": ${syntax}`)
    const atMs = parseOffset(atText)
    if (atMs === undefined) throw fail(`"${atText}" is not a time; write it with a unit (10s, 1.5m, 500ms): ${syntax}`)
    let percent = 0
    if (shareText !== undefined) {
      const p = parsePercent(shareText)
      if (p === undefined) throw fail(`"${shareText}" is not a share; write a percentage above 0 and at most 100 (20%): ${syntax}`)
      percent = p
    }
    let lengthMs: number | undefined
    if (lengthText !== undefined) {
      if (name === 'reconnect-burst') throw fail(`reconnect-burst has no length (the devices reconnect at once): ${syntax}`)
      lengthMs = parseOffset(lengthText)
      if (lengthMs === undefined || lengthMs <= 0) throw fail(`"${lengthText}" is not a length; write a time above 0 with a unit (15s): ${syntax}`)
    }
    switch (name) {
      case 'partition':
        if (lengthMs === undefined) throw fail(`a partition needs a length, after "+": ${syntax}`)
        events.push({ kind: name, percent, atMs, forMs: lengthMs })
        break
      case 'hub-kill':
        events.push({ kind: name, atMs, downMs: lengthMs ?? DEFAULT_DOWN_MS })
        break
      case 'agent-crash':
        events.push({ kind: name, percent, atMs, downMs: lengthMs ?? DEFAULT_DOWN_MS })
        break
      case 'reconnect-burst':
        events.push({ kind: name, percent, atMs })
        break
      default: {
        const never: never = name
        throw new Error(`unhandled chaos event ${String(never)}`)
      }
    }
  }
  return events
}

function offset(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}

/** An event written as in a spec; `parseChaosSpec(formatChaosEvent(e))` gives `[e]` back. */
export function formatChaosEvent(event: ChaosEvent): string {
  switch (event.kind) {
    case 'partition':
      return `partition=${event.percent}%@${offset(event.atMs)}+${offset(event.forMs)}`
    case 'hub-kill':
      return `hub-kill@${offset(event.atMs)}+${offset(event.downMs)}`
    case 'agent-crash':
      return `agent-crash=${event.percent}%@${offset(event.atMs)}+${offset(event.downMs)}`
    case 'reconnect-burst':
      return `reconnect-burst=${event.percent}%@${offset(event.atMs)}`
    default: {
      const never: never = event
      throw new Error(`unhandled chaos event ${JSON.stringify(never)}`)
    }
  }
}

/** How long the event holds what it acts on (0 for an instant). */
function lengthOf(event: ChaosEvent): number {
  switch (event.kind) {
    case 'partition': return event.forMs
    case 'hub-kill': return event.downMs
    case 'agent-crash': return event.downMs
    case 'reconnect-burst': return 0
  }
}

function scheduleError(message: string, event: string): RollcallError {
  return new RollcallError('BAD_REQUEST', `chaos: ${message}`, { event, example: CHAOS_EXAMPLE })
}

/** Devices a share stands for: rounded, and at least one (an event that touches nobody is surely a mistake). */
export function shareCount(percent: number, fleetSize: number): number {
  return Math.min(fleetSize, Math.max(1, Math.round((percent / 100) * fleetSize)))
}

/** Ties at one instant: what ends goes before what begins, so a device freed at t can be taken again at t. */
const ORDER_AT_SAME_TIME: Record<ChaosActionKind, number> = {
  restore: 0, 'hub-start': 0, 'agent-start': 0, cut: 1, 'hub-kill': 1, 'agent-crash': 1, drop: 2,
}

/**
 * The concrete schedule: each event's actions at their offsets, with devices
 * chosen by seed (a seeded partial shuffle per event, named by its place in the
 * spec, so the same seed and spec always pick the same devices).
 *
 * Rules, each refused with a message that says what to change:
 * - every event starts and ends within the run (`durationMs`);
 * - two hub kills do not overlap (the hub cannot be killed while it is down).
 * Partitions and agent crashes that overlap in time pick from the devices the
 * earlier one does not hold, so one device is never cut or crashed twice at
 * once and every `restore`/`agent-start` undoes exactly its own `cut`/`crash`.
 */
export function chaosSchedule(events: readonly ChaosEvent[], seed: number, deviceIds: readonly string[], durationMs: number): ChaosAction[] {
  const indexed = events.map((event, index) => ({ event, index, text: formatChaosEvent(event) }))
  for (const { event, text } of indexed) {
    const endMs = event.atMs + lengthOf(event)
    if (event.atMs >= durationMs) {
      throw scheduleError(`${text} starts at ${formatDurationMs(event.atMs)}, not before the end of the run (${formatDurationMs(durationMs)}); move it earlier or lengthen --duration`, text)
    }
    if (endMs > durationMs) {
      throw scheduleError(`${text} ends at ${formatDurationMs(endMs)}, after the end of the run (${formatDurationMs(durationMs)}); shorten it, move it earlier or lengthen --duration`, text)
    }
    if (event.kind !== 'hub-kill' && deviceIds.length === 0) throw scheduleError(`${text} needs devices, and the fleet is empty`, text)
  }
  const kills = indexed.filter((e) => e.event.kind === 'hub-kill').sort((a, b) => a.event.atMs - b.event.atMs)
  for (let i = 1; i < kills.length; i++) {
    const prev = kills[i - 1]!
    const next = kills[i]!
    if (next.event.atMs < prev.event.atMs + lengthOf(prev.event)) {
      throw scheduleError(`${next.text} kills the hub while ${prev.text} has it down; space them out`, next.text)
    }
  }

  const fleetOrder = new Map(deviceIds.map((id, i) => [id, i]))
  const byFleetOrder = (a: string, b: string) => fleetOrder.get(a)! - fleetOrder.get(b)!
  /** Windows already decided, per kind that holds devices: [from, to) and who. */
  const held: Record<'partition' | 'agent-crash', Array<{ fromMs: number; toMs: number; devices: ReadonlySet<string> }>> = { partition: [], 'agent-crash': [] }
  const actions: Array<ChaosAction & { seq: number }> = []
  let seq = 0
  const push = (atMs: number, action: ChaosActionKind, event: string, devices?: readonly string[]) => {
    actions.push(devices ? { atMs, action, devices, event, seq: seq++ } : { atMs, action, event, seq: seq++ })
  }

  const chronological = [...indexed].sort((a, b) => a.event.atMs - b.event.atMs || a.index - b.index)
  for (const { event, index, text } of chronological) {
    if (event.kind === 'hub-kill') {
      push(event.atMs, 'hub-kill', text)
      push(event.atMs + event.downMs, 'hub-start', text)
      continue
    }
    const windows = event.kind === 'reconnect-burst' ? [] : held[event.kind]
    const busy = new Set<string>()
    for (const w of windows) if (w.fromMs <= event.atMs && event.atMs < w.toMs) for (const d of w.devices) busy.add(d)
    const pool = deviceIds.filter((d) => !busy.has(d))
    const count = Math.min(pool.length, shareCount(event.percent, deviceIds.length))
    const random = streamFor(seed, 'chaos', index, event.kind)
    for (let i = 0; i < count; i++) {
      const j = i + Math.floor(random() * (pool.length - i))
      const chosen = pool[j]!
      pool[j] = pool[i]!
      pool[i] = chosen
    }
    const devices = pool.slice(0, count).sort(byFleetOrder)
    switch (event.kind) {
      case 'partition':
        windows.push({ fromMs: event.atMs, toMs: event.atMs + event.forMs, devices: new Set(devices) })
        push(event.atMs, 'cut', text, devices)
        push(event.atMs + event.forMs, 'restore', text, devices)
        break
      case 'agent-crash':
        windows.push({ fromMs: event.atMs, toMs: event.atMs + event.downMs, devices: new Set(devices) })
        push(event.atMs, 'agent-crash', text, devices)
        push(event.atMs + event.downMs, 'agent-start', text, devices)
        break
      case 'reconnect-burst':
        push(event.atMs, 'drop', text, devices)
        break
    }
  }
  actions.sort((a, b) => a.atMs - b.atMs || ORDER_AT_SAME_TIME[a.action] - ORDER_AT_SAME_TIME[b.action] || a.seq - b.seq)
  return actions.map(({ seq: _seq, ...action }) => action)
}

/** A short, stable digest of a schedule (times, actions, every device), to compare runs at a glance. */
export function scheduleFingerprint(schedule: readonly ChaosAction[]): string {
  let h = 0
  for (const a of schedule) {
    h = deriveSeed(h, a.atMs, a.action)
    for (const d of a.devices ?? []) h = deriveSeed(h, d)
  }
  return h.toString(16).padStart(8, '0')
}

export interface FormatScheduleOptions {
  /** Device ids listed per action before "… and N more"; default 12. The fingerprint covers them all. */
  readonly maxDevices?: number
}

/**
 * The schedule as lines to print before a run:
 *
 *   chaos schedule: 4 actions, fingerprint 1a2b3c4d
 *     10.000s  cut          15 devices  sim-0001 sim-0007 …  (partition=30%@10s+15s)
 */
export function formatSchedule(schedule: readonly ChaosAction[], options: FormatScheduleOptions = {}): string[] {
  const max = options.maxDevices ?? 12
  if (schedule.length === 0) return ['chaos schedule: none']
  const lines = [`chaos schedule: ${schedule.length} action${schedule.length === 1 ? '' : 's'}, fingerprint ${scheduleFingerprint(schedule)}`]
  const width = Math.max(...schedule.map((a) => (a.atMs / 1000).toFixed(3).length))
  for (const a of schedule) {
    const at = `${(a.atMs / 1000).toFixed(3).padStart(width)}s`
    let who = ''
    if (a.devices) {
      const listed = a.devices.slice(0, max).join(' ')
      const more = a.devices.length > max ? ` … and ${a.devices.length - max} more` : ''
      who = `${String(a.devices.length).padStart(5)} device${a.devices.length === 1 ? ' ' : 's'}  ${listed}${more}`
    }
    lines.push(`  ${at}  ${a.action.padEnd(11)}  ${who}${who ? '  ' : ''}(${a.event})`)
  }
  return lines
}
