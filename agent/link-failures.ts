import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { diagnoseTlsError, type HubTlsFiles, type TlsCause } from './hub-tls.js'

/**
 * How the link (agent/link.ts) reports a failed connection attempt: the
 * error named (a TLS cause from hub-tls.ts, a CONNACK code, the socket's
 * code) with what to check, kept as the link's last error until an attempt
 * succeeds, and logged at a loudness that suits a device retrying forever.
 *
 * Connection problems are what an operator most needs to see, but a device
 * retries forever: the first occurrence of each kind is a warning with a
 * hint, repeats are warned about at most once a minute. A TLS failure is
 * named (hub-tls.ts) and warned about once per cause and detail until a
 * connection succeeds: it does not mend by itself, but a renewal on the
 * hub or a new ca.pem may mend it, so the agent keeps retrying.
 */

export interface LinkError {
  /** A TLS cause (TLS_UNTRUSTED_CERT, ...), a CONNACK code, or the socket's code (ECONNREFUSED, ...). */
  readonly code: string
  readonly message: string
  readonly hint: string
  readonly at: number
}

export interface LinkFailuresOptions {
  readonly hub: string
  readonly tls?: HubTlsFiles
  readonly clock: Clock
  readonly logger: Logger
}

export class LinkFailures {
  private readonly options: LinkFailuresOptions
  private readonly log: Logger
  private lastErrorKey = ''
  private lastErrorAt = 0
  private last: LinkError | undefined
  /** TLS causes already warned about since the last good connection: a certificate problem is logged once per cause, not once a minute forever. */
  private readonly tlsReported = new Set<string>()

  constructor(options: LinkFailuresOptions) {
    this.options = options
    this.log = options.logger
  }

  /** Why the last attempt failed, until one succeeds. */
  get lastError(): LinkError | undefined {
    return this.last
  }

  /** An error of an attempt's client (socket, TLS handshake, CONNACK refusal). */
  clientError(err: Error, epoch: number): void {
    const code = (err as { code?: unknown }).code
    const tls = diagnoseTlsError(err, {
      hub: this.options.hub,
      caFile: this.options.tls?.caFile,
      hasClientCert: this.options.tls?.certFile !== undefined,
      now: this.options.clock.now(),
    })
    if (tls) {
      this.record({ code: tls.cause, message: tls.detail, hint: tls.hint }, epoch, `${tls.cause}:${tls.detail}`, tls.cause)
      return
    }
    this.record({ code: String(code), message: err.message, hint: connectionHint(code) }, epoch, `${String(code)}:${err.message}`)
  }

  /** A failure, under `key` (repeats of a key are quieter); `tlsCause` for a TLS one. */
  record(e: Omit<LinkError, 'at'>, epoch: number, key: string, tlsCause?: TlsCause): void {
    const now = this.options.clock.now()
    this.last = { ...e, at: now }
    const detail = { err: { message: e.message, code: e.code }, epoch, hub: this.options.hub }
    if (tlsCause !== undefined) {
      if (this.tlsReported.has(key)) {
        this.log.debug(detail, 'TLS connection failed (repeated)')
        return
      }
      this.tlsReported.add(key)
      this.log.error({ ...detail, hint: e.hint }, 'cannot connect to the hub over TLS; retrying with backoff')
      return
    }
    if (key === this.lastErrorKey && now - this.lastErrorAt < 60_000) {
      this.log.debug(detail, 'connection error (repeated)')
      return
    }
    this.lastErrorKey = key
    this.lastErrorAt = now
    this.log.warn({ ...detail, hint: e.hint }, 'cannot connect to the hub; retrying with backoff')
  }

  /** An attempt succeeded: no last error, and a TLS cause that comes back is warned about again. */
  connected(): void {
    this.last = undefined
    this.tlsReported.clear()
  }
}

/** What to check, by MQTT CONNACK code (3.1.1 §3.2.2.3) or socket error code. */
export function connectionHint(code: unknown): string {
  switch (code) {
    case 2: return 'the hub rejected the client id: it must be the device id, as registered'
    case 3: return 'the hub is busy (new connections are rate-limited); the agent keeps retrying'
    case 4: case 5: return 'the hub refused the credentials: check --id and the token (rollcall device add, or rollcall device token ID for a new one)'
    case 'ECONNREFUSED': return 'nothing listens there: is the hub running, and are the host and MQTT port right?'
    case 'ENOTFOUND': case 'EAI_AGAIN': return 'the hub\'s host name does not resolve'
    case 'ETIMEDOUT': case 'EHOSTUNREACH': case 'ENETUNREACH': return 'the hub is unreachable from here (network down or filtered)'
    default: return 'see the error; the agent keeps retrying with backoff'
  }
}
