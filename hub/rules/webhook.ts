import { createHmac } from 'node:crypto'

/**
 * A rule's webhook: an HTTP POST of the firing as JSON, signed so the
 * receiver can trust it, retried with back-off until it is taken or given up.
 *
 *   X-Rollcall-Delivery   "<firing>.<action>": the same on every try and after
 *                         a hub restart, so a receiver can drop a repeat
 *   X-Rollcall-Timestamp  ms since the epoch when this try was signed
 *   X-Rollcall-Signature  "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body),
 *                         when the rule gives a secret
 *
 * A 2xx takes it. 408, 425, 429, a 5xx, a timeout or a network error is
 * tried again after 1 s, 2 s, 4 s ... (at most a minute apart) up to
 * `maxAttempts` tries; any other answer (a 4xx, a redirect, which is not
 * followed) gives up at once: trying again would get the same. Given up, the
 * call goes to the dead letters with the last answer. The decisions are pure
 * (test/hub.rule-webhook.test.ts).
 */

export const WEBHOOK_DEFAULTS = { maxAttempts: 5, timeoutMs: 10_000 } as const
const BACKOFF_BASE_MS = 1_000
const BACKOFF_MAX_MS = 60_000

/** What one try came to: an HTTP status, or no answer (a timeout, a refused connection). */
export type TryResult = { readonly status: number } | { readonly error: string }

export type WebhookVerdict = 'done' | 'retry' | 'give-up'

export function verdictOf(r: TryResult): WebhookVerdict {
  if ('error' in r) return 'retry'
  if (r.status >= 200 && r.status < 300) return 'done'
  if (r.status === 408 || r.status === 425 || r.status === 429 || r.status >= 500) return 'retry'
  return 'give-up'
}

/** How long to wait after try `attempt` (1-based) failed. */
export function backoffMs(attempt: number): number {
  return Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1), BACKOFF_MAX_MS)
}

export function signature(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}

/** One try: POSTs `body` to `url` within `timeoutMs`; never throws. */
export async function postOnce(url: string, body: string, delivery: string, secret: string | undefined, now: number, timeoutMs: number): Promise<TryResult> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'rollcall-hub',
    'x-rollcall-delivery': delivery,
    'x-rollcall-timestamp': String(now),
  }
  if (secret !== undefined) headers['x-rollcall-signature'] = signature(secret, now, body)
  try {
    const res = await fetch(url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) })
    // The body is not read: what matters is the status. Cancelling it frees the connection.
    await res.body?.cancel()
    return { status: res.status }
  } catch (err) {
    const e = err as { name?: string; message?: string; cause?: { code?: string } }
    return { error: e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.cause?.code ?? e.message ?? String(err)) }
  }
}
