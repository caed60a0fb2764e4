import { api, ApiError, hubClock, openLive } from './api.js'
import { sensorChart, type SensorChart } from './charts.js'
import { ago, fill, h, outcome as outcomeText, pill, span, td, timeEl, when, type View } from './dom.js'
import type { FleetRow } from './fleet.js'
import { firingsTable, type Firing } from './rules.js'

/**
 * A device page: its presence and details (live), telemetry charts per
 * sensor over a chosen range (new samples appended as the hub stores them),
 * its presence timeline, recent commands and job executions, the rules that
 * fired for it, and a form to send a command and see the reply.
 */

interface Range { readonly label: string; readonly ms: number; readonly bucket?: string }
const RANGES: readonly Range[] = [
  { label: '15 min', ms: 15 * 60_000 },
  { label: '1 h', ms: 3_600_000, bucket: '10s' },
  { label: '6 h', ms: 6 * 3_600_000, bucket: '1m' },
  { label: '24 h', ms: 86_400_000, bucket: '5m' },
  { label: '7 d', ms: 7 * 86_400_000, bucket: '30m' },
]

const BUILTIN_COMMANDS = ['ping', 'sys.info', 'sensors.sample', 'config.get', 'jobs.pull']

/** The device's clock against the hub's, for the facts list. */
function skewLabel(ms: number | null): string {
  if (ms === null) return 'skew not reported'
  if (Math.abs(ms) <= 1000) return `in step with the hub (${ms >= 0 ? '+' : '−'}${Math.abs(ms)} ms)`
  return `${span(Math.abs(ms))} ${ms > 0 ? 'ahead of' : 'behind'} the hub`
}

interface DeviceDetail { readonly id: string; readonly group: string | null; readonly createdAt: number; readonly streams: ReadonlyArray<{ storeId: string; upTo: number; updatedAt: number }> }
interface Sample { readonly sensor: string; readonly ts: number; readonly seq: number; readonly value: number }
interface Bucket { readonly sensor: string; readonly ts: number; readonly avg: number }
interface HistoryEntry { readonly ts: number; readonly status: string; readonly reason: string }
interface CommandRecord { readonly id: string; readonly name: string; readonly status: string; readonly createdAt: number; readonly finishedAt: number | null; readonly result: unknown; readonly error: { code: string; message: string } | null }
interface Execution { readonly execId: string; readonly jobId: string; readonly jobName: string; readonly state: string; readonly attempt: number; readonly updatedAt: number; readonly error: { code: string; message: string } | null }

