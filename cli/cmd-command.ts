import { InvalidArgumentError } from './commander.js'
import { resolveAdminTarget } from './admin-config.js'
import { ApiError, call } from './http.js'
import { hint, type HubFlags } from './invocation.js'
import { ago, clip, localTime, localTimeMs, out, printJson, table } from './output.js'
import { choiceFlag, durationFlag, intFlag, jsonFlag } from './parse.js'
import { LIMITS } from '../protocol/limits.js'
import type { CommandRecord } from '../hub/commands/store.js'
import type { CommandOutcome, GroupResult, QueuedCommand } from '../hub/commands/commands.js'
import type { AdminOpts } from './main.js'

/**
 * `rollcall cmd ...` (issue #4): a command pushed to devices now, over the
 * hub's HTTP API like the other admin commands.
 *
 * The exit code is the answer a script needs:
 *   0  it ran, and succeeded: the device's ok:true, or for a group every
 *      member was reached and every one succeeded
 *   1  anything else: the device's error (its code on stderr), the hub's
 *      DEVICE_OFFLINE / COMMAND_TIMEOUT / DEVICE_DISCONNECTED, a member that
 *      failed or was skipped as offline, a usage error
 *   2  a usage error (cli/main.ts)
 *   3  nothing failed, but it did not run yet: with --if-offline queue the
 *      device (or some members) were offline, and it became a job
 */

export interface CmdFlags {
  args?: string
  timeout?: string
  ifOffline?: string
}

/** Not 2, which is a usage error as for every rollcall command (issue #11). */
export const EXIT_QUEUED = 3

const enc = encodeURIComponent

/** Device ids cannot hold ':', so a target with one, or `all`, names several devices. */
export function isGroupTarget(target: string): boolean {
  return target === 'all' || target.includes(':')
}

// ---- output ----

/** With milliseconds: a command's steps are milliseconds apart. */
const time = localTimeMs

/** "0.8 ms", "12 ms", "1.2 s" */
function ms(n: number | null): string {
  if (n === null) return '-'
  if (n < 10) return `${n.toFixed(1)} ms`
  if (n < 1000) return `${Math.round(n)} ms`
  return `${(n / 1000).toFixed(1)} s`
}

function resultOrError(o: { result?: unknown; error?: { code: string; message: string } | null }): string {
  if (o.error) return `${o.error.code}: ${clip(o.error.message, 80)}`
  return clip(JSON.stringify(o.result ?? null), 80)
}

function recordDuration(r: CommandRecord): number | null {
  return r.sentAt !== null && r.finishedAt !== null ? r.finishedAt - r.sentAt : null
}

/**
 * The hub's message, in the terminal's words (issue #11): DEVICE_OFFLINE names
 * the flag, not the API's ifOffline field, and says when in local time.
 */
function cliMessage(deviceId: string, err: ApiError): string {
  const lastSeen = err.details.lastSeen
  if (err.code !== 'DEVICE_OFFLINE' || !(lastSeen === null || typeof lastSeen === 'number')) return err.message
  const when = lastSeen === null ? 'it has never connected' : `last seen ${localTime(lastSeen)}, ${ago(lastSeen)}`
  return `device "${deviceId}" is not reachable now (${when}); retry later, or add --if-offline queue to run it as a job when it is back`
}

// ---- flags to a request body ----

function commandBody(name: string, o: CmdFlags): { body: Record<string, unknown>; waitMs: number } {
  const body: Record<string, unknown> = { name }
  if (o.args !== undefined) body.args = jsonFlag('args', o.args)
  const timeoutMs = durationFlag('timeout', o.timeout)
  if (timeoutMs !== undefined) {
    if (timeoutMs > LIMITS.maxCommandTimeoutMs) {
      throw new InvalidArgumentError(`--timeout must be at most ${LIMITS.maxCommandTimeoutMs / 60_000}m, got "${o.timeout}": a command is for now; for work that may take longer, create a job (rollcall job create)`)
    }
    body.timeout = o.timeout
  }
  const ifOffline = choiceFlag('if-offline', o.ifOffline, ['fail', 'queue'] as const)
  if (ifOffline) body.ifOffline = ifOffline
  // The hub answers at the deadline at the latest; wait for that, plus a margin.
  return { body, waitMs: (timeoutMs ?? LIMITS.maxCommandTimeoutMs) + 15_000 }
}

