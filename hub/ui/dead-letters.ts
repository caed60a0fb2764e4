import { api, ApiError } from './api.js'
import { fill, h, td, timeEl, type View } from './dom.js'

/**
 * Dead letters: every payload the hub refused, with the reason and the
 * first bytes of the payload, counted by reason; filter by device, page to
 * older ones.
 */

interface DeadLetter { readonly id: number; readonly ts: number; readonly deviceId: string | null; readonly clientId: string | null; readonly topic: string; readonly reason: string; readonly detail: string; readonly payloadBytes: number; readonly payloadExcerpt: string }

const PAGE = 100

export function deadLettersView(): View {
  const counts = h('div', { class: 'counts', id: 'dead-letter-counts' })
  const device = h('input', { type: 'search', placeholder: 'Device id', 'aria-label': 'Device id' })
  const rowsBody = h('tbody', {})
  const more = h('button', { type: 'button', hidden: true }, 'Older')
  const refresh = h('button', { type: 'button' }, 'Refresh')
  const message = h('p', { class: 'muted' })
  const el = h('section', {},
    h('div', { class: 'toolbar' }, h('h1', {}, 'Dead letters'), counts),
    h('p', { class: 'muted' }, 'Messages the hub refused: malformed, oversized, on a topic the sender may not use, or too many bad ones in a row. Nothing here was stored.'),
    h('div', { class: 'filters' }, device, refresh),
    h('div', { class: 'scroll-x' }, h('table', { class: 'list', id: 'dead-letters' },
      h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Device'), h('th', {}, 'Reason'), h('th', {}, 'Detail'), h('th', {}, 'Topic'), h('th', {}, 'Payload'))),
      rowsBody)),
    message, more)
  let oldest: number | undefined
  let disposed = false

  async function load(append: boolean): Promise<void> {
    const q = new URLSearchParams({ limit: String(PAGE) })
    if (device.value.trim() !== '') q.set('device', device.value.trim())
    if (append && oldest !== undefined) q.set('before', String(oldest))
    const res = await api<{ deadLetters: DeadLetter[]; countsByReason: Record<string, number> }>('GET', `/api/dead-letters?${q}`)
    if (disposed) return
    const reasons = Object.entries(res.countsByReason).sort((a, b) => b[1] - a[1])
    fill(counts, ...(reasons.length === 0 ? [h('span', { class: 'ok' }, 'none since the hub started')] : reasons.map(([r, n]) => h('span', { class: 'warn', 'data-reason': r }, `${r} ${n}`))),
      reasons.length > 0 ? h('span', { class: 'muted' }, '(all devices, since the hub started)') : null)
    if (!append) rowsBody.replaceChildren()
    for (const d of res.deadLetters) {
      rowsBody.appendChild(h('tr', { 'data-dead-letter': d.id },
        td('When', 'nowrap', timeEl(d.ts)),
        td('Device', 'nowrap', d.deviceId ? h('a', { href: `#/devices/${encodeURIComponent(d.deviceId)}` }, d.deviceId) : (d.clientId ?? '—')),
        td('Reason', 'nowrap', h('code', {}, d.reason)),
        td('Detail', 'c-text', d.detail),
        td('Topic', 'c-topic muted', d.topic),
        td('Payload', 'c-payload', h('code', { class: 'excerpt', title: `${d.payloadBytes} bytes` }, d.payloadExcerpt || '(empty)'))))
    }
    oldest = res.deadLetters.at(-1)?.id ?? oldest
    more.hidden = res.deadLetters.length < PAGE
    fill(message, rowsBody.children.length === 0 ? 'No dead letters.' : '')
  }

  const run = (append: boolean) => { void load(append).catch((err: unknown) => fill(message, err instanceof ApiError ? err.body.message : String(err))) }
  more.addEventListener('click', () => run(true))
  refresh.addEventListener('click', () => run(false))
  device.addEventListener('change', () => run(false))
  run(false)
  return { el, dispose() { disposed = true } }
}
