import { adminRequest, CaFileError, type AdminReply } from '../common/admin-http.js'
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
  let res: AdminReply<unknown>
  try {
    res = await adminRequest(target, method, path, body, waitMs)
  } catch (err) {
    if (err instanceof CaFileError) throw new ApiError('TLS', `cannot read --ca ${err.path} (${err.code}): give the hub's ca.pem`)
    const tls = tlsFailure(err, target)
    if (tls !== undefined) throw new ApiError('TLS', tls)
    throw new ApiError('UNAVAILABLE', `cannot reach the hub at ${target.api} (${(err as Error).message}); is it running? (--api or ROLLCALL_API)`)
  }
  if (res.status >= 200 && res.status < 300) return res.body as T
  const e = typeof res.body === 'object' && res.body !== null ? (res.body as { error?: { code?: string; message?: string } & Record<string, unknown> }).error : undefined
  const { code, message, ...details } = e ?? {}
  throw new ApiError(code ?? `HTTP_${res.status}`, message ?? (typeof res.body === 'string' ? res.body.slice(0, 200) : `HTTP ${res.status}`), details, res.status)
}

const UNTRUSTED = /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED)$/

/** What to do about a failed TLS connection to the API, or undefined when it was not about TLS. fetch puts the socket's error in `cause`. */
export function tlsFailure(err: unknown, target: AdminTarget): string | undefined {
  const cause = (err as { cause?: { code?: unknown; message?: string; cert?: { subjectaltname?: string } } }).cause
  const code = typeof cause?.code === 'string' ? cause.code : ''
  if (UNTRUSTED.test(code)) {
    return target.ca === undefined
      ? `the hub's certificate at ${target.api} is not signed by a CA this system trusts (${code}): pass --ca with the hub's ca.pem (DATA/tls/ca.pem after \`rollcall tls init\`), or set ROLLCALL_CA`
      : `the hub's certificate at ${target.api} is not signed by the CA in --ca ${target.ca} (${code}): is it the ca.pem of this hub?`
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `the hub's certificate holds ${cause?.cert?.subjectaltname ?? 'other names'}, not the host of ${target.api}: use one of those names in --api`
  }
  if (code === 'CERT_HAS_EXPIRED') return `the hub's certificate at ${target.api} has expired (or this machine's clock is wrong): renew it on the hub (rollcall tls renew)`
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG/.test(code)) return `${target.api} does not speak HTTPS: the hub serves HTTP there; use http:// in --api`
  return undefined
}
