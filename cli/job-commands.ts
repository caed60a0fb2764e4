import { InvalidArgumentError } from './commander.js'
import { resolveAdminTarget } from './admin-config.js'
import { call } from './http.js'
import { hint } from './invocation.js'
import { ago, clip, localTime, out, printJson, table } from './output.js'
import { choiceFlag, durationFlag, intFlag, jsonFlag, percentFlag, rateFlag } from './parse.js'
import { formatDurationMs } from '../common/duration.js'
import { EXEC_STATES } from '../hub/jobs/decisions.js'
import { JOB_STATUSES, type JobView } from '../hub/jobs/store.js'
import type { ExecutionDetail, JobDetail } from '../hub/jobs/jobs.js'
import type { ScheduleView } from '../hub/jobs/schedules.js'
import type { AdminOpts } from './main.js'

/**
 * `rollcall job ...` and `rollcall schedule ...` (issue #3), over the hub's
 * HTTP API like the other admin commands. Flags are checked here first, so a
 * mistake names the flag; the values go to the hub as written, and the hub
 * parses them again with the same parsers.
 */

/** The job flags shared by `job create` and `schedule add`, as commander hands them over. */
export interface JobFlags {
  target: string
  payload?: string
  priority?: string
  maxAttempts?: string
  timeout?: string
  expiresIn?: string
  expiresAt?: string
  backoff?: string
  backoffMax?: string
  rate?: string
  abortAfter?: string
  abortAt?: string
  continuous: boolean
}

// ---- output ----

const enc = encodeURIComponent

// ---- summaries ----

type Counts = JobView['counts']

/** Non-queued states worth a word in a summary, in the order people read them. */
const SUMMARY_STATES = [['in_progress', 'running'], ['failed', 'failed'], ['timed_out', 'timed out'], ['rejected', 'rejected'], ['canceled', 'canceled'], ['expired', 'expired']] as const

/** "12/20 succeeded, 1 failed, 2 running" */
export function countsSummary(c: Counts): string {
  const total = Object.values(c).reduce((a, b) => a + b, 0)
  if (total === 0) return 'no executions yet'
  const parts = [`${c.succeeded}/${total} succeeded`]
  for (const [state, word] of SUMMARY_STATES) if (c[state] > 0) parts.push(`${c[state]} ${word}`)
  return parts.join(', ')
}

function countsLine(c: Counts): string {
  const parts = EXEC_STATES.filter((s) => c[s] > 0).map((s) => `${c[s]} ${s}`)
  return parts.length > 0 ? parts.join(', ') : 'no executions yet'
}

function optionsLine(j: Pick<JobView, 'priority' | 'timeoutMs' | 'maxAttempts' | 'backoffBaseMs' | 'backoffMaxMs' | 'ratePerMinute' | 'abort'>): string {
  const parts = [
    `priority ${j.priority}`, `timeout ${formatDurationMs(j.timeoutMs)}`,
    `${j.maxAttempts} attempt${j.maxAttempts === 1 ? '' : 's'}`, `backoff ${formatDurationMs(j.backoffBaseMs)} to ${formatDurationMs(j.backoffMaxMs)}`,
  ]
  if (j.ratePerMinute !== null) parts.push(`rate ${Number(j.ratePerMinute.toFixed(3))}/min`)
  if (j.abort) parts.push(`abort at ${j.abort.atPercent}% failed after ${j.abort.afterFinished} finished`)
  return parts.join(', ')
}

/** Executions' errors, one entry per distinct code and message, in table order. */
export function errorGroups(executions: ReadonlyArray<{ deviceId: string; error: { code: string; message: string } | null }>): Array<{ code: string; message: string; devices: string[] }> {
  const groups = new Map<string, { code: string; message: string; devices: string[] }>()
  for (const e of executions) {
    if (!e.error) continue
    const key = `${e.error.code}\n${e.error.message}`
    const g = groups.get(key) ?? { code: e.error.code, message: e.error.message, devices: [] }
    g.devices.push(e.deviceId)
    groups.set(key, g)
  }
  return [...groups.values()]
}

/** "demo-01", "demo-01 and demo-02", "demo-01, demo-02, demo-03 and 20 more" */
function devicesLine(devices: readonly string[]): string {
  if (devices.length === 1) return devices[0]!
  if (devices.length <= 3) return `${devices.slice(0, -1).join(', ')} and ${devices[devices.length - 1]!}`
  return `${devices.slice(0, 3).join(', ')} and ${devices.length - 3} more`
}

