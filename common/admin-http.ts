import { readFileSync } from 'node:fs'

/**
 * The one client of the hub's admin HTTP API: the CLI (cli/http.ts), the
 * simulator (devices-sim/hub-control.ts), the benchmarks and the tests all
 * call the hub through it. It sends the admin token, speaks JSON, and for an
 * https:// API with a CA file trusts that CA only, through an undici Agent
 * (undici 6 is the line Node 20's own fetch is built on, so its Agent is a
 * dispatcher fetch takes; it is loaded only when a CA is given). What an
 * answer means is the caller's business: it gets the status and the body.
 */

export interface AdminEndpoint {
  /** http(s)://host:port of the hub's API. */
  readonly api: string
  readonly token: string
  /** The CA certificate (PEM path) an https:// API's certificate must chain to; undefined: the system's CAs. */
  readonly ca?: string | undefined
}

export interface AdminReply<T> {
  readonly status: number
  /** The parsed JSON body; undefined when there was none (204). A body that is not JSON is kept as text. */
  readonly body: T
}

/** A CA file that could not be read: the caller says which option to fix. */
export class CaFileError extends Error {
  override readonly name = 'CaFileError'
  constructor(readonly path: string, readonly code: string) {
    super(`cannot read the CA file ${path} (${code})`)
  }
}

/** One Agent per CA file, so a caller's requests (a polling `job show --follow`) reuse their TLS connection. */
const dispatchers = new Map<string, Promise<object>>()

function dispatcherFor(ca: string): Promise<object> {
  let d = dispatchers.get(ca)
  if (d === undefined) {
    let pem: string
    try {
      pem = readFileSync(ca, 'utf8')
    } catch (err) {
      return Promise.reject(new CaFileError(ca, (err as NodeJS.ErrnoException).code ?? (err as Error).message))
    }
    d = import('undici').then(({ Agent }) => new Agent({ connect: { ca: pem } }))
    dispatchers.set(ca, d)
    // A failure is not kept: the next call tries again.
    d.catch(() => { dispatchers.delete(ca) })
  }
  return d
}

/**
 * Calls the API once. Resolves with any HTTP answer, error statuses
 * included; rejects when there was none (no connection, TLS refused, no
 * answer in `waitMs`), with fetch's error, whose `cause` says why.
 */
export async function adminRequest<T = unknown>(to: AdminEndpoint, method: string, path: string, body?: unknown, waitMs = 30_000): Promise<AdminReply<T>> {
  const dispatcher = to.ca === undefined ? undefined : await dispatcherFor(to.ca)
  const res = await fetch(`${to.api}${path}`, {
    // undici's Agent is Node's fetch dispatcher; the DOM and undici-types typings of RequestInit disagree on it.
    ...(dispatcher === undefined ? {} : { dispatcher: dispatcher as never }),
    method,
    headers: { authorization: `Bearer ${to.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(waitMs),
  })
  const text = await res.text()
  let parsed: unknown
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = text }
  return { status: res.status, body: parsed as T }
}

/** The API as a function of (method, path, body): what tests, benchmarks and the simulator hold. */
export type AdminApi = <T = unknown>(method: string, path: string, body?: unknown) => Promise<AdminReply<T>>

export function adminApi(to: AdminEndpoint): AdminApi {
  return <T>(method: string, path: string, body?: unknown) => adminRequest<T>(to, method, path, body)
}
