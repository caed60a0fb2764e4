import { hubClock, openLive } from './api.js'
import { ago, fill, h, span, type View } from './dom.js'

/**
 * The fleet table: every device with its presence and for how long, last
 * seen, outbox backlog and agent version, kept live by the feed's `fleet`
 * snapshot and `devices` changes. The table is virtualised: only the rows in
 * view (and a few around them) are in the DOM, so 2,000 or 20,000 devices
 * scroll and filter alike. Filter by id or group, by presence; sort by any column.
 */

/** A row as the live feed sends it (hub/observe/live-feed.ts, FleetRow): the wire shape, restated for the browser build. */
export interface FleetRow {
  readonly id: string
  readonly group: string | null
  readonly status: 'online' | 'offline'
  readonly reason: string
  readonly since: number | null
  readonly lastSeen: number | null
  readonly backlog: number | null
  readonly agentVersion: string | null
}

const ROW_HEIGHT = 36
const OVERSCAN = 8

type SortKey = 'id' | 'group' | 'status' | 'lastSeen' | 'backlog' | 'agentVersion'
const COLUMNS: ReadonlyArray<{ key: SortKey; label: string; cls: string }> = [
  { key: 'id', label: 'Device', cls: 'c-id' },
  { key: 'group', label: 'Group', cls: 'c-group' },
  { key: 'status', label: 'Presence', cls: 'c-presence' },
  { key: 'lastSeen', label: 'Last seen', cls: 'c-seen' },
  { key: 'backlog', label: 'Backlog', cls: 'c-backlog' },
  { key: 'agentVersion', label: 'Agent', cls: 'c-version' },
]

function compare(key: SortKey, a: FleetRow, b: FleetRow): number {
  switch (key) {
    case 'status': return a.status.localeCompare(b.status) || (b.since ?? 0) - (a.since ?? 0)
    case 'lastSeen': return (b.lastSeen ?? -1) - (a.lastSeen ?? -1)
    case 'backlog': return (b.backlog ?? -1) - (a.backlog ?? -1)
    default: return (a[key] ?? '').localeCompare(b[key] ?? '')
  }
}

interface RowEl {
  readonly el: HTMLAnchorElement
  readonly cells: { readonly id: HTMLElement; readonly group: HTMLElement; readonly presence: HTMLElement; readonly dot: HTMLElement; readonly presenceText: HTMLElement; readonly seen: HTMLElement; readonly backlog: HTMLElement; readonly version: HTMLElement }
}

function makeRow(): RowEl {
  const cell = (cls: string, ...children: HTMLElement[]) => h('span', { class: `cell ${cls}`, role: 'cell' }, ...children)
  const dot = h('span', { class: 'dot' })
  const presenceText = h('span', {})
  const cells = {
    id: cell('c-id'), group: cell('c-group'), presence: cell('c-presence', dot, presenceText), dot, presenceText,
    seen: cell('c-seen'), backlog: cell('c-backlog'), version: cell('c-version'),
  }
  const el = h('a', { class: 'vt-row', role: 'row' }, cells.id, cells.group, cells.presence, cells.seen, cells.backlog, cells.version)
  return { el, cells }
}

/** Writes only what differs, so an unchanged row costs no layout. */
function set(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text
}
function attr(el: Element, name: string, value: string): void {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value)
}

function paintRow(re: RowEl, r: FleetRow, now: number): void {
  const { el, cells } = re
  attr(el, 'href', `#/devices/${encodeURIComponent(r.id)}`)
  attr(el, 'data-device', r.id)
  attr(el, 'data-status', r.status)
  attr(el, 'class', `vt-row ${r.status}`)
  set(cells.id, r.id)
  set(cells.group, r.group ?? '—')
  attr(cells.presence, 'title', r.reason)
  attr(cells.dot, 'class', `dot ${r.status}`)
  set(cells.presenceText, r.since === null ? r.status : `${r.status} ${span(now - r.since)}`)
  set(cells.seen, ago(r.lastSeen, now))
  attr(cells.backlog, 'class', `cell c-backlog${(r.backlog ?? 0) > 0 ? ' warn' : ''}`)
  set(cells.backlog, r.backlog === null ? '—' : String(r.backlog))
  set(cells.version, r.agentVersion ?? '—')
}

