import { afterEach, describe, expect, it } from 'vitest'
import { execFile, spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { connect, createServer, type Server } from 'node:tls'
import { altNamesFor } from '../cli/tls-certs.js'
import { tlsInit, tlsPaths, tlsRenew } from '../cli/tls-init.js'
import { tempDir } from './support/hub.js'
import { CLI } from './support/procs.js'
import { makeTestPki, makeUnrelatedPki, type TestPki } from './support/tls.js'

/**
 * `rollcall tls init` / `renew` (issue #12, part 1): a private CA and a hub
 * certificate that real TLS clients (Node's tls, OpenSSL) accept, for the
 * names given, with private files that only the owner can read.
 */

const cleanups: (() => void | Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

function rollcall(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

async function tlsServer(cert: string, key: string): Promise<{ port: number; server: Server }> {
  const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (s) => s.end())
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())))
  return { port: (server.address() as { port: number }).port, server }
}

/** A real TLS handshake against 127.0.0.1: the peer certificate's fingerprint, or the verification error's code. */
function handshake(port: number, ca: string, servername?: string): Promise<{ ok: true; fingerprint: string } | { ok: false; code: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ca: readFileSync(ca), ...(servername ? { servername } : {}) })
    s.setTimeout(20_000, () => s.destroy(new Error('handshake hang')))
    s.once('secureConnect', () => {
      resolve({ ok: true, fingerprint: s.getPeerCertificate().fingerprint256 })
      s.end()
    })
    s.once('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code ?? err.message }))
  })
}

function pki(hosts?: readonly string[]): TestPki {
  const p = makeTestPki(hosts)
  cleanups.push(p.remove)
  return p
}

describe('the names a hub certificate is for', () => {
  it.each<[string, string[], object | string]>([
    ['names and addresses sorted into DNS and IP', ['hub.lan', '192.168.1.10', 'Hub.Example.org'], { dns: ['hub.lan', 'hub.example.org'], ip: ['192.168.1.10'] }],
    ['an IPv6 address, bare or in brackets', ['::1', '[fd00::2]'], { dns: [], ip: ['::1', 'fd00::2'] }],
    ['repeats dropped, order kept', ['b.lan', 'a.lan', 'B.lan', '10.0.0.1', '10.0.0.1'], { dns: ['b.lan', 'a.lan'], ip: ['10.0.0.1'] }],
    ['a wildcard in the first label', ['*.hubs.lan'], { dns: ['*.hubs.lan'], ip: [] }],
    ['a space', ['hub lan'], '"hub lan" is neither a host name'],
    ['a URL', ['mqtts://hub.lan'], '"mqtts://hub.lan" is neither'],
    ['nothing', [], '--host NAME'],
  ])('%s', (_what, hosts, expected) => {
    const got = altNamesFor(hosts)
    if (typeof expected === 'string') expect('error' in got ? got.error : got).toContain(expected)
    else expect(got).toEqual(expected)
  })
})

