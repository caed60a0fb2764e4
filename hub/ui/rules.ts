import { api, ApiError } from './api.js'
import { fill, h, json, outcome as outcomeText, pill, span, td, timeEl, type View } from './dom.js'

/**
 * The rules pages (issue #17, docs/rules.md): every rule with what it
 * watches, its state and its counters; a rule's page with its devices'
 * condition states and recent firings; a firing's page with its chain
 * (trigger, each action with its outcome and timings, the command or job it
 * made). Rules are not on the live stream: the pages re-read every 10 s
 * while open, and after an enable or a disable.
 *
 * The hub's types are not imported (this is browser code, compiled on its
 * own): the shapes below are what GET /api/rules and /api/firings/:id send.
 * A condition, action or trigger of a kind this page does not know yet is
 * shown as compact JSON, so a newer hub never breaks it.
 */

interface Counters {
  readonly fired: number; readonly suppressedStale: number; readonly suppressedCooldown: number; readonly suppressedRate: number
  readonly suppressedPaused: number; readonly actionsFailed: number; readonly lastFiredAt: number | null
}
interface Rule {
  readonly name: string; readonly for: string; readonly when: unknown; readonly then: readonly unknown[]; readonly enabled: boolean
  readonly maxSampleAgeMs: number; readonly cooldownMs: number; readonly maxFiringsPerMinute: number
  readonly createdAt: number; readonly counters: Counters; readonly paused: { readonly until: number; readonly reason: string } | null
}
interface ConditionState { readonly phase: string; readonly since?: number; readonly count?: number }
interface RuleDetail extends Rule {
  readonly devices: ReadonlyArray<{ readonly deviceId: string; readonly state: ConditionState; readonly lastFiredAt: number | null }>
  readonly recentFirings: readonly Firing[]
}
export interface Firing { readonly id: string; readonly rule: string; readonly deviceId: string; readonly at: number; readonly trigger: unknown }
interface Made { readonly id: string; readonly status: string; readonly result?: unknown; readonly error?: { code: string; message: string } | null }
interface ChainAction {
  readonly idx: number; readonly kind: string; readonly spec: unknown; readonly status: string; readonly attempts: number
  readonly startedAt: number | null; readonly endedAt: number | null; readonly outcome: unknown
  readonly command?: Made; readonly job?: Made
}
interface Chain extends Firing { readonly actions: readonly ChainAction[] }

const REREAD_MS = 10_000
const enc = encodeURIComponent
const ruleHref = (name: string) => `#/rules/${enc(name)}`
export const firingHref = (id: string) => `#/firings/${enc(id)}`

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const str = (v: unknown): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : json(v))

/** Compact JSON without null fields, so a view never reads `"error":null`. */
function compact(value: unknown): string {
  if (value === null || value === undefined) return '—'
  const s = JSON.stringify(value, (_k, v: unknown) => (v === null ? undefined : v))
  return s.length > 300 ? `${s.slice(0, 300)}…` : s
}

/** "10 s", "2 min", "1.5 h", "250 ms": a rule's windows, in the unit they read best in. */
export function duration(ms: number): string {
  if (ms < 1000 || ms % 1000 !== 0) return `${ms} ms`
  const s = ms / 1000
  if (s < 60 || s % 60 !== 0) return `${s} s`
  if (s < 3600 || s % 3600 !== 0) return `${s / 60} min`
  return `${s / 3600} h`
}

/** "vib.rms > 0.08 for 10 s, clears at <= 0.06", "event motor.fault (error)", or the condition as JSON. */
export function conditionText(when: unknown): string {
  if (isObject(when) && Object.keys(when).length === 1) {
    const t = when.telemetry
    if (isObject(t) && typeof t.sensor === 'string') {
      const hold = typeof t.forMs === 'number' ? ` for ${duration(t.forMs)}` : typeof t.samples === 'number' ? ` for ${t.samples} samples in a row` : ''
      const clear = isObject(t.clear) ? `, clears at ${str(t.clear.op)} ${str(t.clear.value)}` : ''
      return `${t.sensor} ${str(t.op)} ${str(t.value)}${hold}${clear}`
    }
    const e = when.event
    if (isObject(e) && typeof e.kind === 'string') return `event ${e.kind}${typeof e.level === 'string' ? ` (${e.level})` : ''}`
    const p = when.presence
    if (isObject(p) && (p.status === 'offline' || p.status === 'online')) {
      if (typeof p.forMs === 'number') return `${p.status} for longer than ${duration(p.forMs)}`
      return p.status === 'offline' ? 'went offline' : 'came back online'
    }
    const j = when.job
    if (isObject(j)) {
      const outcome = j.outcome === 'failed' ? 'failed' : j.outcome === 'timed_out' ? 'timed out' : 'failed or timed out'
      return `${typeof j.name === 'string' ? `job ${j.name}` : 'a job'} ${outcome}`
    }
  }
  return compact(when)
}

