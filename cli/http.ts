import type { AdminTarget } from './admin-config.js'

/**
 * What every admin command shares: calling the hub's HTTP API (printing is
 * in output.ts). Errors from the hub arrive as { error: { code, message } } and
 * leave as "rollcall: CODE: message" on stderr (cli/main.ts picks the exit
 * code: 2 when the hub refused the request as malformed, HTTP 400, else 1).
 */
export class ApiError extends Error {
  /**
   * `details`: the error's other fields as the hub sent them (a DEVICE_OFFLINE's lastSeen, a COMMAND_TIMEOUT's id);
   * `status`: the HTTP status, 0 for an error found on this side.
   */
  constructor(readonly code: string, message: string, readonly details: Readonly<Record<string, unknown>> = {}, readonly status = 0) { super(message) }
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
    throw new ApiError(code ?? `HTTP_${res.status}`, message ?? text.slice(0, 200), details, res.status)
  }
  return json as T
}
