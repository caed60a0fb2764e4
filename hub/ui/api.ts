/**
 * The dashboard's way to the hub: every call carries the admin token, kept in
 * sessionStorage (entered once per browser session, gone when the tab
 * closes). A 401 anywhere sends the user back to the login page with why.
 */

const TOKEN_KEY = 'rollcall.token'

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string): void => { sessionStorage.setItem(TOKEN_KEY, t) },
  clear: (): void => { sessionStorage.removeItem(TOKEN_KEY) },
}

export interface ApiErrorBody { readonly code: string; readonly message: string; readonly [k: string]: unknown }

export class ApiError extends Error {
  constructor(readonly status: number, readonly body: ApiErrorBody) {
    super(`${body.code}: ${body.message}`)
  }
}

/** Called when the hub refuses the token: the app shows the login page. */
let onUnauthorized: (message: string) => void = () => {}
export function whenUnauthorized(handler: (message: string) => void): void {
  onUnauthorized = handler
}

export const REFUSED_TOKEN = 'The hub refused this token. Copy it again from the hub\'s banner or from the file admin-token in its data directory.'

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token.get() ?? ''}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  const parsed: unknown = text === '' ? undefined : JSON.parse(text)
  if (res.status === 401) {
    onUnauthorized(REFUSED_TOKEN)
    throw new ApiError(401, (parsed as { error: ApiErrorBody }).error)
  }
  if (!res.ok) {
    const err = (parsed as { error?: ApiErrorBody } | undefined)?.error ?? { code: `HTTP_${res.status}`, message: res.statusText }
    throw new ApiError(res.status, err)
  }
  return parsed as T
}

/** Checks a token without keeping it: true when the hub accepts it. */
export async function tokenWorks(candidate: string): Promise<boolean | string> {
  const res = await fetch('/api/stats', { headers: { authorization: `Bearer ${candidate}` } })
  if (res.status === 401) return false
  if (!res.ok) return `the hub answered ${res.status} ${res.statusText}`
  return true
}

export type LiveHandlers = Record<string, (data: unknown) => void>

export interface LiveStream {
  close(): void
  /** "connecting", "live", or "reconnecting in 2s". */
  readonly state: string
}

/** A stream that stayed up this long resets the reconnect delay. */
const STABLE_MS = 10_000

/**
 * Reads GET /api/live (Server-Sent Events) with fetch, so the token goes in
 * a header and not in the URL. When the stream ends it reconnects with
 * growing delays (1 s to 15 s; back to 1 s only after a stream stayed up
 * 10 s, so a stream that keeps failing never becomes a request storm), and
 * the feed starts it from a snapshot again. A 4xx other than 429 is not
 * retried: the request itself is wrong, and the state says why.
 */
export function openLive(topics: string, handlers: LiveHandlers, onState: (state: string) => void = () => {}): LiveStream {
  let closed = false
  let state = 'connecting'
  let controller: AbortController | undefined
  let retryMs = 1000
  let timer: number | undefined
  const setState = (s: string) => { state = s; onState(s) }

  async function run(): Promise<void> {
    controller = new AbortController()
    setState('connecting')
    let upSince: number | undefined
    try {
      const res = await fetch(`/api/live?topics=${encodeURIComponent(topics)}`, {
        headers: { authorization: `Bearer ${token.get() ?? ''}`, accept: 'text/event-stream' },
        signal: controller.signal,
      })
      if (res.status === 401) {
        closed = true
        onUnauthorized(REFUSED_TOKEN)
        return
      }
      if (res.status >= 400 && res.status < 500 && res.status !== 429) {
        closed = true
        const body = await res.json().catch(() => undefined) as { error?: ApiErrorBody } | undefined
        setState(`stopped: ${body?.error?.message ?? `HTTP ${res.status}`}`)
        return
      }
      if (!res.ok || !res.body) throw new Error(`live stream: HTTP ${res.status}`)
      setState('live')
      upSince = performance.now()
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ''
      // A CR that ends a chunk may be the first half of a CRLF: held until the next chunk.
      let heldCr = ''
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        // Lines may end in CRLF, LF or CR (the format allows all three).
        let text = heldCr + value
        heldCr = text.endsWith('\r') ? '\r' : ''
        if (heldCr) text = text.slice(0, -1)
        buffer += text.replace(/\r\n?/g, '\n')
        let cut: number
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          dispatch(buffer.slice(0, cut))
          buffer = buffer.slice(cut + 2)
        }
      }
    } catch (err) {
      if (closed) return
      console.warn('live stream ended', err)
    }
    if (closed) return
    if (upSince !== undefined && performance.now() - upSince >= STABLE_MS) retryMs = 1000
    setState(`reconnecting in ${Math.round(retryMs / 1000)}s`)
    timer = window.setTimeout(() => { void run() }, retryMs)
    retryMs = Math.min(retryMs * 2, 15_000)
  }

  function dispatch(block: string): void {
    let event = 'message'
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim()
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
      else if (line.startsWith('retry:')) retryMs = Math.max(retryMs, Number(line.slice(6)) || 0)
    }
    if (data.length === 0) return
    // A page's handler that fails is a bug in that page: report it, keep the stream.
    try {
      handlers[event]?.(JSON.parse(data.join('\n')))
    } catch (err) {
      console.error(`live event "${event}" could not be applied`, err)
    }
  }

  void run()
  return {
    close() {
      closed = true
      if (timer !== undefined) window.clearTimeout(timer)
      controller?.abort()
    },
    get state() { return state },
  }
}

/** The hub's clock as last told by the feed, so "online for 3m" does not depend on the browser's clock. */
let clockOffsetMs = 0
export const hubClock = {
  now: (): number => Date.now() + clockOffsetMs,
  heard(hubNow: number): void { clockOffsetMs = hubNow - Date.now() },
}