/** "command motor.stop", "job diag.collect → group:pumps", "webhook ops.example.com", or the action as JSON. */
export function actionText(action: unknown): string {
  if (isObject(action) && Object.keys(action).length === 1) {
    const [kind, a] = Object.entries(action)[0]!
    if (isObject(a)) {
      const to = typeof a.to === 'string' && a.to !== 'trigger' ? ` → ${a.to}` : ''
      if ((kind === 'command' || kind === 'job') && typeof a.name === 'string') {
        return `${kind} ${a.name}${to}${kind === 'command' && a.ifOffline === 'queue' ? ' (queued if offline)' : ''}`
      }
      if (kind === 'event' && typeof a.level === 'string') return `event ${a.level}: ${str(a.message)}`
      if (kind === 'webhook' && typeof a.url === 'string') {
        try {
          return `webhook ${new URL(a.url).host}`
        } catch {
          return `webhook ${a.url}`
        }
      }
    }
  }
  return compact(action)
}

/** "vib.rms = 0.12 (seq 41)", "event motor.fault (error): overcurrent", or the trigger as JSON. */
export function triggerText(trigger: unknown): string {
  if (isObject(trigger)) {
    if (trigger.kind === 'sample') return `${str(trigger.sensor)} = ${str(trigger.value)} (seq ${str(trigger.seq)})`
    if (trigger.kind === 'event') return `event ${str(trigger.event)} (${str(trigger.level)}): ${str(trigger.message)}`
    if (trigger.kind === 'presence') return `${str(trigger.status)} (${str(trigger.reason)})`
    if (trigger.kind === 'job') return `job ${str(trigger.name)} ${str(trigger.outcome)}, attempt ${str(trigger.attempt)}${typeof trigger.error === 'string' ? `: ${trigger.error}` : ''}`
  }
  return compact(trigger)
}

/** Enabled, disabled, or paused by the circuit breaker (only while the pause lasts: the hub says so). */
function statePill(r: Rule): HTMLElement {
  return r.paused ? pill('paused') : r.enabled ? pill('enabled') : pill('disabled')
}

/** Suppressed firings, by reason: "3 (stale 2, cooldown 1)"; only the reasons that counted. */
function suppressed(c: Counters): HTMLElement {
  const reasons: Array<[string, number]> = [['stale', c.suppressedStale], ['cooldown', c.suppressedCooldown], ['rate', c.suppressedRate], ['paused', c.suppressedPaused]]
  const total = reasons.reduce((n, [, v]) => n + v, 0)
  const counted = reasons.filter(([, v]) => v > 0)
  return h('span', { 'data-suppressed': total }, String(total),
    counted.length > 0 ? h('span', { class: 'muted' }, ` (${counted.map(([k, v]) => `${k} ${v}`).join(', ')})`) : null)
}

/** "paused until 14:05:09: 10 actions failed within a minute" (the hub's reason also spells the time out, in UTC: left off here). */
function pausedNote(r: Rule): HTMLElement | null {
  if (!r.paused) return null
  return h('div', { class: 'warn small', 'data-paused': r.name }, 'paused until ', timeEl(r.paused.until), `: ${r.paused.reason.replace(/; paused until \S+$/, '')}`)
}

/**
 * The button that enables or disables a rule; a paused rule offers "Resume"
 * (enabling resets the circuit breaker: docs/rules.md). `done` re-reads.
 */
