import { X509Certificate } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { InvalidArgumentError } from './commander.js'
import { altNamesFor, altNamesOf, createCa, issueServerCert, type AltNames, type Pem } from './tls-certs.js'

/**
 * `rollcall tls init` and `rollcall tls renew`: the files of a private CA and
 * the hub's certificate under DATA/tls (issue #12, part 1).
 *
 *   ca.pem   the CA certificate: public, copied to every device and observer
 *   ca.key   the CA's private key: whoever has it can make certificates the
 *            devices trust, so it stays on the hub machine (0600)
 *   hub.pem  the hub's certificate, signed by the CA
 *   hub.key  the hub's private key (0600)
 *
 * The directory is 0700. `init` refuses to overwrite any of them without
 * --force (a new CA means every device needs the new ca.pem); `renew` issues
 * a new hub certificate from the existing CA, which devices already trust,
 * and a running hub picks it up without a restart.
 */

/** Always added to the names given, so the CLI, the dashboard and curl on the hub's own machine can reach it over TLS. */
export const LOCAL_NAMES = ['localhost', '127.0.0.1'] as const

export interface TlsPaths { readonly dir: string; readonly caCert: string; readonly caKey: string; readonly hubCert: string; readonly hubKey: string }

export function tlsPaths(dataDir: string): TlsPaths {
  const dir = join(resolve(dataDir), 'tls')
  return { dir, caCert: join(dir, 'ca.pem'), caKey: join(dir, 'ca.key'), hubCert: join(dir, 'hub.pem'), hubKey: join(dir, 'hub.key') }
}

export interface TlsInitResult { readonly paths: TlsPaths; readonly names: AltNames; readonly notAfter: Date }

function namesOrThrow(hosts: readonly string[]): AltNames {
  const names = altNamesFor([...hosts, ...LOCAL_NAMES])
  if ('error' in names) throw new InvalidArgumentError(`--host: ${names.error}`)
  return names
}

/**
 * Written beside and renamed into place, with its mode set before it holds
 * anything: a private key is never readable by others, not even for a moment,
 * and a hub watching the file never reads it half-written.
 */
function writeAtomic(path: string, content: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, '', { mode })
  chmodSync(tmp, mode) // the umask may have taken bits off the mode asked for; never adds any
  writeFileSync(tmp, content)
  renameSync(tmp, path)
}

function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
}

function writeServerPair(paths: TlsPaths, pair: Pem): void {
  // Key first: a hub reloading between the two renames sees a mismatched pair, refuses it and keeps serving the old one.
  writeAtomic(paths.hubKey, pair.keyPem, 0o600)
  writeAtomic(paths.hubCert, pair.certPem, 0o644)
}

export function tlsInit(opts: { dataDir: string; hosts: readonly string[]; force?: boolean; now?: Date }): TlsInitResult {
  const names = namesOrThrow(opts.hosts)
  const paths = tlsPaths(opts.dataDir)
  const existing = [paths.caCert, paths.caKey, paths.hubCert, paths.hubKey].filter((p) => existsSync(p))
  if (existing.length > 0 && opts.force !== true) {
    throw new Error(`${existing.join(', ')} already exist${existing.length === 1 ? 's' : ''}: to keep the CA and get a new hub certificate, run \`rollcall tls renew --data ${opts.dataDir}\`; to start over with a new CA (every device then needs the new ca.pem), add --force`)
  }
  const now = opts.now ?? new Date()
  const ca = createCa({ commonName: `rollcall private CA (${hostname()})`, now })
  const hub = issueServerCert(ca, names, { now })
  privateDir(paths.dir)
  writeAtomic(paths.caKey, ca.keyPem, 0o600)
  writeAtomic(paths.caCert, ca.certPem, 0o644)
  writeServerPair(paths, hub)
  return { paths, names, notAfter: notAfterOf(hub.certPem) }
}

/** A new hub certificate (new key, new serial) from the CA in DATA/tls; the names are the current certificate's unless given. */
export function tlsRenew(opts: { dataDir: string; hosts?: readonly string[]; now?: Date }): TlsInitResult {
  const paths = tlsPaths(opts.dataDir)
  for (const p of [paths.caCert, paths.caKey]) {
    if (!existsSync(p)) throw new Error(`${p} does not exist: make the CA first with \`rollcall tls init --data ${opts.dataDir} --host NAME\``)
  }
  const ca: Pem = { certPem: readFileSync(paths.caCert, 'utf8'), keyPem: readFileSync(paths.caKey, 'utf8') }
  let names: AltNames
  if (opts.hosts && opts.hosts.length > 0) {
    names = namesOrThrow(opts.hosts)
  } else if (existsSync(paths.hubCert)) {
    names = altNamesOf(readFileSync(paths.hubCert, 'utf8'))
  } else {
    throw new InvalidArgumentError(`${paths.hubCert} does not exist, so its names cannot be kept: give them with --host NAME`)
  }
  const hub = issueServerCert(ca, names, opts.now ? { now: opts.now } : {})
  privateDir(paths.dir)
  writeServerPair(paths, hub)
  return { paths, names, notAfter: notAfterOf(hub.certPem) }
}

/** node:crypto reads what forge wrote, independently of it. */
function notAfterOf(certPem: string): Date {
  return new Date(new X509Certificate(certPem).validTo)
}

function nameList(names: AltNames): string {
  return [...names.dns.map((n) => `DNS:${n}`), ...names.ip.map((n) => `IP:${n}`)].join(', ')
}

/** What `rollcall tls init` / `renew` prints: where the files are, what goes to the devices, and how to start the hub. */
export function tlsInitReport(r: TlsInitResult, dataDirArg: string, renewed: boolean): string {
  const first = r.names.dns.find((n) => !(LOCAL_NAMES as readonly string[]).includes(n)) ?? r.names.ip.find((n) => !(LOCAL_NAMES as readonly string[]).includes(n)) ?? '127.0.0.1'
  const host = first.includes(':') ? `[${first}]` : first
  const lines = renewed
    ? [
        `a new hub certificate in ${r.paths.hubCert} (key ${r.paths.hubKey}), from the CA in ${r.paths.caCert}`,
        `  names: ${nameList(r.names)}`,
        `  valid until ${r.notAfter.toISOString().slice(0, 10)}`,
        '  devices keep their ca.pem. A running hub serves the new certificate to the next connection',
        '  (it watches the files; `kill -HUP <hub pid>` reloads them at once).',
      ]
    : [
        `a private CA and a hub certificate in ${r.paths.dir} (mode 0700)`,
        `  hub certificate names: ${nameList(r.names)}`,
        `  valid until ${r.notAfter.toISOString().slice(0, 10)}; renew it with \`rollcall tls renew --data ${dataDirArg}\``,
        '',
        `copy ${r.paths.caCert} (and only that file) to every device and observer:`,
        `  agent:          rollcall agent --hub mqtts://${host}:8883 --ca ca.pem ...   ("caFile" in its config file)`,
        `  mosquitto_sub:  mosquitto_sub --cafile ca.pem -h ${first} -p 8883 ...`,
        `  curl:           curl --cacert ca.pem https://${host}:8080/healthz`,
        `keep ${r.paths.caKey} on this machine and secret: whoever has it can make certificates your devices trust.`,
        '',
        'start the hub with:',
        `  rollcall hub --data ${dataDirArg} --host 0.0.0.0 --tls-cert ${r.paths.hubCert} --tls-key ${r.paths.hubKey}`,
      ]
  return `${lines.join('\n')}\n`
}
