import { REFUSED_TOKEN, token, tokenWorks, whenUnauthorized } from './api.js'
import { deadLettersView } from './dead-letters.js'
import { deviceView } from './device.js'
import { fill, h, type View } from './dom.js'
import { fleetView } from './fleet.js'
import { jobsView, jobView } from './jobs.js'
import { firingView, rulesView, ruleView } from './rules.js'

/**
 * The dashboard's shell: a login page that asks for the admin token once per
 * browser session, a navigation bar, and a hash router (#/, #/devices/ID,
 * #/jobs, #/jobs/ID, #/rules, #/rules/NAME, #/firings/ID, #/dead-letters)
 * that disposes the view it leaves, so a page's live stream and timers end
 * with it.
 */

const main = document.getElementById('main')!
const nav = document.getElementById('nav')!
let current: View | undefined

function show(view: View): void {
  current?.dispose()
  current = view
  main.replaceChildren(view.el)
}

function loginView(message?: string): View {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'Admin token', 'aria-label': 'Admin token' })
  const note = h('p', { id: 'login-message', class: message ? 'error' : 'muted', role: 'alert' },
    message ?? 'The hub printed its admin token when it first started; it is also in the file admin-token in its data directory.')
  const button = h('button', { type: 'submit' }, 'Log in')
  const form = h('form', { class: 'login', id: 'login' }, h('h1', {}, 'rollcall'), h('label', { for: 'token' }, 'Admin token'), input, button, note)
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    button.disabled = true
    const candidate = input.value.trim()
    void tokenWorks(candidate).then((ok) => {
      if (ok === true) {
        token.set(candidate)
        const back = sessionStorage.getItem('rollcall.after-login') ?? '#/'
        sessionStorage.removeItem('rollcall.after-login')
        if (location.hash === back) route()
        else location.hash = back
        return
      }
      note.className = 'error'
      fill(note, ok === false ? REFUSED_TOKEN : `Could not check the token: ${ok}`)
    }, (err: unknown) => {
      note.className = 'error'
      fill(note, `Could not reach the hub: ${String(err)}`)
    }).finally(() => { button.disabled = false })
  })
  queueMicrotask(() => input.focus())
  return { el: form, dispose() {} }
}

function renderNav(active: string): void {
  const link = (href: string, label: string, key: string) => h('a', { href, class: active === key ? 'active' : '', 'aria-current': active === key ? 'page' : null }, label)
  fill(nav, token.get() === null ? null : h('div', { class: 'nav-links' },
    link('#/', 'Fleet', 'fleet'), link('#/jobs', 'Jobs', 'jobs'), link('#/rules', 'Rules', 'rules'), link('#/dead-letters', 'Dead letters', 'dead'),
    h('a', { href: '/api/docs', target: '_blank', rel: 'noopener' }, 'API'),
    h('button', { type: 'button', class: 'link', id: 'logout', onclick: () => { token.clear(); location.hash = '#/login' } }, 'Log out')))
}

function route(): void {
  const hash = location.hash.replace(/^#/, '') || '/'
  if (hash === '/login' || token.get() === null) {
    if (hash !== '/login') sessionStorage.setItem('rollcall.after-login', `#${hash}`)
    renderNav('')
    show(loginView())
    return
  }
  let parts: string[]
  try {
    parts = hash.split('/').filter((p) => p !== '').map(decodeURIComponent)
  } catch {
    parts = []
  }
  if (parts[0] === 'devices' && parts[1]) {
    renderNav('fleet')
    show(deviceView(parts[1]))
  } else if (parts[0] === 'jobs' && parts[1]) {
    renderNav('jobs')
    show(jobView(parts[1]))
  } else if (parts[0] === 'jobs') {
    renderNav('jobs')
    show(jobsView())
  } else if (parts[0] === 'rules' && parts[1]) {
    renderNav('rules')
    show(ruleView(parts[1]))
  } else if (parts[0] === 'rules') {
    renderNav('rules')
    show(rulesView())
  } else if (parts[0] === 'firings' && parts[1]) {
    renderNav('rules')
    show(firingView(parts[1]))
  } else if (parts[0] === 'dead-letters') {
    renderNav('dead')
    show(deadLettersView())
  } else {
    renderNav('fleet')
    show(fleetView())
  }
}

// Several requests of a page can be refused at once: the login page is shown once, and leads back here.
whenUnauthorized((message) => {
  if (token.get() === null) return
  token.clear()
  if (location.hash !== '#/login') sessionStorage.setItem('rollcall.after-login', location.hash || '#/')
  renderNav('')
  show(loginView(message))
})
window.addEventListener('hashchange', route)
route()