// ---- flags to a request body ----

/** The API's job fields from the flags; each flag is checked so a mistake names it. */
function jobBody(name: string, o: JobFlags): Record<string, unknown> {
  const body: Record<string, unknown> = { name, target: o.target }
  if (o.payload !== undefined) body.payload = jsonFlag('payload', o.payload)
  body.priority = intFlag('priority', o.priority, -1000, 1000)
  body.maxAttempts = intFlag('max-attempts', o.maxAttempts, 1, 100)
  const checked = (field: string, value: string | undefined, check: (v: string | undefined) => unknown) => {
    if (value === undefined) return
    check(value)
    body[field] = value
  }
  checked('timeout', o.timeout, (v) => durationFlag('timeout', v))
  checked('expiresIn', o.expiresIn, (v) => durationFlag('expires-in', v))
  checked('expiresAt', o.expiresAt, () => undefined) // the hub says what a time looks like
  checked('backoffBase', o.backoff, (v) => durationFlag('backoff', v, 0))
  checked('backoffMax', o.backoffMax, (v) => durationFlag('backoff-max', v, 0))
  checked('rate', o.rate, (v) => rateFlag('rate', v))
  if ((o.abortAfter === undefined) !== (o.abortAt === undefined)) {
    throw new InvalidArgumentError('--abort-after and --abort-at go together: abort once that many executions finished and that share of them failed, e.g. --abort-after 10 --abort-at 20%')
  }
  body.abortAfter = intFlag('abort-after', o.abortAfter, 1, 1_000_000)
  checked('abortAt', o.abortAt, (v) => percentFlag('abort-at', v))
  if (o.continuous) body.continuous = true
  return body
}

