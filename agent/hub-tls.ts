import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'

/**
 * TLS on the agent's link to the hub (issue #12, part 1). Three things live
 * here, so link.ts only asks:
 *
 *   1. the start-up checks of the config's TLS keys (fail fast: a caFile that
 *      is not a CA, an mqtt:// URL with a pinned CA, half a client pair);
 *   2. the TLS options of one connection attempt, read from the files each
 *      time, so a CA or client certificate replaced on disk is used on the
 *      next attempt without a restart;
 *   3. what a failed handshake means, in words that say what to fix: a pure
 *      function of the error, tested as a table.
 *
 * What is verified: with an mqtts:// URL the hub's chain must lead to the
 * pinned CA (caFile), or to one of the system's CAs when there is none, and
 * the certificate must hold the host dialled (a DNS name as a DNS SAN, an
 * address as an IP SAN; Node's tls.checkServerIdentity, RFC 6125). There is
 * no switch that turns either check off, and no fallback to mqtt://: the
 * scheme in the URL is the only thing that decides, and a pinned CA with an
 * mqtt:// URL is refused at start-up rather than silently unused.
 */

/** The config's TLS keys, paths resolved. */
export interface HubTlsFiles {
  readonly caFile: string | undefined
  readonly certFile: string | undefined
  readonly keyFile: string | undefined
}

export function isTlsUrl(hub: string): boolean {
  return hub.startsWith('mqtts:')
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** Start-up checks; each issue names its key and what to put there. Reads the files. */
export function tlsConfigIssues(hub: string | undefined, files: HubTlsFiles): string[] {
  const issues: string[] = []
  const tls = hub !== undefined && isTlsUrl(hub)
  if (hub !== undefined && !tls) {
    // Never a quiet downgrade: a pinned CA says the operator expects TLS, and the token would cross the network in clear.
    for (const key of ['caFile', 'certFile', 'keyFile'] as const) {
      if (files[key] !== undefined) {
        issues.push(`${key} is set but hub ${JSON.stringify(hub)} is plaintext MQTT: use mqtts://HOST:8883 (the hub's TLS port), or remove ${key}; the agent never sends its token in clear when TLS is configured`)
      }
    }
  }
  if (files.caFile !== undefined) {
    const problem = caProblem(files.caFile)
    if (problem !== undefined) issues.push(`caFile: ${problem}`)
  }
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    issues.push(`${files.certFile === undefined ? 'certFile' : 'keyFile'}: required with ${files.certFile === undefined ? 'keyFile' : 'certFile'} (a client certificate and its private key go together)`)
  } else if (files.certFile !== undefined && files.keyFile !== undefined) {
    const certText = readText(files.certFile)
    const keyText = readText(files.keyFile)
    if ('error' in certText) issues.push(`certFile: ${certText.error}`)
    if ('error' in keyText) issues.push(`keyFile: ${keyText.error}`)
    if ('text' in certText && 'text' in keyText) {
      try {
        const cert = new X509Certificate(certText.text)
        if (!cert.checkPrivateKey(createPrivateKey(keyText.text))) issues.push(`keyFile: ${files.keyFile} is not the private key of certFile ${files.certFile}`)
      } catch (err) {
        issues.push(`certFile/keyFile: cannot read the pair (${(err as Error).message}): give a PEM certificate and its PEM private key`)
      }
    }
  }
  return issues
}

function readText(path: string): { text: string } | { error: string } {
  try {
    return { text: readFileSync(path, 'utf8') }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return { error: code === 'ENOENT' ? `${path} does not exist` : `cannot read ${path} (${code ?? (err as Error).message})` }
  }
}

