/**
 * DOM helpers for the dashboard: elements are made with h() and filled with
 * text nodes, never innerHTML, so nothing a device sends (ids, messages,
 * payload excerpts) can become markup.
 */

type Child = Node | string | number | null | undefined | false
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v)
    // Through the CSSOM, which the page's Content-Security-Policy allows; a style attribute it would refuse.
    else if (k === 'style') el.style.cssText = String(v)
    else if (v === true) el.setAttribute(k, '')
    else el.setAttribute(k, String(v))
  }
  append(el, children)
  return el
}

export function append(el: Node, children: readonly Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue
    el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c)
  }
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren()
  append(el, children)
}

/** A view owns a piece of the page and what it opened (streams, timers, charts). */
export interface View {
  readonly el: HTMLElement
  dispose(): void
}

/** "4s", "3m 12s", "2h 5m", "3d 4h": how long, to two units at most. */
export function span(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${s % 60}s`
  const hrs = Math.floor(m / 60)
  if (hrs < 48) return `${hrs}h ${m % 60}m`
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`
}

/** "12s ago", or "never". */
export function ago(ts: number | null, now: number): string {
  return ts === null ? 'never' : `${span(now - ts)} ago`
}

/*
 * Times, one convention for the whole dashboard (docs/dashboard.md, "Times"):
 * the browser's local time, 24-hour, `HH:MM:SS`, with `YYYY-MM-DD ` before it
 * unless it is today; the same digits as the CLI's `YYYY-MM-DD HH:MM:SS`,
 * whatever the browser's locale, so a time reads the same everywhere.
 */
const pad = (n: number) => String(n).padStart(2, '0')

/** `YYYY-MM-DD`, local. */
export function day(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`
}

/** `HH:MM` or `HH:MM:SS`, local, 24-hour. */
export function clock(d: Date, seconds = true): string {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ''}`
}

/** `YYYY-MM-DD HH:MM:SS`, local. */
export function fullTime(ts: number): string {
  const d = new Date(ts)
  return `${day(d)} ${clock(d)}`
}

/** `HH:MM:SS` today, `YYYY-MM-DD HH:MM:SS` before; `—` for none. */
export function when(ts: number | null): string {
  if (ts === null) return '—'
  const d = new Date(ts)
  return day(d) === day(new Date()) ? clock(d) : fullTime(ts)
}

/** A time in a table or list: `when()`, never wrapped, with the full date and time on hover. */
export function timeEl(ts: number | null): HTMLElement {
  if (ts === null) return h('span', {}, '—')
  return h('time', { datetime: new Date(ts).toISOString(), title: fullTime(ts) }, when(ts))
}

/**
 * A table cell. `label` names its column: on a phone, where a table's rows
 * become cards (style.css), each cell shows it before its value.
 */
export function td(label: string, cls: string | null, ...children: Child[]): HTMLTableCellElement {
  return h('td', { 'data-label': label, class: cls }, ...children)
}

/** A compact JSON rendering for results and arguments. */
export function json(value: unknown): string {
  if (value === undefined) return ''
  const s = JSON.stringify(value)
  return s.length > 300 ? `${s.slice(0, 300)}…` : s
}

/**
 * What a command or an execution ended with: the error with its code, or the
 * result; `—` when there is neither (a canceled execution, a command still
 * waiting), never a bare `null`.
 */
export function outcome(result: unknown, error: { code: string; message: string } | null): string {
  if (error) return `${error.code}: ${error.message}`
  return result === null || result === undefined ? '—' : json(result)
}

/** A status pill: the class names the state, the text says it. */
export function pill(state: string, text: string = state): HTMLSpanElement {
  return h('span', { class: `pill pill-${state.replace(/[^a-z_]/g, '')}` }, text)
}