export function deviceView(id: string): View {
  let range: Range = RANGES[0]!
  let row: FleetRow | undefined
  /** Device clock minus hub clock at its last birth (issue #13), from the presence read; not on the live feed, where it would cost every fleet row. */
  let clockSkewMs: number | null = null
  const charts = new Map<string, SensorChart>()
  /** Sensor → unit, as the device declared them (sent with every telemetry read). */
  let units: Readonly<Record<string, string>> = {}
  let disposed = false

  const title = h('h1', {}, id)
  const facts = h('dl', { class: 'facts', id: 'device-facts' })
  const rangeSelect = h('select', { 'aria-label': 'Range', id: 'range' }, ...RANGES.map((r, i) => h('option', { value: String(i) }, r.label)))
  const chartsBox = h('div', { class: 'charts', id: 'charts' }, h('p', { class: 'muted' }, 'Loading telemetry…'))
  const timeline = h('div', { class: 'timeline', id: 'presence-timeline' })
  const transitions = h('ol', { class: 'transitions' })
  const commandsBox = h('div', { id: 'device-commands' })
  const execBox = h('div', { id: 'device-executions' })
  const firingsBox = h('div', { id: 'device-firings' })
  const streamState = h('span', { class: 'stream-state' }, 'connecting')

  const nameInput = h('input', { name: 'name', list: 'command-names', required: true, value: 'ping', 'aria-label': 'Command', autocomplete: 'off' })
  const argsInput = h('textarea', { name: 'args', rows: 2, placeholder: 'Arguments as JSON, e.g. {"sensor": "env.temp"} (optional)', 'aria-label': 'Arguments (JSON)' })
  const timeoutInput = h('select', { name: 'timeout', 'aria-label': 'Timeout' }, ...['2s', '5s', '10s', '30s'].map((t) => h('option', { value: t, selected: t === '5s' }, `${t} timeout`)))
  const queueInput = h('input', { type: 'checkbox', name: 'queue' })
  const queueLabel = h('label', { class: 'check' }, queueInput, ' if the device is offline, queue it as a job to run when it is back')
  const sendButton = h('button', { type: 'submit' }, 'Send')
  const outcome = h('div', { class: 'outcome', id: 'command-outcome', role: 'status', 'aria-live': 'polite' })
  const form = h('form', { class: 'command-form', id: 'command-form' },
    h('datalist', { id: 'command-names' }, ...BUILTIN_COMMANDS.map((c) => h('option', { value: c }))),
    nameInput, timeoutInput, argsInput, queueLabel, sendButton, outcome)

  const el = h('section', { class: 'device' },
    h('div', { class: 'toolbar' }, h('a', { href: '#/', class: 'back' }, '← Fleet'), title, streamState),
    facts,
    h('div', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', {}, 'Telemetry'), rangeSelect), chartsBox),
    h('div', { class: 'panel' }, h('h2', {}, 'Send a command'), form),
    h('div', { class: 'panel' }, h('h2', {}, 'Presence'), timeline, transitions),
    h('div', { class: 'grid2' },
      h('div', { class: 'panel' }, h('h2', {}, 'Recent commands'), commandsBox),
      h('div', { class: 'panel' }, h('h2', {}, 'Job executions'), execBox)),
    h('div', { class: 'panel' }, h('h2', {}, 'Rules that fired for this device'), firingsBox))

  function renderFacts(detail?: DeviceDetail): void {
    const now = hubClock.now()
    const r = row
    fill(facts,
      h('dt', {}, 'Presence'), h('dd', { id: 'device-presence', 'data-status': r?.status ?? 'offline' },
        h('span', { class: `dot ${r?.status ?? 'offline'}` }), r ? `${r.status} for ${r.since === null ? '—' : span(now - r.since)} (${r.reason})` : '—'),
      h('dt', {}, 'Last seen'), h('dd', {}, r ? ago(r.lastSeen, now) : '—'),
      h('dt', {}, 'Group'), h('dd', {}, r?.group ?? detail?.group ?? '—'),
      h('dt', {}, 'Backlog'), h('dd', {}, r?.backlog === null || r?.backlog === undefined ? 'not reported' : `${r.backlog} rows`),
      h('dt', {}, 'Agent'), h('dd', {}, r?.agentVersion ?? '—'),
      h('dt', {}, 'Clock'), h('dd', { id: 'device-clock', class: clockSkewMs !== null && Math.abs(clockSkewMs) > 1000 ? 'warn' : '' }, skewLabel(clockSkewMs)))
  }

  /** Samples pushed by the feed while a range is being read; merged when the read returns, so none fall in between. */
  let pending: Sample[] | undefined

  async function loadTelemetry(): Promise<void> {
    const r = range
    const q = new URLSearchParams({ since: `${Math.round(r.ms / 1000)}s`, limit: '20000' })
    if (r.bucket) q.set('bucket', r.bucket)
    pending = []
    try {
      const res = await api<{ samples?: Sample[]; buckets?: Bucket[]; truncated: boolean; units?: Record<string, string> }>('GET', `/api/devices/${encodeURIComponent(id)}/telemetry?${q}`)
      if (disposed || r !== range) return
      units = res.units ?? {}
      const points = new Map<string, { ts: number[]; values: number[] }>()
      for (const p of res.samples ?? res.buckets ?? []) {
        let s = points.get(p.sensor)
        if (!s) points.set(p.sensor, s = { ts: [], values: [] })
        s.ts.push(p.ts)
        s.values.push('avg' in p ? p.avg : p.value)
      }
      for (const c of charts.values()) c.dispose()
      charts.clear()
      const sensors = [...points.keys()].sort()
      fill(chartsBox, sensors.length === 0 ? h('p', { class: 'muted' }, `No samples in the last ${r.label}. New ones appear here as they are stored.`) : null)
      for (const sensor of sensors) {
        const c = chartFor(sensor)
        const s = points.get(sensor)!
        c.set(s.ts, s.values)
      }
      if (!r.bucket && res.samples) {
        const read = new Set(res.samples.map((x) => `${x.sensor}\0${x.seq}`))
        addSamples(pending.filter((x) => !read.has(`${x.sensor}\0${x.seq}`)))
      }
    } finally {
      if (r === range) pending = undefined
    }
  }

  /** Raw ranges take new samples as points; averaged ranges are re-read, at most every 10 s. */
  let rereadTimer: number | undefined
  function onSamples(samples: readonly Sample[]): void {
    if (pending) {
      pending.push(...samples)
    } else if (range.bucket) {
      rereadTimer ??= window.setTimeout(() => {
        rereadTimer = undefined
        void loadTelemetry().catch(showError)
      }, 10_000)
    } else {
      addSamples(samples)
    }
  }

  function addSamples(samples: readonly Sample[]): void {
    const from = hubClock.now() - range.ms
    const bySensor = new Map<string, Array<{ ts: number; value: number }>>()
    for (const s of samples) {
      let list = bySensor.get(s.sensor)
      if (!list) bySensor.set(s.sensor, list = [])
      list.push({ ts: s.ts, value: s.value })
    }
    for (const [sensor, points] of bySensor) chartFor(sensor).add(points, from)
  }

  function chartFor(sensor: string): SensorChart {
    let c = charts.get(sensor)
    if (!c) {
      if (charts.size === 0) chartsBox.replaceChildren()
      c = sensorChart(sensor, units[sensor], () => {
        const to = hubClock.now()
        return { from: to - range.ms, to }
      })
      charts.set(sensor, c)
      chartsBox.appendChild(c.el)
    }
    return c
  }

  async function loadPresence(): Promise<void> {
    const now = hubClock.now()
    const from = now - range.ms
    const res = await api<{ history: HistoryEntry[]; current: { clockSkewMs?: number | null } | null }>('GET', `/api/devices/${encodeURIComponent(id)}/presence?limit=500`)
    if (disposed) return
    clockSkewMs = res.current?.clockSkewMs ?? null
    renderFacts()
    // Oldest first; the state before the range is the newest entry before it.
    const entries = [...res.history].reverse()
    const before = entries.filter((e) => e.ts < from).pop()
    const inRange = entries.filter((e) => e.ts >= from)
    const segments: Array<{ from: number; to: number; status: string; reason: string }> = []
    let cur = before ? { at: from, status: before.status, reason: before.reason } : undefined
    for (const e of inRange) {
      if (cur) segments.push({ from: cur.at, to: e.ts, status: cur.status, reason: cur.reason })
      cur = { at: e.ts, status: e.status, reason: e.reason }
    }
    if (cur) segments.push({ from: cur.at, to: now, status: cur.status, reason: cur.reason })
    fill(timeline, ...segments.map((s) => h('span', {
      class: `seg ${s.status}`, title: `${s.status} (${s.reason}) ${when(s.from)} – ${when(s.to)}`,
      style: `left:${((s.from - from) / range.ms) * 100}%;width:${Math.max(0.3, ((s.to - s.from) / range.ms) * 100)}%`,
    })), h('span', { class: 'axis-l' }, `${range.label} ago`), h('span', { class: 'axis-r' }, 'now'))
    fill(transitions, ...res.history.slice(0, 8).map((e) => h('li', {}, h('span', { class: `dot ${e.status}` }), timeEl(e.ts), ` ${e.status}`, h('span', { class: 'muted' }, ` ${e.reason}`))))
    if (res.history.length === 0) fill(transitions, h('li', { class: 'muted' }, 'Never connected.'))
  }

  async function loadCommands(): Promise<void> {
    const res = await api<{ commands: CommandRecord[] }>('GET', `/api/devices/${encodeURIComponent(id)}/commands?limit=15`)
    if (disposed) return
    fill(commandsBox, res.commands.length === 0 ? h('p', { class: 'muted' }, 'No commands yet.') : h('div', { class: 'table-box' }, h('table', { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Command'), h('th', {}, 'Outcome'))),
      h('tbody', {}, ...res.commands.map((c) => h('tr', { 'data-command': c.id },
        td('When', 'nowrap', timeEl(c.createdAt)), td('Command', 'nowrap', c.name),
        td('Outcome', 'c-json', pill(c.status), ' ', h('span', { class: 'muted' }, outcomeText(c.result, c.error)))))))))
  }

  async function loadExecutions(): Promise<void> {
    const res = await api<{ executions: Execution[] }>('GET', `/api/devices/${encodeURIComponent(id)}/executions?limit=15`)
    if (disposed) return
    fill(execBox, res.executions.length === 0 ? h('p', { class: 'muted' }, 'No job executions yet.') : h('div', { class: 'table-box' }, h('table', { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Updated'), h('th', {}, 'Job'), h('th', {}, 'State'))),
      h('tbody', {}, ...res.executions.map((x) => h('tr', {},
        td('Updated', 'nowrap', timeEl(x.updatedAt)),
        td('Job', null, h('a', { href: `#/jobs/${encodeURIComponent(x.jobId)}`, class: 'nowrap' }, x.jobName), ' ', h('span', { class: 'muted nowrap' }, x.jobId)),
        td('State', null, pill(x.state), x.attempt > 1 ? ` attempt ${x.attempt}` : '', x.error ? h('span', { class: 'muted' }, ` ${x.error.code}`) : null)))))))
  }

  async function loadFirings(): Promise<void> {
    const res = await api<{ firings: Firing[] }>('GET', `/api/devices/${encodeURIComponent(id)}/firings?limit=15`)
    if (disposed) return
    fill(firingsBox, res.firings.length === 0
      ? h('p', { class: 'muted' }, 'No rule has fired for this device.')
      : firingsTable(res.firings, 'rule', 'device-firings-table'))
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    void sendCommand()
  })

  async function sendCommand(): Promise<void> {
    const name = nameInput.value.trim()
    let args: unknown
    if (argsInput.value.trim() !== '') {
      try {
        args = JSON.parse(argsInput.value)
      } catch (err) {
        fill(outcome, h('span', { class: 'error' }, `The arguments are not valid JSON: ${(err as Error).message}`))
        return
      }
    }
    sendButton.disabled = true
    fill(outcome, h('span', { class: 'muted' }, `Sending ${name}…`))
    const started = performance.now()
    try {
      const res = await api<{ id: string; ok?: boolean; status: string; jobId?: string; result?: unknown; error?: { code: string; message: string } }>(
        'POST', `/api/devices/${encodeURIComponent(id)}/commands`,
        { name, ...(args !== undefined ? { args } : {}), timeout: timeoutInput.value, ...(queueInput.checked ? { ifOffline: 'queue' } : {}) })
      const ms = Math.round(performance.now() - started)
      if (res.status === 'queued') {
        fill(outcome, h('div', { class: 'reply', 'data-outcome': 'queued' }, pill('queued'), ' the device is offline; it runs as job ',
          h('a', { href: `#/jobs/${encodeURIComponent(res.jobId ?? '')}` }, res.jobId ?? ''), ' when it is back'))
        return
      }
      // The whole reply, pretty-printed (the lists below show the first 300 characters).
      fill(outcome, res.ok
        ? h('div', { class: 'reply ok', 'data-outcome': 'succeeded' }, pill('succeeded'), ` ${name} in ${ms} ms`, h('pre', {}, JSON.stringify(res.result, null, 2)))
        : h('div', { class: 'reply failed', 'data-outcome': 'failed' }, pill('failed'), ` ${res.error?.code ?? ''}: ${res.error?.message ?? ''}`))
    } catch (err) {
      const e = err instanceof ApiError ? `${err.body.code}: ${err.body.message}` : String(err)
      fill(outcome, h('div', { class: 'reply failed', 'data-outcome': err instanceof ApiError ? err.body.code : 'error' }, pill('failed'), ` ${e}`))
    } finally {
      sendButton.disabled = false
      void loadCommands().catch(() => {})
    }
  }

  rangeSelect.addEventListener('change', () => {
    range = RANGES[Number(rangeSelect.value)]!
    void loadTelemetry().catch(showError)
    void loadPresence().catch(showError)
  })

  function showError(err: unknown): void {
    // A refused token is the login page's business (api.ts sends the user there).
    if (disposed || (err instanceof ApiError && err.status === 401)) return
    if (err instanceof ApiError && err.status === 404) {
      fill(el, h('div', { class: 'toolbar' }, h('a', { href: '#/', class: 'back' }, '← Fleet')), h('p', { class: 'error' }, `${err.body.message}.`))
      return
    }
    console.error(err)
  }

  let snapshots = 0
  const stream = openLive(`device:${id}`, {
    fleet: (d) => {
      const { now, devices } = d as { now: number; devices: FleetRow[] }
      hubClock.heard(now)
      row = devices[0]
      renderFacts()
      // A snapshot after the first is a reconnect: what was stored meanwhile never came over the stream.
      if (snapshots++ > 0) reloadAll()
    },
    devices: (d) => {
      const { now, changed } = d as { now: number; changed: FleetRow[] }
      hubClock.heard(now)
      const prev = row?.status
      row = changed.find((r) => r.id === id) ?? row
      renderFacts()
      if (prev !== row?.status) void loadPresence().catch(showError)
    },
    samples: (d) => { onSamples((d as { samples: Sample[] }).samples) },
    tick: (d) => {
      hubClock.heard((d as { now: number }).now)
      renderFacts()
    },
  }, (s) => { fill(streamState, s); streamState.className = `stream-state ${s === 'live' ? 'live' : 'down'}` })

  function reloadAll(): void {
    void loadTelemetry().catch(showError)
    void loadPresence().catch(showError)
    void loadCommands().catch(showError)
    void loadExecutions().catch(showError)
    void loadFirings().catch(showError)
  }
  renderFacts()
  reloadAll()
  // Commands, executions and firings are not on the live stream: they are re-read every 10 s while the page is open.
  const execTimer = window.setInterval(() => {
    void loadExecutions().catch(() => {})
    void loadCommands().catch(() => {})
    void loadFirings().catch(() => {})
  }, 10_000)

  return {
    el,
    dispose() {
      disposed = true
      stream.close()
      window.clearInterval(execTimer)
      if (rereadTimer !== undefined) window.clearTimeout(rereadTimer)
      for (const c of charts.values()) c.dispose()
    },
  }
}