function toggleButton(r: Rule, message: HTMLElement, done: () => void): HTMLButtonElement {
  const enable = !r.enabled || r.paused !== null
  const label = r.paused ? 'Resume' : r.enabled ? 'Disable' : 'Enable'
  const button = h('button', { type: 'button', class: enable ? 'small-button' : 'small-button danger', 'data-toggle': r.name }, label)
  button.addEventListener('click', () => {
    button.disabled = true
    api('POST', `/api/rules/${enc(r.name)}/${enable ? 'enable' : 'disable'}`).then(() => {
      message.hidden = true
    }, (err: unknown) => {
      message.hidden = false
      fill(message, `${label} failed: ${err instanceof ApiError ? err.body.message : String(err)}`)
    }).finally(() => {
      button.disabled = false
      done()
    })
  })
  return button
}

/**
 * A page's reads: one at a time, again every 10 s until `load` says nothing
 * more will change (true), and none after the page is left. `load` gets
 * `live()`: false once the page is left, so a late answer draws nothing.
 */
function reader(load: (live: () => boolean) => Promise<boolean | void>, onError: (err: unknown) => void): { refresh(): void; dispose(): void } {
  let loading = false
  let disposed = false
  let timer: number | undefined = window.setInterval(() => { refresh() }, REREAD_MS)
  const stop = () => {
    window.clearInterval(timer)
    timer = undefined
  }
  function refresh(): void {
    if (loading || disposed) return
    loading = true
    load(() => !disposed).then((settled) => { if (settled === true) stop() }, (err: unknown) => { if (!disposed) onError(err) }).finally(() => { loading = false })
  }
  refresh()
  return { refresh, dispose() { disposed = true; stop() } }
}

function errorText(err: unknown): string {
  return err instanceof ApiError ? err.body.message : String(err)
}

export function rulesView(): View {
  const body = h('div', { id: 'rules-list' }, h('p', { class: 'muted' }, 'Loading rules…'))
  const message = h('p', { class: 'error', role: 'alert', hidden: true })
  const refreshButton = h('button', { type: 'button' }, 'Refresh')
  const el = h('section', {},
    h('div', { class: 'toolbar' }, h('h1', {}, 'Rules'), refreshButton),
    h('p', { class: 'muted' }, 'What the hub does when a device reports something: each rule fires once per transition, on what was stored (docs/rules.md).'),
    message, body)

  async function load(live: () => boolean): Promise<void> {
    const { rules } = await api<{ rules: Rule[] }>('GET', '/api/rules')
    if (!live()) return
    if (rules.length === 0) {
      fill(body, h('p', { class: 'muted' }, 'No rules yet. Add one with: npx rollcall rule add rule.json (docs/rules.md)'))
      return
    }
    fill(body, h('div', { class: 'scroll-x' }, h('table', { class: 'list', id: 'rules' },
      h('thead', {}, h('tr', {}, ...['Rule', 'For', 'When', 'Then', 'State', 'Fired', 'Suppressed', 'Failed', 'Last fired'].map((c) => h('th', {}, c)))),
      h('tbody', {}, ...rules.map((r) => h('tr', { 'data-rule': r.name, 'data-state': r.paused ? 'paused' : r.enabled ? 'enabled' : 'disabled' },
        td('Rule', 'nowrap', h('a', { href: ruleHref(r.name) }, r.name)),
        td('For', 'c-topic', r.for),
        td('When', 'c-text', conditionText(r.when)),
        td('Then', 'c-text', r.then.map(actionText).join(', ')),
        td('State', 'c-state', h('div', { class: 'state-line' }, statePill(r), toggleButton(r, message, refresh)), pausedNote(r)),
        td('Fired', 'num', String(r.counters.fired)),
        td('Suppressed', 'nowrap', suppressed(r.counters)),
        td('Failed', 'num', h('span', { class: r.counters.actionsFailed > 0 ? 'error' : '' }, String(r.counters.actionsFailed))),
        td('Last fired', 'nowrap', timeEl(r.counters.lastFiredAt))))))))
  }

  function refresh(): void { reads.refresh() }
  const reads = reader(load, (err) => fill(body, h('p', { class: 'error', id: 'load-error' }, errorText(err))))
  refreshButton.addEventListener('click', refresh)
  return { el, dispose() { reads.dispose() } }
}

