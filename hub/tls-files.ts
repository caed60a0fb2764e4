import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import { createSecureContext, type SecureContextOptions } from 'node:tls'
import type { Logger } from '../common/logger.js'

/**
 * The hub's certificate and key, read from PEM files, checked, and read
 * again when they are replaced (issue #12: renewals without a restart).
 *
 * A reload reads the files into a new context and applies it to every TLS
 * listener (MQTT and HTTPS) with setSecureContext: connections from then on
 * get the new certificate, open ones keep theirs. A new pair that cannot be
 * used (unreadable, not PEM, key not matching the certificate) is refused
 * and the old one keeps serving; the error is logged once per distinct
 * problem, not once per file event, and a later good pair clears it.
 */

export interface TlsFilePaths { readonly cert: string; readonly key: string; readonly ca?: string | undefined }

export interface LoadedTls {
  readonly context: SecureContextOptions
  /** Of the leaf certificate, as clients see it (getPeerCertificate().fingerprint256). */
  readonly fingerprint256: string
  readonly serialNumber: string
  readonly validTo: string
  readonly subjectAltName: string | undefined
  /** The key file's mode lets group or others read it. */
  readonly keyReadableByOthers: boolean
}

/** The certificate is past its notAfter now: every client that verifies it will refuse it. */
export function isExpired(tls: LoadedTls, nowMs: number): boolean {
  return Date.parse(tls.validTo) <= nowMs
}

/** What should worry the operator about a pair that loads: one line each, none when all is well. */
export function tlsWarnings(tls: LoadedTls, paths: TlsFilePaths, nowMs: number): string[] {
  const out: string[] = []
  if (isExpired(tls, nowMs)) out.push(`the certificate ${paths.cert} expired on ${tls.validTo}: devices refuse it; renew it (rollcall tls renew, or your CA) and the hub serves the new one without a restart`)
  if (tls.keyReadableByOthers) out.push(`the private key ${paths.key} can be read by other users: chmod 600 ${paths.key}`)
  return out
}

export class TlsFilesError extends Error {
  override readonly name = 'TlsFilesError'
  readonly code = 'TLS_FILES'
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new TlsFilesError(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

/** Reads and checks the files; throws TlsFilesError with a message naming the file and what is wrong. */
export function loadTlsFiles(paths: TlsFilePaths): LoadedTls {
  const certPem = read(paths.cert, 'certificate (--tls-cert)')
  const key = read(paths.key, 'private key (--tls-key)')
  // The chain goes after the leaf in `cert`: that is what the server sends. (`ca` would only be used to check client certificates.)
  const cert = paths.ca === undefined ? certPem : Buffer.concat([certPem, Buffer.from('\n'), read(paths.ca, 'CA chain (--tls-ca)')])
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(certPem)
  } catch (err) {
    throw new TlsFilesError(`${paths.cert} is not a PEM certificate: ${(err as Error).message}`)
  }
  if (!leaf.checkPrivateKey(keyObject(key, paths.key))) {
    throw new TlsFilesError(`the private key ${paths.key} does not belong to the certificate ${paths.cert}: give the key that was made with it`)
  }
  const context: SecureContextOptions = { cert, key }
  try {
    createSecureContext(context)
  } catch (err) {
    throw new TlsFilesError(`cannot use ${paths.cert} with ${paths.key}: ${(err as Error).message}`)
  }
  const keyReadableByOthers = (statSync(paths.key).mode & 0o077) !== 0
  return { context, fingerprint256: leaf.fingerprint256, serialNumber: leaf.serialNumber, validTo: leaf.validTo, subjectAltName: leaf.subjectAltName, keyReadableByOthers }
}

function keyObject(pem: Buffer, path: string): KeyObject {
  try {
    return createPrivateKey(pem)
  } catch (err) {
    throw new TlsFilesError(`${path} is not a PEM private key (an encrypted key is not supported): ${(err as Error).message}`)
  }
}

export type ReloadResult = { readonly ok: true; readonly tls: LoadedTls } | { readonly ok: false; readonly error: string }

export interface TlsReloader {
  /** Reads the files and applies them; on failure the old certificate keeps serving. */
  reload(trigger: string): ReloadResult
  /** Starts watching the files' directories (a renewal usually renames new files into place, which a watch on the old file would miss). */
  watch(): void
  close(): void
}

export function createTlsReloader(opts: {
  readonly paths: TlsFilePaths
  readonly current: LoadedTls
  readonly apply: (context: SecureContextOptions) => void
  /** Told of each pair taken. */
  readonly reloaded?: (tls: LoadedTls) => void
  readonly logger: Logger
  /** Events come in bursts (key and certificate, temp file and rename): one reload after they settle. */
  readonly debounceMs?: number
}): TlsReloader {
  const log = opts.logger
  let current = opts.current
  let lastError: string | undefined
  const watchers: FSWatcher[] = []
  let timer: NodeJS.Timeout | undefined

  function reload(trigger: string): ReloadResult {
    let next: LoadedTls
    try {
      next = loadTlsFiles(opts.paths)
      // An expired pair would make every device refuse the hub: keep the one that works.
      if (isExpired(next, Date.now())) throw new TlsFilesError(`the new certificate ${opts.paths.cert} expired on ${next.validTo}`)
      opts.apply(next.context)
    } catch (err) {
      const error = (err as Error).message
      if (error !== lastError) log.error({ trigger, err: error, serving: current.fingerprint256 }, 'new TLS certificate refused; the old one keeps serving')
      lastError = error
      return { ok: false, error }
    }
    lastError = undefined
    const changed = next.fingerprint256 !== current.fingerprint256
    current = next
    opts.reloaded?.(next)
    for (const w of tlsWarnings(next, opts.paths, Date.now())) log.warn({ trigger }, w)
    log.info({ trigger, changed, fingerprint256: next.fingerprint256, serialNumber: next.serialNumber, validTo: next.validTo }, changed ? 'TLS certificate reloaded' : 'TLS certificate read again, unchanged')
    return { ok: true, tls: next }
  }

  return {
    reload,
    watch() {
      const files = [opts.paths.cert, opts.paths.key, ...(opts.paths.ca ? [opts.paths.ca] : [])]
      const byDir = new Map<string, Set<string>>()
      for (const f of files) {
        const names = byDir.get(dirname(f)) ?? new Set<string>()
        names.add(basename(f))
        byDir.set(dirname(f), names)
      }
      for (const [dir, names] of byDir) {
        try {
          const w = watch(dir, { persistent: false }, (_event, name) => {
            if (name !== null && !names.has(name.toString())) return
            clearTimeout(timer)
            timer = setTimeout(() => { reload('file change') }, opts.debounceMs ?? 500)
            timer.unref()
          })
          w.on('error', (err) => log.warn({ err, dir }, 'cannot watch the TLS files any longer; reload them with SIGHUP'))
          watchers.push(w)
        } catch (err) {
          log.warn({ err, dir }, 'cannot watch the TLS files; reload them with SIGHUP after a renewal')
        }
      }
    },
    close() {
      clearTimeout(timer)
      for (const w of watchers) w.close()
      watchers.length = 0
    },
  }
}