export const jobCommands = {
  async jobCreate(name: string, opts: AdminOpts & JobFlags) {
    const body = jobBody(name, opts)
    const j = await call<JobView>(resolveAdminTarget(opts), 'POST', '/api/jobs', body)
    if (opts.json) return printJson(j)
    const n = j.counts.queued
    out(`job ${j.id} created: ${n} execution${n === 1 ? '' : 's'} queued${j.continuous ? '; devices that join later get one too' : ''}`)
    out(`follow it: ${hint(opts, 'job', 'show', j.id)}`)
  },

  async jobList(opts: AdminOpts & { status?: string; limit: string }) {
    const q = new URLSearchParams({ limit: String(intFlag('limit', opts.limit, 1, 1000)) })
    const status = choiceFlag('status', opts.status, JOB_STATUSES)
    if (status) q.set('status', status)
    const r = await call<{ jobs: JobView[] }>(resolveAdminTarget(opts), 'GET', `/api/jobs?${q.toString()}`)
    if (opts.json) return printJson(r)
    if (r.jobs.length === 0) return out(status ? `no ${status} jobs` : `no jobs; create one with: ${hint(opts, 'job', 'create', 'NAME', '--target', 'all')}`)
    out(table([['ID', 'NAME', 'STATUS', 'TARGET', 'EXECUTIONS', 'CREATED'], ...r.jobs.map((j) => [
      j.id, j.name, j.status, clip(j.target, 40), countsSummary(j.counts), ago(j.createdAt),
    ])]))
  },

  async jobShow(id: string, opts: AdminOpts & { state?: string; limit: string }) {
    const q = new URLSearchParams({ limit: String(intFlag('limit', opts.limit, 1, 10_000)) })
    const state = choiceFlag('state', opts.state, EXEC_STATES)
    if (state) q.set('state', state)
    const j = await call<JobDetail & { truncated: boolean }>(resolveAdminTarget(opts), 'GET', `/api/jobs/${enc(id)}?${q.toString()}`)
    if (opts.json) return printJson(j)
    out(`job       ${j.id}  ${j.name}`)
    out(`status    ${j.status}${j.statusReason ? ` (${j.statusReason})` : ''}${j.finishedAt !== null ? ` at ${localTime(j.finishedAt)}` : ''}`)
    out(`target    ${j.target}${j.continuous ? ' (continuous: devices that join later get it too)' : ''}`)
    out(`created   ${localTime(j.createdAt)} (${ago(j.createdAt)})${j.scheduleId !== null ? ` by schedule ${j.scheduleId}` : ''}`)
    if (j.expiresAt !== null) out(`expires   ${localTime(j.expiresAt)}`)
    out(`payload   ${j.payload === null || j.payload === undefined ? '(none)' : clip(JSON.stringify(j.payload), 200)}`)
    out(`options   ${optionsLine(j)}`)
    out(`counts    ${countsLine(j.counts)}`)
    if (j.executions.length === 0) return out(state ? `no ${state} executions` : 'no executions')
    out('')
    out(table([['DEVICE', 'STATE', 'ATTEMPT', 'STARTED', 'FINISHED', 'ERROR'], ...j.executions.map((e) => [
      e.deviceId, e.state, String(e.attempt), localTime(e.startedAt), localTime(e.finishedAt), e.error?.code ?? '-',
    ])]))
    // The ERROR column has room for a code only; what to do about it is in the message (issue #11).
    const errors = errorGroups(j.executions)
    if (errors.length > 0) {
      out('')
      out('errors')
      for (const g of errors) out(`  ${g.code} on ${devicesLine(g.devices)}: ${clip(g.message, 500)}`)
    }
    if (j.truncated) process.stderr.write(`(only the first ${j.executions.length} executions; narrow with --state or raise --limit)\n`)
  },

  async jobCancel(id: string, opts: AdminOpts & { reason?: string }) {
    const j = await call<JobView>(resolveAdminTarget(opts), 'POST', `/api/jobs/${enc(id)}/cancel`, opts.reason === undefined ? undefined : { reason: opts.reason })
    if (opts.json) return printJson(j)
    out(`job ${j.id} canceled (${j.statusReason ?? 'no reason given'}); executions: ${countsLine(j.counts)}`)
  },

  async jobExecution(execId: string, opts: AdminOpts) {
    const e = await call<ExecutionDetail>(resolveAdminTarget(opts), 'GET', `/api/executions/${enc(execId)}`)
    if (opts.json) return printJson(e)
    out(`execution ${e.execId}`)
    out(`job       ${e.jobId}`)
    out(`device    ${e.deviceId}`)
    out(`state     ${e.state}  (attempt ${e.attempt}, version ${e.version})`)
    if (e.state === 'queued' && e.runAfter > Date.now()) out(`retry at  ${localTime(e.runAfter)}`)
    out(`delivered ${localTime(e.deliveredAt)}   started ${localTime(e.startedAt)}   finished ${localTime(e.finishedAt)}`)
    if (e.error) out(`error     ${e.error.code}: ${e.error.message}`)
    if (e.result !== null) out(`result    ${clip(JSON.stringify(e.result), 500)}`)
    out('')
    out(table([['TIME', 'VERSION', 'ATTEMPT', 'STATE', 'BY', 'DETAIL'], ...e.history.map((h) => [
      localTime(h.at), String(h.version), String(h.attempt), h.state, h.source, h.detail ?? '',
    ])]))
  },

  async scheduleAdd(name: string, opts: AdminOpts & JobFlags & { cron: string; timezone?: string; job: string }) {
    const body = { name, cron: opts.cron, ...(opts.timezone !== undefined ? { timezone: opts.timezone } : {}), job: jobBody(opts.job, opts) }
    const s = await call<ScheduleView>(resolveAdminTarget(opts), 'POST', '/api/schedules', body)
    if (opts.json) return printJson(s)
    out(`schedule ${s.name} added: "${s.cron}"${s.timezone ? ` (${s.timezone})` : ''} creates job ${s.job.name} for ${s.job.target}`)
    out(`next run ${localTime(s.nextRunAt)}`)
  },

  async scheduleList(opts: AdminOpts) {
    const r = await call<{ schedules: ScheduleView[] }>(resolveAdminTarget(opts), 'GET', '/api/schedules')
    if (opts.json) return printJson(r)
    if (r.schedules.length === 0) return out(`no schedules; add one with: ${hint(opts, 'schedule', 'add', 'NAME', '--cron', '0 3 * * *', '--job', 'TASK', '--target', 'all')}`)
    out(table([['ID', 'NAME', 'CRON', 'TIMEZONE', 'JOB', 'TARGET', 'NEXT RUN'], ...r.schedules.map((s) => [
      String(s.id), s.name, s.cron, s.timezone ?? 'local', s.job.name, clip(s.job.target, 40), localTime(s.nextRunAt),
    ])]))
  },

  async scheduleRemove(name: string, opts: AdminOpts) {
    await call(resolveAdminTarget(opts), 'DELETE', `/api/schedules/${enc(name)}`)
    if (opts.json) return printJson({ removed: name })
    out(`schedule ${name} removed; jobs it created are not touched`)
  },
}
