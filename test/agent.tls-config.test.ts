import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { copyFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { resolveAgentConfig } from '../agent/config.js'
import { loadAgentConfig } from '../agent/config-sources.js'
import { diagnoseTlsError, TLS_CAUSES, tlsConnectOptions, type TlsContext } from '../agent/hub-tls.js'
import { issuesOf } from './agent.support.js'
import { makeTestPki, type TestPki } from './support/tls.js'

/**
 * The agent's TLS keys (issue #12, part 1): refused at start-up when they
 * cannot work (a pinned CA with a plaintext URL, a server certificate for a
 * CA, half a client pair), resolved like the other paths; and the pure
 * naming of handshake failures, as a table.
 */

const base = { id: 'dev-1', token: 't' }
let pki: TestPki
beforeAll(() => { pki = makeTestPki() })
afterAll(() => { pki.remove() })

describe('agent TLS config', () => {
  it('takes a pinned CA with an mqtts:// URL, from --ca or the file, a relative caFile relative to the config file', () => {
    const c = loadAgentConfig({ flags: { ...base, hub: 'mqtts://127.0.0.1:8883', ca: pki.caCert } })
    expect(c.caFile).toBe(pki.caCert)
    const configPath = join(pki.dir, 'agent.json')
    writeFileSync(configPath, JSON.stringify({ hub: 'mqtts://hub.example:8883', caFile: 'ca.pem' }))
    expect(loadAgentConfig({ flags: { ...base, config: configPath } }).caFile).toBe(pki.caCert)
    // No caFile: the system's CAs (a hub with a public certificate).
    expect(resolveAgentConfig({ ...base, hub: 'mqtts://hub.example' }).caFile).toBeUndefined()
  })

  it('refuses a pinned CA with an mqtt:// URL, saying to use mqtts://', () => {
    const issues = issuesOf(() => loadAgentConfig({ flags: { ...base, hub: 'mqtt://127.0.0.1:1883', ca: pki.caCert } }))
    expect(issues).toHaveLength(1)
    expect(issues[0]).toMatch(/^caFile is set but hub .* is plaintext MQTT: use mqtts:\/\//)
  })

  it.each([
    ['a missing file', () => join(pki.dir, 'nope.pem'), 'does not exist'],
    ['a file with no certificate', () => pki.hubKey, 'holds no PEM certificate'],
    ['the hub certificate instead of the CA', () => pki.hubCert, 'is a server certificate'],
  ])('refuses as caFile %s', (_name, path, expected) => {
    const issues = issuesOf(() => resolveAgentConfig({ ...base, hub: 'mqtts://127.0.0.1:8883', caFile: path() }))
    expect(issues.join('\n')).toMatch(new RegExp(`^caFile: .*${expected}`))
  })

  it('takes a client certificate with its key, and refuses half a pair or a key of another certificate', () => {
    const other = pki.issue('other', ['127.0.0.1'])
    const hub = 'mqtts://127.0.0.1:8883'
    expect(resolveAgentConfig({ ...base, hub, certFile: pki.hubCert, keyFile: pki.hubKey }).certFile).toBe(pki.hubCert)
    expect(issuesOf(() => resolveAgentConfig({ ...base, hub, certFile: pki.hubCert }))[0]).toMatch(/^keyFile: required with certFile/)
    expect(issuesOf(() => resolveAgentConfig({ ...base, hub, certFile: pki.hubCert, keyFile: other.key }))[0]).toMatch(/^keyFile: .* is not the private key of certFile/)
  })

  it('reads the files at every attempt, so a replaced file is used without a restart', () => {
    const ca = join(pki.dir, 'pinned.pem')
    copyFileSync(pki.caCert, ca)
    const files = { caFile: ca, certFile: undefined, keyFile: undefined }
    const first = tlsConnectOptions('mqtts://hub.example:8883', files)
    expect(first).toMatchObject({ options: { rejectUnauthorized: true, servername: 'hub.example' } })
    writeFileSync(ca, 'replaced')
    expect(tlsConnectOptions('mqtts://hub.example:8883', files)).toMatchObject({ options: { ca: 'replaced' } })
    // An address is matched against the IP SANs, and sent without SNI.
    const byIp = tlsConnectOptions('mqtts://127.0.0.1:8883', files)
    expect('options' in byIp && byIp.options?.servername).toBeUndefined()
    expect(tlsConnectOptions('mqtt://127.0.0.1:1883', files)).toEqual({ options: undefined })
  })
})

describe('naming a failed TLS connection', () => {
  const ctx: TlsContext = { hub: 'mqtts://hub.example:8883', caFile: '/etc/rollcall/ca.pem', hasClientCert: false, now: Date.UTC(2026, 0, 1) }
  it.each([
    ['an unknown issuer', { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'unable to verify the first certificate' }, TLS_CAUSES.UNTRUSTED, /is caFile the ca.pem from `rollcall tls init`/],
    ['a self-signed certificate', { code: 'DEPTH_ZERO_SELF_SIGNED_CERT', message: 'self-signed certificate' }, TLS_CAUSES.UNTRUSTED, /caFile \/etc\/rollcall\/ca.pem/],
    ['another name', { code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: 'Hostname/IP does not match', cert: { subjectaltname: 'DNS:other.example' } }, TLS_CAUSES.NAME_MISMATCH, /DNS:other.example.*rollcall tls renew --host hub.example/],
    ['an expired certificate', { code: 'CERT_HAS_EXPIRED', message: 'certificate has expired' }, TLS_CAUSES.EXPIRED, /clock \(2026-01-01T00:00:00.000Z\): renew it on the hub/],
    ['a clock in the past', { code: 'CERT_NOT_YET_VALID', message: 'certificate is not yet valid' }, TLS_CAUSES.NOT_YET_VALID, /clock/],
    ['a plaintext port', { code: 'ERR_SSL_WRONG_VERSION_NUMBER', message: 'wrong version number' }, TLS_CAUSES.NOT_TLS, /TLS port/],
    ['a reset during the handshake', { code: 'ECONNRESET', message: 'Client network socket disconnected before secure TLS connection was established' }, TLS_CAUSES.NOT_TLS, /TLS port/],
    ['a client certificate asked for', { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', message: 'certificate required' }, TLS_CAUSES.CLIENT_CERT, /set certFile and keyFile/],
  ])('%s', (_name, err, cause, hint) => {
    const d = diagnoseTlsError(err, ctx)
    expect(d?.cause).toBe(cause)
    expect(d?.hint).toMatch(hint)
  })

  it('says so without a pinned CA, and leaves errors that are not about TLS to the link', () => {
    expect(diagnoseTlsError({ code: 'SELF_SIGNED_CERT_IN_CHAIN', message: 'x' }, { ...ctx, caFile: undefined })?.hint).toMatch(/set caFile \(or --ca\)/)
    expect(diagnoseTlsError({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }, ctx)).toBeUndefined()
    expect(diagnoseTlsError({ code: 'ECONNRESET', message: 'read ECONNRESET' }, ctx)).toBeUndefined()
    expect(diagnoseTlsError({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'x' }, { ...ctx, hub: 'mqtt://hub.example' })).toBeUndefined()
  })
})
