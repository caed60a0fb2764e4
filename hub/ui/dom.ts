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

/** A local date and time, to the second. */
export function when(ts: number | null): string {
  if (ts === null) return '—'
  const d = new Date(ts)
  const today = new Date()
  const time = d.toLocaleTimeString([], { hour12: false })
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`
}

/** A compact JSON rendering for results and arguments. */
export function json(value: unknown): string {
  if (value === undefined) return ''
  const s = JSON.stringify(value)
  return s.length > 300 ? `${s.slice(0, 300)}…` : s
}

/** A status pill: the class names the state, the text says it. */
export function pill(state: string, text: string = state): HTMLSpanElement {
  return h('span', { class: `pill pill-${state.replace(/[^a-z_]/g, '')}` }, text)
}
