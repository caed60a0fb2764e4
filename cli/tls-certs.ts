import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { isIP } from 'node:net'
import forge from 'node-forge'

/**
 * A private certificate authority and the hub's server certificate (issue
 * #12, part 1: "a way to get going without a public CA"). node-forge builds
 * and signs the X.509 structures; Node's crypto makes the RSA keys. Nothing
 * here touches files: cli/tls-init.ts writes what this returns, and the tests
 * (test/support/tls.ts) use it for their CAs.
 *
 * RSA 2048 with SHA-256: what every TLS client we meet accepts (Node,
 * Mosquitto/OpenSSL, curl, browsers once the CA is imported).
 */

export interface Pem { readonly certPem: string; readonly keyPem: string }

/** Names split into the two kinds of subjectAltName: DNS names and IP addresses. */
export interface AltNames { readonly dns: readonly string[]; readonly ip: readonly string[] }

/** The CA lives long (devices pin it); the hub certificate is renewed from it (`rollcall tls renew`). */
export const CA_VALID_DAYS = 3650
export const HUB_VALID_DAYS = 825
/** notBefore is set back a little, so a device whose clock runs slow accepts a certificate made a moment ago. */
const BACKDATE_MS = 5 * 60_000
const DAY_MS = 86_400_000

// A DNS name (RFC 1123 labels), optionally a wildcard in the leftmost label.
const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i

/**
 * Sorts the names given on the command line into DNS and IP SANs, keeping
 * the order given and dropping repeats. Returns an error message for the
 * first name that is neither (nothing is generated then).
 */
export function altNamesFor(hosts: readonly string[]): AltNames | { error: string } {
  const dns: string[] = []
  const ip: string[] = []
  for (const raw of hosts) {
    const h = raw.trim()
    // [::1] is how URLs write an IPv6 address; the certificate holds the bare address.
    const bare = h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h
    if (isIP(bare) !== 0) {
      if (!ip.includes(bare)) ip.push(bare)
    } else if (h.length <= 253 && DNS_NAME.test(h)) {
      const lower = h.toLowerCase()
      if (!dns.includes(lower)) dns.push(lower)
    } else {
      return { error: `"${raw}" is neither a host name (letters, digits, dots, hyphens, e.g. hub.example.org) nor an IP address (e.g. 192.168.1.10)` }
    }
  }
  if (dns.length === 0 && ip.length === 0) return { error: 'give at least one name or address for the hub certificate: --host NAME' }
  return { dns, ip }
}

/** A positive 128-bit serial number; random, so two certificates never share one (RFC 5280 4.1.2.2). */
function serialNumber(): string {
  const b = randomBytes(16)
  b[0] = b[0]! & 0x7f | 0x10 // positive, and no leading zero byte to strip
  return b.toString('hex')
}

function rsaKeys(): { forgeKeys: { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey }; keyPem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  const forgePrivate = forge.pki.privateKeyFromPem(privateKey)
  return { forgeKeys: { privateKey: forgePrivate, publicKey: forge.pki.setRsaPublicKey(forgePrivate.n, forgePrivate.e) }, keyPem: privateKey }
}

function validity(cert: forge.pki.Certificate, now: Date, days: number): void {
  cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS)
  cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS)
}

/** A self-signed CA that may sign server certificates only (pathLen 0: no intermediates under it). */
export function createCa(opts: { commonName: string; now?: Date; days?: number }): Pem {
  const { forgeKeys, keyPem } = rsaKeys()
  const cert = forge.pki.createCertificate()
  cert.publicKey = forgeKeys.publicKey
  cert.serialNumber = serialNumber()
  validity(cert, opts.now ?? new Date(), opts.days ?? CA_VALID_DAYS)
  const subject = [{ name: 'commonName', value: opts.commonName }, { name: 'organizationName', value: 'rollcall' }]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  cert.sign(forgeKeys.privateKey, forge.md.sha256.create())
  return { certPem: forge.pki.certificateToPem(cert), keyPem }
}

/** A server certificate for `names`, signed by `ca`. The first name is also the subject's common name. */
export function issueServerCert(ca: Pem, names: AltNames, opts: { now?: Date; days?: number } = {}): Pem {
  const caCert = forge.pki.certificateFromPem(ca.certPem)
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem)
  const { forgeKeys, keyPem } = rsaKeys()
  const cert = forge.pki.createCertificate()
  cert.publicKey = forgeKeys.publicKey
  cert.serialNumber = serialNumber()
  validity(cert, opts.now ?? new Date(), opts.days ?? HUB_VALID_DAYS)
  cert.setSubject([{ name: 'commonName', value: names.dns[0] ?? names.ip[0]! }, { name: 'organizationName', value: 'rollcall' }])
  cert.setIssuer(caCert.subject.attributes)
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    // Clients check the name they dialled against these, not the CN (RFC 6125 6.4.4).
    { name: 'subjectAltName', altNames: [...names.dns.map((value) => ({ type: 2, value })), ...names.ip.map((ip) => ({ type: 7, ip }))] },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ])
  cert.sign(caKey, forge.md.sha256.create())
  return { certPem: forge.pki.certificateToPem(cert), keyPem }
}

/** The DNS and IP subjectAltNames of a PEM certificate (for `rollcall tls renew`, which keeps them). */
export function altNamesOf(certPem: string): AltNames {
  const ext: { altNames?: { type: number; value?: string; ip?: string }[] } | undefined = forge.pki.certificateFromPem(certPem).getExtension('subjectAltName')
  const dns: string[] = []
  const ip: string[] = []
  for (const n of ext?.altNames ?? []) {
    if (n.type === 2 && n.value) dns.push(n.value)
    if (n.type === 7 && n.ip) ip.push(n.ip)
  }
  return { dns, ip }
}