// ---- sending ----

type SingleReply = (CommandOutcome & { ok: boolean }) | QueuedCommand

async function sendOne(deviceId: string, name: string, opts: AdminOpts & CmdFlags): Promise<void> {
  const { body, waitMs } = commandBody(name, opts)
  let r: SingleReply
  try {
    r = await call<SingleReply>(resolveAdminTarget(opts), 'POST', `/api/devices/${enc(deviceId)}/commands`, body, waitMs)
  } catch (err) {
    // A timed-out or cut-off command was sent and recorded: say where to look.
    if (err instanceof ApiError && typeof err.details.id === 'string') {
      throw new ApiError(err.code, `${cliMessage(deviceId, err)} (command ${err.details.id}: ${hint(opts, 'cmd', 'show', err.details.id)})`, err.details, err.status)
    }
    throw err
  }
  if (opts.json) printJson(r)
  switch (r.status) {
    case 'queued':
      if (!opts.json) out(`queued as job ${r.jobId}: it runs when ${r.deviceId} is back (follow it: ${hint(opts, 'job', 'show', r.jobId)})`)
      process.exitCode = EXIT_QUEUED
      return
    case 'succeeded':
      if (!opts.json) printJson(r.result)
      return
    case 'failed':
    case 'timed_out':
    case 'disconnected':
      throw new ApiError(r.error.code, `${r.error.message} (command ${r.id} on ${r.deviceId})`)
    default: {
      const never: never = r
      return never
    }
  }
}

/** Why a group command is not a success, in one line; undefined when it is. */
export function groupShortfall(g: Pick<GroupResult, 'counts' | 'outcomes' | 'jobId'>): { code: string; message: string } | undefined {
  const c = g.counts
  const notOk = c.failed + c.timed_out + c.disconnected
  if (notOk === 0 && c.skipped === 0) return undefined
  const parts: string[] = []
  if (c.failed > 0) parts.push(`${c.failed} failed`)
  if (c.timed_out > 0) parts.push(`${c.timed_out} timed out`)
  if (c.disconnected > 0) parts.push(`${c.disconnected} disconnected`)
  if (c.skipped > 0) parts.push(`${c.skipped} ${g.jobId ? 'offline, queued as a job' : 'skipped as offline'}`)
  // One code when every member that did not succeed ended the same way: a script can match it.
  const codes = new Set(g.outcomes.filter((o) => o.status !== 'succeeded').map((o) => 'error' in o ? o.error.code : ''))
  if (c.skipped > 0) codes.add(g.jobId ? 'QUEUED' : 'DEVICE_OFFLINE')
  const code = codes.size === 1 ? [...codes][0]! : 'PARTIAL_FAILURE'
  return { code, message: `${c.succeeded} of ${g.outcomes.length + c.skipped} succeeded; ${parts.join(', ')}` }
}

async function sendGroup(target: string, name: string, opts: AdminOpts & CmdFlags): Promise<void> {
  const { body, waitMs } = commandBody(name, opts)
  const g = await call<GroupResult>(resolveAdminTarget(opts), 'POST', '/api/commands', { target, ...body }, waitMs)
  const shortfall = groupShortfall(g)
  if (opts.json) {
    printJson(g)
  } else {
    const rows = [...g.outcomes].sort((a, b) => a.deviceId.localeCompare(b.deviceId))
    if (rows.length > 0) {
      out(table([['DEVICE', 'STATUS', 'DURATION', 'RESULT / ERROR'], ...rows.map((o) => [o.deviceId, o.status, ms(o.durationMs), resultOrError(o)])]))
    }
    if (g.skipped.length > 0) {
      const names = g.skipped.map((s) => s.deviceId)
      const list = `${names.slice(0, 20).join(', ')}${names.length > 20 ? `, … (${names.length - 20} more)` : ''}`
      out(g.jobId
        ? `skipped ${names.length} offline, queued as job ${g.jobId} (they run it when back): ${list}`
        : `skipped ${names.length} offline: ${list}`)
    }
    out(`${g.counts.succeeded}/${g.outcomes.length + g.counts.skipped} succeeded in ${ms(g.durationMs)} (command ${g.id}: ${hint(opts, 'cmd', 'show', g.id)})`)
  }
  if (!shortfall) return
  // Queued members alone are not a failure: exit 2, as for one queued device.
  if (shortfall.code === 'QUEUED') {
    process.exitCode = EXIT_QUEUED
    return
  }
  throw new ApiError(shortfall.code, shortfall.message)
}