/** Why a file cannot be the pinned CA, or undefined when it can. */
function caProblem(path: string): string | undefined {
  const r = readText(path)
  if ('error' in r) return `${r.error}: copy the hub's ca.pem (DATA/tls/ca.pem after \`rollcall tls init\`) to the device`
  const blocks = r.text.match(PEM_CERT) ?? []
  if (blocks.length === 0) return `${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----"): give the hub's ca.pem`
  for (const block of blocks) {
    let cert: X509Certificate
    try {
      cert = new X509Certificate(block)
    } catch (err) {
      return `${path} holds a certificate that does not parse (${(err as Error).message})`
    }
    // A server certificate is no trust anchor (unless it signed itself): the usual slip is hub.pem for ca.pem.
    if (!cert.ca && cert.subject !== cert.issuer) {
      return `${path} is a server certificate (${cert.subject.replaceAll('\n', ', ')}), not a CA: give the CA's certificate, ca.pem from \`rollcall tls init\`, not hub.pem`
    }
  }
  return undefined
}

/** The TLS part of MQTT.js's options for one attempt; undefined for mqtt://. */
export interface TlsConnectOptions {
  readonly rejectUnauthorized: true
  readonly ca?: string
  readonly cert?: string
  readonly key?: string
  /** SNI and the name the certificate must hold; absent for an address (no SNI for IPs, RFC 6066 §3), which is then matched against IP SANs. */
  readonly servername?: string
}

/** Reads the files for one attempt. A read failure comes back as `error` (the agent logs it and retries). */
export function tlsConnectOptions(hub: string, files: HubTlsFiles): { options: TlsConnectOptions | undefined } | { error: string } {
  if (!isTlsUrl(hub)) return { options: undefined }
  const out: { rejectUnauthorized: true; ca?: string; cert?: string; key?: string; servername?: string } = { rejectUnauthorized: true }
  const host = hostOf(hub)
  if (isIP(host) === 0) out.servername = host
  for (const [key, path] of [['ca', files.caFile], ['cert', files.certFile], ['key', files.keyFile]] as const) {
    if (path === undefined) continue
    const r = readText(path)
    if ('error' in r) return { error: `${key === 'ca' ? 'caFile' : `${key}File`}: ${r.error}` }
    out[key] = r.text
  }
  return { options: out }
}

/** The host of a hub URL as the certificate must name it: brackets off an IPv6 address. */
export function hostOf(hub: string): string {
  const h = new URL(hub).hostname
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h
}

/** Stable causes of a failed TLS connection; tests and the agent's status match on these. */
export const TLS_CAUSES = {
  /** The chain does not lead to the pinned CA (or to a system CA). */
  UNTRUSTED: 'TLS_UNTRUSTED_CERT',
  /** The certificate does not hold the host dialled. */
  NAME_MISMATCH: 'TLS_NAME_MISMATCH',
  EXPIRED: 'TLS_CERT_EXPIRED',
  NOT_YET_VALID: 'TLS_CERT_NOT_YET_VALID',
  /** The other end does not speak TLS on that port (a plaintext MQTT port, most likely). */
  NOT_TLS: 'TLS_NOT_TLS',
  /** The hub wants a client certificate, or refused the one sent. */
  CLIENT_CERT: 'TLS_CLIENT_CERT_REFUSED',
  OTHER: 'TLS_HANDSHAKE_FAILED',
} as const
export type TlsCause = (typeof TLS_CAUSES)[keyof typeof TLS_CAUSES]

export interface TlsDiagnosis {
  readonly cause: TlsCause
  /** What the certificate or the handshake said, for the log; the same cause with other details is another log line. */
  readonly detail: string
  /** What to do about it. */
  readonly hint: string
}

/** What a failed attempt's error carries (Node's TLS errors, OpenSSL verify codes, socket errors). */
export interface TlsErrorLike {
  readonly code?: unknown
  readonly message: string
  /** ERR_TLS_CERT_ALTNAME_INVALID: the host checked, and the certificate with its SANs. */
  readonly host?: unknown
  readonly cert?: { readonly subjectaltname?: string; readonly subject?: { readonly CN?: string } } | undefined
}

export interface TlsContext {
  readonly hub: string
  readonly caFile: string | undefined
  readonly hasClientCert: boolean
  /** The device's clock, for the expiry hint (devices without a real-time clock boot in 1970). */
  readonly now: number
}

