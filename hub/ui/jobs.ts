import { api, ApiError, hubClock, openLive } from './api.js'
import { fill, h, json, outcome, pill, span, td, timeEl, type View } from './dom.js'

/**
 * The jobs page: the newest jobs with their executions counted by state, a
 * progress bar of the rollout, and a cancel button for active ones, kept live
 * by the feed's `jobs` topic. A job's own page lists its executions.
 */

const STATES = ['queued', 'in_progress', 'succeeded', 'failed', 'timed_out', 'rejected', 'canceled', 'expired'] as const
type Counts = Partial<Record<(typeof STATES)[number], number>>

interface Job {
  readonly id: string; readonly name: string; readonly target: string; readonly status: string; readonly statusReason: string | null
  readonly createdAt: number; readonly finishedAt: number | null; readonly ratePerMinute: number | null; readonly continuous: boolean; readonly counts: Counts
}
interface Execution { readonly execId: string; readonly deviceId: string; readonly state: string; readonly attempt: number; readonly updatedAt: number; readonly result: unknown; readonly error: { code: string; message: string } | null }

function total(c: Counts): number {
  return STATES.reduce((n, s) => n + (c[s] ?? 0), 0)
}

/** A stacked bar of the executions by state, with the share finished as text. */
function progress(c: Counts): HTMLElement {
  const all = total(c)
  const open = (c.queued ?? 0) + (c.in_progress ?? 0)
  const bar = h('div', { class: 'bar', role: 'img', 'aria-label': STATES.filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(', ') || 'no executions' })
  for (const s of STATES) {
    const n = c[s] ?? 0
    if (n > 0) bar.appendChild(h('span', { class: `bar-${s}`, style: `width:${(n / all) * 100}%`, title: `${n} ${s}` }))
  }
  return h('div', { class: 'progress' }, bar,
    h('span', { class: 'muted' }, all === 0 ? 'no executions yet' : `${all - open}/${all} finished`),
    h('span', { class: 'state-counts' }, ...STATES.filter((s) => c[s]).map((s) => h('span', { class: `count count-${s}`, 'data-state': s }, `${s.replace('_', ' ')} ${c[s]}`))))
}

export function jobsView(): View {
  const list = h('div', { class: 'jobs', id: 'jobs-list' }, h('p', { class: 'muted' }, 'Loading jobs…'))
  const streamState = h('span', { class: 'stream-state' }, 'connecting')
  const message = h('p', { class: 'error', role: 'alert', hidden: true })
  const el = h('section', {}, h('div', { class: 'toolbar' }, h('h1', {}, 'Jobs'), streamState), message, list)

  function render(jobs: readonly Job[]): void {
    const now = hubClock.now()
    fill(list, jobs.length === 0 ? h('p', { class: 'muted' }, 'No jobs yet. Create one with: npx rollcall job create echo --target all') : null,
      ...jobs.map((j) => h('article', { class: `job ${j.status}`, 'data-job': j.id },
        h('div', { class: 'job-head' },
          h('a', { href: `#/jobs/${encodeURIComponent(j.id)}`, class: 'job-name' }, j.name),
          pill(j.status), h('span', { class: 'muted' }, `${j.id} → ${j.target.length > 60 ? `${j.target.slice(0, 60)}…` : j.target}`),
          j.status === 'active' ? h('button', { type: 'button', class: 'danger', 'data-cancel': j.id, onclick: () => { void cancel(j) } }, 'Cancel') : null),
        progress(j.counts),
        h('div', { class: 'muted small' }, 'created ', timeEl(j.createdAt), ` (${span(now - j.createdAt)} ago)`,
          j.ratePerMinute ? ` · paced at ${j.ratePerMinute}/min` : '', j.continuous ? ' · continuous' : '',
          j.finishedAt ? h('span', {}, ' · ended ', timeEl(j.finishedAt)) : '', j.statusReason ? ` · ${j.statusReason}` : ''))))
  }

  async function cancel(j: Job): Promise<void> {
    if (!confirm(`Cancel job ${j.name} (${j.id})? Queued executions are canceled, running ones are told to stop.`)) return
    try {
      await api('POST', `/api/jobs/${encodeURIComponent(j.id)}/cancel`, { reason: 'canceled from the dashboard' })
      message.hidden = true
    } catch (err) {
      message.hidden = false
      fill(message, err instanceof ApiError ? `Cancel failed: ${err.body.message}` : String(err))
    }
  }

  const stream = openLive('jobs', {
    jobs: (d) => {
      const { now, jobs } = d as { now: number; jobs: Job[] }
      hubClock.heard(now)
      render(jobs)
    },
    tick: (d) => { hubClock.heard((d as { now: number }).now) },
  }, (s) => { fill(streamState, s); streamState.className = `stream-state ${s === 'live' ? 'live' : 'down'}` })

  return { el, dispose() { stream.close() } }
}

export function jobView(id: string): View {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  // Live while the job is among the newest the feed carries; the button re-reads any job.
  const refreshButton = h('button', { type: 'button', onclick: () => { refresh() } }, 'Refresh')
  const el = h('section', {}, h('div', { class: 'toolbar' }, h('a', { href: '#/jobs', class: 'back' }, '← Jobs'), h('h1', {}, `Job ${id}`), refreshButton), body)
  let disposed = false
  let loading = false
  let again = false

  async function load(): Promise<void> {
    const j = await api<Job & { payload: unknown; executions: Execution[]; truncated: boolean }>('GET', `/api/jobs/${encodeURIComponent(id)}?limit=500`)
    if (disposed) return
    fill(body,
      h('div', { class: 'panel' }, h('div', { class: 'job-head' }, h('strong', {}, j.name), pill(j.status), h('span', { class: 'muted' }, `target ${j.target}`)),
        progress(j.counts), j.payload === null || j.payload === undefined ? null : h('p', { class: 'muted small' }, `payload ${json(j.payload)}`)),
      h('div', { class: 'panel' }, h('h2', {}, 'Executions'), h('div', { class: 'scroll-x' }, h('table', { class: 'list', id: 'job-executions' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'State'), h('th', {}, 'Updated'), h('th', {}, 'Result'))),
        h('tbody', {}, ...j.executions.map((x) => h('tr', { 'data-exec': x.execId },
          td('Device', 'nowrap', h('a', { href: `#/devices/${encodeURIComponent(x.deviceId)}` }, x.deviceId)),
          td('State', null, pill(x.state), x.attempt > 1 ? ` attempt ${x.attempt}` : ''),
          td('Updated', 'nowrap', timeEl(x.updatedAt)),
          td('Result', 'c-json muted', outcome(x.result, x.error))))))),
      j.truncated ? h('p', { class: 'muted' }, 'The first 500 executions are shown; see the API for the rest.') : null))
  }

  /** One read at a time; a change announced during a read triggers one more. */
  function refresh(): void {
    if (loading) {
      again = true
      return
    }
    loading = true
    void load().catch((err: unknown) => fill(body, h('p', { class: 'error' }, err instanceof ApiError ? err.body.message : String(err)))).finally(() => {
      loading = false
      if (again && !disposed) {
        again = false
        refresh()
      }
    })
  }

  // The executions are re-read when the feed says this job's counts changed, not on a timer.
  let lastCounts = ''
  const stream = openLive('jobs', {
    jobs: (d) => {
      const job = (d as { jobs: Job[] }).jobs.find((j) => j.id === id)
      const counts = job ? JSON.stringify([job.status, job.counts]) : ''
      if (counts !== lastCounts) {
        lastCounts = counts
        refresh()
      }
    },
  })
  refresh()
  return { el, dispose() { disposed = true; stream.close() } }
}