export function fleetView(): View {
  const rows = new Map<string, FleetRow>()
  let shown: FleetRow[] = []
  let sortKey: SortKey = 'id'
  let sortDir = 1
  let filterText = ''
  let filterStatus = ''
  let loaded = false

  const counts = h('div', { class: 'counts', id: 'fleet-counts' })
  const streamState = h('span', { class: 'stream-state', id: 'stream-state' }, 'connecting')
  const search = h('input', { type: 'search', placeholder: 'Filter by device or group', 'aria-label': 'Filter by device or group', id: 'fleet-filter' })
  const status = h('select', { 'aria-label': 'Presence', id: 'fleet-status' },
    h('option', { value: '' }, 'All'), h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'))
  const header = h('div', { class: 'vt-head', role: 'row' })
  const spacer = h('div', { class: 'vt-spacer' })
  const layer = h('div', { class: 'vt-rows', role: 'rowgroup' })
  const viewport = h('div', { class: 'vt', id: 'fleet-table', role: 'table', 'aria-label': 'Devices' }, spacer, layer)
  const empty = h('p', { class: 'empty', hidden: true })
  const el = h('section', { class: 'fleet' },
    h('div', { class: 'toolbar' }, h('h1', {}, 'Fleet'), counts, streamState),
    h('div', { class: 'filters' }, search, status),
    header, viewport, empty)

  function renderHeader(): void {
    fill(header, ...COLUMNS.map((c) => h('button', {
      class: `cell ${c.cls}${sortKey === c.key ? ' sorted' : ''}`, role: 'columnheader', type: 'button',
      'aria-sort': sortKey === c.key ? (sortDir > 0 ? 'ascending' : 'descending') : 'none',
      onclick: () => {
        sortDir = sortKey === c.key ? -sortDir : 1
        sortKey = c.key
        renderHeader()
        recompute()
      },
    }, c.label, sortKey === c.key ? (sortDir > 0 ? ' ▲' : ' ▼') : '')))
  }

  function recompute(): void {
    const text = filterText.toLowerCase()
    shown = [...rows.values()].filter((r) => (filterStatus === '' || r.status === filterStatus)
      && (text === '' || r.id.toLowerCase().includes(text) || (r.group ?? '').toLowerCase().includes(text)))
    shown.sort((a, b) => sortDir * compare(sortKey, a, b) || a.id.localeCompare(b.id))
    spacer.style.height = `${shown.length * ROW_HEIGHT}px`
    renderCounts()
    renderRows()
  }

  function renderCounts(): void {
    let online = 0
    let backlogged = 0
    for (const r of rows.values()) {
      if (r.status === 'online') online++
      if ((r.backlog ?? 0) > 0) backlogged++
    }
    fill(counts,
      h('span', { id: 'fleet-total' }, `${rows.size} devices`),
      h('span', { class: 'ok', id: 'fleet-online' }, `${online} online`),
      h('span', { class: 'off', id: 'fleet-offline' }, `${rows.size - online} offline`),
      backlogged > 0 ? h('span', { class: 'warn' }, `${backlogged} with backlog`) : null)
    empty.hidden = !loaded || shown.length > 0
    fill(empty, rows.size === 0 ? 'No devices yet. Add one with: npx rollcall device add ID' : 'No device matches the filter.')
  }

  // Row elements are kept per device and updated in place: a row under the
  // pointer or the keyboard focus stays the same element while the clock and
  // the data move, so clicks and focus are never lost to a redraw.
  const rowEls = new Map<string, RowEl>()

  function renderRows(): void {
    const now = hubClock.now()
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN)
    const last = Math.min(shown.length, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW_HEIGHT) + OVERSCAN)
    layer.style.transform = `translateY(${first * ROW_HEIGHT}px)`
    const wanted: HTMLElement[] = []
    const inView = new Set<string>()
    for (let i = first; i < last; i++) {
      const r = shown[i]!
      let re = rowEls.get(r.id)
      if (!re) rowEls.set(r.id, re = makeRow())
      paintRow(re, r, now)
      wanted.push(re.el)
      inView.add(r.id)
    }
    for (const id of rowEls.keys()) if (!inView.has(id)) rowEls.delete(id)
    const current = layer.children
    if (wanted.length !== current.length || wanted.some((el, i) => current[i] !== el)) layer.replaceChildren(...wanted)
  }

  // Scroll and data changes render at most once a frame.
  let frame = 0
  const schedule = (full: boolean) => {
    if (full) needsRecompute = true
    if (frame) return
    frame = requestAnimationFrame(() => {
      frame = 0
      if (needsRecompute) {
        needsRecompute = false
        recompute()
      } else {
        renderRows()
      }
    })
  }
  let needsRecompute = false
  viewport.addEventListener('scroll', () => schedule(false), { passive: true })
  search.addEventListener('input', () => { filterText = search.value.trim(); viewport.scrollTop = 0; schedule(true) })
  status.addEventListener('change', () => { filterStatus = status.value; viewport.scrollTop = 0; schedule(true) })
  const resize = new ResizeObserver(() => schedule(false))
  resize.observe(viewport)

  const stream = openLive('fleet', {
    fleet: (d) => {
      const { now, devices } = d as { now: number; devices: FleetRow[] }
      hubClock.heard(now)
      rows.clear()
      for (const r of devices) rows.set(r.id, r)
      loaded = true
      schedule(true)
    },
    devices: (d) => {
      const { now, changed, removed } = d as { now: number; changed: FleetRow[]; removed: string[] }
      hubClock.heard(now)
      for (const r of changed) rows.set(r.id, r)
      for (const id of removed) rows.delete(id)
      schedule(true)
    },
    tick: (d) => {
      hubClock.heard((d as { now: number }).now)
      // "online 3m 12s" and "4s ago" move with the clock: redraw the rows in view.
      schedule(false)
    },
  }, (s) => { fill(streamState, s); streamState.className = `stream-state ${s === 'live' ? 'live' : 'down'}` })

  renderHeader()
  return {
    el,
    dispose() {
      stream.close()
      resize.disconnect()
      if (frame) cancelAnimationFrame(frame)
    },
  }
}