const UNTRUSTED_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'INVALID_CA', 'CERT_CHAIN_TOO_LONG', 'PATH_LENGTH_EXCEEDED',
])

/**
 * Names a TLS failure, or undefined when the error is not about TLS (a
 * refused TCP connection, a CONNACK code: link.ts's own hints cover those).
 * Pure.
 */
export function diagnoseTlsError(err: TlsErrorLike, ctx: TlsContext): TlsDiagnosis | undefined {
  if (!isTlsUrl(ctx.hub)) return undefined
  const code = typeof err.code === 'string' ? err.code : ''
  const host = hostOf(ctx.hub)
  if (UNTRUSTED_CODES.has(code)) {
    return {
      cause: TLS_CAUSES.UNTRUSTED,
      detail: `${code}: ${err.message}`,
      hint: ctx.caFile !== undefined
        ? `the hub's certificate is not signed by the CA in caFile ${ctx.caFile}: is caFile the ca.pem from \`rollcall tls init\` on this hub (DATA/tls/ca.pem)? A new CA (tls init --force) means every device needs the new ca.pem`
        : 'the hub\'s certificate is not signed by a CA this system trusts: for a hub with its own CA (`rollcall tls init`), copy its ca.pem here and set caFile (or --ca)',
    }
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = err.cert?.subjectaltname ?? (err.cert?.subject?.CN !== undefined ? `CN=${err.cert.subject.CN}` : 'no names')
    return {
      cause: TLS_CAUSES.NAME_MISMATCH,
      detail: `the certificate holds ${names}; the agent dialled ${host}`,
      hint: `the hub's certificate is not for "${host}": dial one of the names it holds (${names}) in hub, or issue the hub a certificate with this name (rollcall tls renew --host ${host})`,
    }
  }
  if (code === 'CERT_HAS_EXPIRED') {
    return {
      cause: TLS_CAUSES.EXPIRED,
      detail: `${code}: ${err.message}`,
      hint: `the hub's certificate has expired, by this device's clock (${new Date(ctx.now).toISOString()}): renew it on the hub (rollcall tls renew; a running hub picks it up), or set this device's clock if it is wrong; the agent keeps retrying`,
    }
  }
  if (code === 'CERT_NOT_YET_VALID') {
    return {
      cause: TLS_CAUSES.NOT_YET_VALID,
      detail: `${code}: ${err.message}`,
      hint: `the hub's certificate is not valid yet by this device's clock (${new Date(ctx.now).toISOString()}): the device's clock is probably wrong (no real-time clock, no NTP yet); the agent keeps retrying`,
    }
  }
  if (/CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|ACCESS_DENIED/.test(code)) {
    return {
      cause: TLS_CAUSES.CLIENT_CERT,
      detail: `${code}: ${err.message}`,
      hint: ctx.hasClientCert
        ? 'the hub refused this device\'s client certificate (certFile): is it signed by the CA the hub trusts for devices, and still valid?'
        : 'the hub asks for a client certificate: set certFile and keyFile in the agent config',
    }
  }
  if (/WRONG_VERSION_NUMBER|UNKNOWN_PROTOCOL|PACKET_LENGTH_TOO_LONG|RECORD_LAYER_FAILURE/.test(code) || (code === 'ECONNRESET' && /TLS/i.test(err.message))) {
    return {
      cause: TLS_CAUSES.NOT_TLS,
      detail: `${code}: ${err.message}`,
      hint: 'the other end does not speak TLS on that port: use the hub\'s TLS port (mqttTlsPort, 8883 by convention) in the mqtts:// URL, not its plaintext MQTT port',
    }
  }
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /^(CERT|UNABLE|X509)_/.test(code)) {
    return { cause: TLS_CAUSES.OTHER, detail: `${code}: ${err.message}`, hint: 'the TLS handshake with the hub failed; see the error' }
  }
  return undefined
}