// ---- the record ----

function showRecord(r: CommandRecord, flags: HubFlags): void {
  out(`command   ${r.id}  ${r.name}`)
  out(`device    ${r.deviceId}${r.groupId ? `  (group command ${r.groupId})` : ''}`)
  out(`status    ${r.status}${recordDuration(r) !== null ? ` in ${ms(recordDuration(r))}` : ''}`)
  out(`created   ${time(r.createdAt)} (${ago(r.createdAt)})`)
  out(`expires   ${time(r.expiresAt)}`)
  out(`args      ${r.args === null ? '-' : clip(JSON.stringify(r.args), 200)}`)
  if (r.error) out(`error     ${r.error.code}: ${r.error.message}`)
  if (r.status === 'succeeded') out(`result    ${clip(JSON.stringify(r.result), 500)}`)
  if (r.jobId) out(`job       ${r.jobId} (${hint(flags, 'job', 'show', r.jobId)})`)
  if (r.late) out(`late      ${time(r.late.at)}: ${clip(JSON.stringify(r.late.response), 300)} (recorded, not acted on)`)
  out('')
  out(table([['TIME', 'EVENT'], ...r.timeline.map((e) => [time(e.at), e.event])]))
}

export const cmdCommands = {
  async send(target: string, name: string, opts: AdminOpts & CmdFlags) {
    if (isGroupTarget(target)) return sendGroup(target, name, opts)
    return sendOne(target, name, opts)
  },

  async show(id: string, opts: AdminOpts) {
    const r = await call<CommandRecord | { groupId: string; commands: CommandRecord[] }>(resolveAdminTarget(opts), 'GET', `/api/commands/${enc(id)}`)
    if (opts.json) return printJson(r)
    if (!('commands' in r)) return showRecord(r, opts)
    const first = r.commands[0]
    out(`group command ${r.groupId}${first ? `  ${first.name}, ${time(first.createdAt)} (${ago(first.createdAt)})` : ''}`)
    out('')
    out(table([['DEVICE', 'ID', 'STATUS', 'DURATION', 'RESULT / ERROR'], ...r.commands.map((c) => [
      c.deviceId, c.id, c.status, ms(recordDuration(c)), c.status === 'queued' ? `job ${c.jobId ?? '-'}` : resultOrError(c),
    ])]))
  },

  async list(deviceId: string, opts: AdminOpts & { limit: string }) {
    const limit = intFlag('limit', opts.limit, 1, 1000)!
    const r = await call<{ commands: CommandRecord[] }>(resolveAdminTarget(opts), 'GET', `/api/devices/${enc(deviceId)}/commands?limit=${limit}`)
    if (opts.json) return printJson(r)
    if (r.commands.length === 0) return out(`no commands for ${deviceId} yet; send one with: ${hint(opts, 'cmd', deviceId, 'ping')}`)
    out(table([['ID', 'NAME', 'STATUS', 'CREATED', 'DURATION', 'RESULT / ERROR'], ...r.commands.map((c) => [
      c.id, c.name, c.status, ago(c.createdAt), ms(recordDuration(c)), c.status === 'queued' ? `job ${c.jobId ?? '-'}` : resultOrError(c),
    ])]))
  },
}