/** A list of firings; `show` picks the column that names what is not the page's own (the device, or the rule). */
export function firingsTable(firings: readonly Firing[], show: 'device' | 'rule', id: string): HTMLElement {
  return h('div', { class: 'table-box' }, h('table', { class: 'list', id },
    h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, show === 'device' ? 'Device' : 'Rule'), h('th', {}, 'Trigger'), h('th', {}, 'Firing'))),
    h('tbody', {}, ...firings.map((f) => h('tr', { 'data-firing': f.id },
      td('When', 'nowrap', timeEl(f.at)),
      show === 'device'
        ? td('Device', 'nowrap', h('a', { href: `#/devices/${enc(f.deviceId)}` }, f.deviceId))
        : td('Rule', 'nowrap', h('a', { href: ruleHref(f.rule) }, f.rule)),
      td('Trigger', 'c-text', triggerText(f.trigger)),
      td('Firing', 'nowrap', h('a', { href: firingHref(f.id), title: 'its chain: the trigger, each action, their outcomes and timings' }, f.id)))))))
}

export function ruleView(name: string): View {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const message = h('p', { class: 'error', role: 'alert', hidden: true })
  const head = h('span', { class: 'rule-head' })
  const el = h('section', {}, h('div', { class: 'toolbar' }, h('a', { href: '#/rules', class: 'back' }, '← Rules'), h('h1', {}, name), head), message, body)

  async function load(live: () => boolean): Promise<void> {
    const r = await api<RuleDetail>('GET', `/api/rules/${enc(name)}`)
    if (!live()) return
    const c = r.counters
    fill(head, statePill(r), toggleButton(r, message, refresh))
    fill(body,
      h('dl', { class: 'facts', id: 'rule-facts' },
        h('dt', {}, 'For'), h('dd', {}, r.for),
        h('dt', {}, 'When'), h('dd', { id: 'rule-when' }, conditionText(r.when)),
        h('dt', {}, 'Then'), h('dd', {}, ...r.then.map((a) => h('div', {}, actionText(a)))),
        h('dt', {}, 'State'), h('dd', {}, r.paused ? pausedNote(r) : r.enabled ? 'enabled' : 'disabled: its states are kept, and it fires again once enabled'),
        h('dt', {}, 'Counters'), h('dd', { id: 'rule-counters' }, `fired ${c.fired} · suppressed `, suppressed(c), ` · actions failed ${c.actionsFailed}`),
        h('dt', {}, 'Last fired'), h('dd', {}, timeEl(c.lastFiredAt)),
        h('dt', {}, 'Limits'), h('dd', { class: 'muted' },
          `acts on samples up to ${duration(r.maxSampleAgeMs)} old · cooldown ${r.cooldownMs === 0 ? 'none' : duration(r.cooldownMs)} per device · at most ${r.maxFiringsPerMinute} firings a minute`)),
      h('div', { class: 'panel' }, h('h2', {}, 'Devices'),
        r.devices.length === 0
          ? h('p', { class: 'muted' }, 'No device has its condition pending or active, and the rule has not fired for any yet.')
          : h('div', { class: 'table-box' }, h('table', { class: 'list', id: 'rule-devices' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Condition'), h('th', {}, 'Last fired'))),
            h('tbody', {}, ...r.devices.map((d) => h('tr', { 'data-device': d.deviceId, 'data-phase': d.state.phase },
              td('Device', 'nowrap', h('a', { href: `#/devices/${enc(d.deviceId)}` }, d.deviceId)),
              td('Condition', null, pill(d.state.phase),
                d.state.since !== undefined ? h('span', { class: 'muted' }, ' since ', timeEl(d.state.since)) : null,
                d.state.phase === 'pending' && d.state.count !== undefined ? h('span', { class: 'muted' }, `, ${d.state.count} sample${d.state.count === 1 ? '' : 's'}`) : null),
              td('Last fired', 'nowrap', timeEl(d.lastFiredAt)))))))),
      h('div', { class: 'panel' }, h('h2', {}, 'Recent firings'),
        r.recentFirings.length === 0 ? h('p', { class: 'muted' }, 'No firings yet.') : firingsTable(r.recentFirings, 'device', 'rule-firings')))
  }

  function refresh(): void { reads.refresh() }
  const reads = reader(load, (err) => fill(body, h('p', { class: 'error', id: 'load-error' }, `${errorText(err)}.`)))
  return { el, dispose() { reads.dispose() } }
}

/** What an action ended with: the command's or job's record when it made one, else its recorded outcome. */
function actionOutcome(a: ChainAction): HTMLElement {
  if (a.command) {
    return h('span', {}, 'command ', h('code', {}, a.command.id), ' ', pill(a.command.status), ' ',
      h('span', { class: 'muted' }, outcomeText(a.command.result, a.command.error ?? null)))
  }
  if (a.job) return h('span', {}, 'job ', h('a', { href: `#/jobs/${enc(a.job.id)}` }, a.job.id), ' ', pill(a.job.status))
  const err = isObject(a.outcome) && isObject(a.outcome.error) ? a.outcome.error : undefined
  if (err) return h('span', { class: 'error' }, `${str(err.code)}: ${str(err.message)}`)
  return h('span', { class: 'muted' }, compact(a.outcome))
}

/** "+12 ms": a time as an offset from the firing, which is how a chain reads. */
const after = (ts: number | null, from: number) => (ts === null ? '—' : `+${ts - from} ms`)

export function firingView(id: string): View {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'))
  const back = h('a', { href: '#/rules', class: 'back' }, '← Rules')
  const el = h('section', {}, h('div', { class: 'toolbar' }, back, h('h1', {}, `Firing ${id}`)), body)

  async function load(live: () => boolean): Promise<boolean> {
    const f = await api<Chain>('GET', `/api/firings/${enc(id)}`)
    if (!live()) return true
    back.setAttribute('href', ruleHref(f.rule))
    fill(back, `← ${f.rule}`)
    const t = f.trigger
    const taken = isObject(t) && typeof t.ts === 'number' ? t.ts : null
    fill(body,
      h('dl', { class: 'facts', id: 'firing-facts' },
        h('dt', {}, 'Rule'), h('dd', {}, h('a', { href: ruleHref(f.rule) }, f.rule)),
        h('dt', {}, 'Device'), h('dd', {}, h('a', { href: `#/devices/${enc(f.deviceId)}` }, f.deviceId)),
        h('dt', {}, 'Trigger'), h('dd', { id: 'firing-trigger' }, triggerText(t)),
        taken === null ? null : h('dt', {}, 'Taken'), taken === null ? null : h('dd', {}, timeEl(taken)),
        h('dt', {}, 'Fired'), h('dd', {}, timeEl(f.at), taken === null ? null : h('span', { class: 'muted' }, ` (${f.at - taken >= 1000 ? span(f.at - taken) : `${f.at - taken} ms`} after it was taken)`))),
      h('div', { class: 'panel' }, h('h2', {}, 'Actions'), h('div', { class: 'table-box' }, h('table', { class: 'list', id: 'firing-actions' },
        h('thead', {}, h('tr', {}, ...['Action', 'Status', 'Started', 'Ended', 'Outcome'].map((c) => h('th', {}, c)))),
        h('tbody', {}, ...f.actions.map((a) => h('tr', { 'data-action': a.idx, 'data-status': a.status },
          td('Action', 'c-text', actionText(a.spec)),
          td('Status', 'nowrap', pill(a.status), a.attempts > 1 ? h('span', { class: 'muted' }, ` ${a.attempts} tries`) : null),
          td('Started', 'nowrap', after(a.startedAt, f.at)),
          td('Ended', 'nowrap', after(a.endedAt, f.at), a.startedAt !== null && a.endedAt !== null ? h('span', { class: 'muted' }, ` (took ${a.endedAt - a.startedAt} ms)`) : null),
          td('Outcome', 'c-json', actionOutcome(a))))))),
        h('p', { class: 'muted small' }, 'Started and ended count from the firing.')))
    return f.actions.every((a) => a.status !== 'pending')
  }

  // A chain changes until its last action ends: re-read till then.
  const reads = reader(load, (err) => fill(body, h('p', { class: 'error', id: 'load-error' }, `${errorText(err)}.`)))
  return { el, dispose() { reads.dispose() } }
}
