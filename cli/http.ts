import type { AdminTarget } from './admin-config.js'
import { formatDurationMs } from '../common/duration.js'

/**
 * What every admin command shares: calling the hub's HTTP API and printing
 * the answer. Errors from the hub arrive as { error: { code, message } } and
 * leave as "rollcall: CODE: message" on stderr with exit code 1 (cli/main.ts).
 */
export class ApiError extends Error {
  /** The error's other fields as the hub sent them (a DEVICE_OFFLINE's lastSeen, a COMMAND_TIMEOUT's id). */
  constructor(readonly code: string, message: string, readonly details: Readonly<Record<string, unknown>> = {}) { super(message) }
}

/** `waitMs`: how long to wait for the answer; a command waits for its device, so it passes its own deadline plus a margin. */
export async function call<T>(target: AdminTarget, method: string, path: string, body?: unknown, waitMs = 15_000): Promise<T> {
  let res: Response
  try {
    res = await fetch(`${target.api}${path}`, {
      method,
      headers: { authorization: `Bearer ${target.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(waitMs),
    })
  } catch (err) {
    throw new ApiError('UNAVAILABLE', `cannot reach the hub at ${target.api} (${(err as Error).message}); is it running? (--api or ROLLCALL_API)`)
  }
  if (res.status === 204) return undefined as T
  const text = await res.text()
  let json: unknown
  try { json = JSON.parse(text) } catch { json = undefined }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string } & Record<string, unknown> } | undefined)?.error
    const { code, message, ...details } = e ?? {}
    throw new ApiError(code ?? `HTTP_${res.status}`, message ?? text.slice(0, 200), details)
  }
  return json as T
}

export const out = (s: string): void => { process.stdout.write(`${s}\n`) }
export const printJson = (v: unknown): void => { out(JSON.stringify(v, null, 2)) }

/** Columns padded to their widest cell; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

/** "3m 2s ago", or "-" for no time. */
export function ago(ts: number | null | undefined): string {
  return ts == null ? '-' : `${formatDurationMs(Math.max(0, Date.now() - ts))} ago`
}
