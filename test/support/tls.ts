import { X509Certificate } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { altNamesFor, createCa, issueServerCert, type Pem } from '../../cli/tls-certs.js'
import { tempDir } from './hub.js'

/**
 * Certificates for TLS tests, made the way `rollcall tls init` makes them
 * (cli/tls-certs.ts) and written as PEM files in a temp dir. Tests connect to
 * 127.0.0.1, so the default hub certificate carries the IP SAN 127.0.0.1
 * (and localhost).
 */
export interface TestPki {
  readonly dir: string
  /** The CA certificate: what a client pins (ca: / --cafile / --cacert). */
  readonly caCert: string
  readonly caKey: string
  /** A server certificate for `hosts`, signed by this CA, and its key. */
  readonly hubCert: string
  readonly hubKey: string
  /** Another server certificate from this CA, for `hosts`, written as NAME.pem / NAME.key. */
  readonly issue: (name: string, hosts: readonly string[]) => { cert: string; key: string }
  /** Replaces hub.pem/hub.key with a new pair from this CA (new key, new serial), as a renewal would; returns its SHA-256 fingerprint. */
  readonly renew: (hosts?: readonly string[]) => string
  readonly remove: () => void
}

export const LOOPBACK_NAMES = ['127.0.0.1', 'localhost'] as const

function names(hosts: readonly string[]) {
  const n = altNamesFor(hosts)
  if ('error' in n) throw new Error(n.error)
  return n
}

/** A private CA and a hub certificate for `hosts` in a temp dir. */
export function makeTestPki(hosts: readonly string[] = LOOPBACK_NAMES, label = 'test'): TestPki {
  const tmp = tempDir(`pki-${label}`)
  const ca: Pem = createCa({ commonName: `rollcall ${label} CA` })
  const write = (file: string, content: string) => {
    const p = join(tmp.dir, file)
    writeFileSync(p, content, { mode: 0o600 })
    return p
  }
  const caCert = write('ca.pem', ca.certPem)
  const caKey = write('ca.key', ca.keyPem)
  const issue = (name: string, h: readonly string[]) => {
    const pair = issueServerCert(ca, names(h))
    // Key first, as `rollcall tls renew` does: a watcher that fires between the two sees a mismatch, not a half file.
    const key = write(`${name}.key`, pair.keyPem)
    const cert = write(`${name}.pem`, pair.certPem)
    return { cert, key }
  }
  const hub = issue('hub', hosts)
  return {
    dir: tmp.dir,
    caCert,
    caKey,
    hubCert: hub.cert,
    hubKey: hub.key,
    issue,
    renew: (h = hosts) => fingerprintOfFile(issue('hub', h).cert),
    remove: tmp.remove,
  }
}

/** A second CA, unrelated to any other (for the wrong-CA tests), with its own certificate for `hosts`. */
export function makeUnrelatedPki(hosts: readonly string[] = LOOPBACK_NAMES): TestPki {
  return makeTestPki(hosts, 'unrelated')
}

export function fingerprintOfFile(certPath: string): string {
  return new X509Certificate(readFileSync(certPath)).fingerprint256
}