describe('rollcall tls init', () => {
  it('writes a CA and a hub certificate that Node and OpenSSL verify, with private files', async () => {
    const data = tempDir('tls-init')
    cleanups.push(data.remove)
    const r = await rollcall(['tls', 'init', '--data', data.dir, '--host', 'hub.lan', '--host', '192.168.1.10'])
    expect(r.code, r.stderr).toBe(0)
    const paths = tlsPaths(data.dir)
    // The output says what to copy to the devices and how to start the hub.
    expect(r.stdout).toContain(`copy ${paths.caCert}`)
    expect(r.stdout).toContain(`--tls-cert ${paths.hubCert} --tls-key ${paths.hubKey}`)

    expect(statSync(paths.dir).mode & 0o777).toBe(0o700)
    expect(statSync(paths.caKey).mode & 0o777).toBe(0o600)
    expect(statSync(paths.hubKey).mode & 0o777).toBe(0o600)

    // What the user gave, plus localhost and 127.0.0.1 (documented in --help).
    const cert = new X509Certificate(readFileSync(paths.hubCert))
    expect(cert.subjectAltName).toBe('DNS:hub.lan, DNS:localhost, IP Address:192.168.1.10, IP Address:127.0.0.1')
    expect(cert.checkIssued(new X509Certificate(readFileSync(paths.caCert)))).toBe(true)
    expect(new X509Certificate(readFileSync(paths.caCert)).ca).toBe(true)
    expect(cert.ca).toBe(false)

    const openssl = spawnSync('openssl', ['verify', '-CAfile', paths.caCert, paths.hubCert], { encoding: 'utf8', timeout: 20_000 })
    expect(openssl.stdout + openssl.stderr).toContain(`${paths.hubCert}: OK`)
    expect(openssl.status).toBe(0)
    // The name checks of OpenSSL's verify as well: a client dialling hub.lan or 192.168.1.10 accepts it, one dialling other.lan does not.
    expect(spawnSync('openssl', ['verify', '-CAfile', paths.caCert, '-verify_hostname', 'hub.lan', paths.hubCert]).status).toBe(0)
    expect(spawnSync('openssl', ['verify', '-CAfile', paths.caCert, '-verify_ip', '192.168.1.10', paths.hubCert]).status).toBe(0)
    expect(spawnSync('openssl', ['verify', '-CAfile', paths.caCert, '-verify_hostname', 'other.lan', paths.hubCert]).status).not.toBe(0)

    const { port } = await tlsServer(paths.hubCert, paths.hubKey)
    expect(await handshake(port, paths.caCert)).toMatchObject({ ok: true, fingerprint: cert.fingerprint256 })
    expect(await handshake(port, paths.caCert, 'hub.lan')).toMatchObject({ ok: true })
  })

  it('refuses to overwrite without --force, and says how to renew instead', async () => {
    const data = tempDir('tls-init')
    cleanups.push(data.remove)
    expect((await rollcall(['tls', 'init', '--data', data.dir, '--host', 'hub.lan'])).code).toBe(0)
    const paths = tlsPaths(data.dir)
    const before = readFileSync(paths.caCert, 'utf8')
    const again = await rollcall(['tls', 'init', '--data', data.dir, '--host', 'hub.lan'])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('already exist')
    expect(again.stderr).toContain('rollcall tls renew')
    expect(again.stderr).toContain('--force')
    expect(readFileSync(paths.caCert, 'utf8')).toBe(before)

    const forced = await rollcall(['tls', 'init', '--data', data.dir, '--host', 'hub.lan', '--force'])
    expect(forced.code, forced.stderr).toBe(0)
    expect(readFileSync(paths.caCert, 'utf8')).not.toBe(before)
  })

  it('refuses a host that is neither a name nor an address, as a usage error, and writes nothing', async () => {
    const data = tempDir('tls-init')
    cleanups.push(data.remove)
    const r = await rollcall(['tls', 'init', '--data', data.dir, '--host', 'hub lan'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('"hub lan" is neither a host name')
    expect(existsSync(join(data.dir, 'tls'))).toBe(false)
  })

  it('renew: a new key and serial from the same CA, for the same names', () => {
    const data = tempDir('tls-renew')
    cleanups.push(data.remove)
    const first = tlsInit({ dataDir: data.dir, hosts: ['hub.lan'] })
    const old = new X509Certificate(readFileSync(first.paths.hubCert))
    const oldKey = readFileSync(first.paths.hubKey, 'utf8')
    tlsRenew({ dataDir: data.dir })
    const renewed = new X509Certificate(readFileSync(first.paths.hubCert))
    expect(renewed.serialNumber).not.toBe(old.serialNumber)
    expect(readFileSync(first.paths.hubKey, 'utf8')).not.toBe(oldKey)
    expect(renewed.subjectAltName).toBe(old.subjectAltName)
    expect(renewed.checkIssued(new X509Certificate(readFileSync(first.paths.caCert)))).toBe(true)
    expect(statSync(first.paths.hubKey).mode & 0o777).toBe(0o600)
  })
})

describe('test certificates (test/support/tls.ts)', () => {
  it('a client pinning another CA, or dialling a name the certificate lacks, is refused', async () => {
    const good = pki()
    const other = makeUnrelatedPki()
    cleanups.push(other.remove)
    const { port } = await tlsServer(good.hubCert, good.hubKey)
    expect(await handshake(port, good.caCert)).toMatchObject({ ok: true })
    expect(await handshake(port, other.caCert)).toEqual({ ok: false, code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })

    const wrongName = good.issue('elsewhere', ['other.example'])
    const { port: port2 } = await tlsServer(wrongName.cert, wrongName.key)
    expect(await handshake(port2, good.caCert)).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' })
  })
})
