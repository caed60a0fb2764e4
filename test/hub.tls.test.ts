import { afterEach, describe, expect, it } from 'vitest'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import pino from 'pino'
import { encode, topics, type Sample, type TelemetryAck } from '../protocol/index.js'
import { loadHubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { altNamesFor, issueServerCert } from '../cli/tls-certs.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { fingerprintOfFile, makeTestPki, makeUnrelatedPki, type TestPki } from './support/tls.js'
import { within } from './support/leaks.js'

/**
 * The hub over TLS (issue #12): MQTT over TLS and HTTPS from PEM files, the
 * plaintext MQTT listener off unless asked for, TLS sockets through the same
 * guard and limits as TCP ones, a handshake that never finishes bounded, and
 * a certificate replaced on disk served to the next connection without a
 * restart, on both ports.
 */

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000f1'
const cleanups: (() => unknown)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

function pki(): TestPki {
  const p = makeTestPki()
  cleanups.push(p.remove)
  return p
}

async function tlsHub(p: TestPki, overrides: Parameters<typeof startTestHub>[0] = {}): Promise<TestHub> {
  const hub = await startTestHub({ tlsCert: p.hubCert, tlsKey: p.hubKey, ...overrides }, undefined, { ca: p.caCert })
  cleanups.push(() => hub.stop())
  return hub
}

/** The fingerprint of the certificate a fresh TLS connection to `port` is shown, pinning `ca`. */
function servedFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca), servername: 'localhost' })
    s.setTimeout(20_000, () => s.destroy(new Error('TLS handshake hang')))
    s.once('secureConnect', () => {
      resolve(s.getPeerCertificate().fingerprint256)
      s.destroy()
    })
    s.once('error', reject)
  })
}

/** Resolves when the socket closes, with how long that took. */
/** How long `s` took to close, or -1 when it was still open after `guardMs` (a hang guard). */
function closedWithin(s: Socket, guardMs: number): Promise<number> {
  const t0 = Date.now()
  return within(new Promise<number>((resolve) => s.once('close', () => resolve(Date.now() - t0))), guardMs, -1)
}

const samples = (n: number): Sample[] => Array.from({ length: n }, (_, i) => ({ seq: i + 1, ts: 1_700_000_000_000 + i * 1000, sensor: 'temp', value: 20 + i }))

describe('a hub serving TLS', () => {
  it('takes telemetry over mqtts from a client pinning its CA, answers HTTPS, and opens no plaintext listener', async () => {
    const p = pki()
    const hub = await tlsHub(p)
    expect(hub.running.mqttTlsPort).toBeGreaterThan(0)
    expect(hub.running.mqttPort).toBe(0)
    expect(hub.mqttUrl).toBe(`mqtts://127.0.0.1:${hub.running.mqttTlsPort}`)

    const token = await hub.addDevice('tls-dev')
    const dev = await connectDevice(hub.mqttUrl, 'tls-dev', token, { ca: readFileSync(p.caCert) })
    cleanups.push(() => dev.endAsync())
    const acks: TelemetryAck[] = []
    dev.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
    await dev.subscribeAsync(topics.telemetryAck('tls-dev'), { qos: 1 })
    await dev.publishAsync(topics.telemetry('tls-dev'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(5) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 5), 'ack up to 5 over TLS')

    // The admin API over HTTPS (support/hub.ts pins the CA).
    const r = await hub.api<{ samples: unknown[] }>('GET', '/api/devices/tls-dev/telemetry?since=0')
    expect(r.status).toBe(200)
    expect(r.body.samples).toHaveLength(5)
    const health = await hub.api<{ mqttPort: number; mqttTlsPort: number }>('GET', '/healthz')
    expect(health.body).toMatchObject({ mqttPort: 0, mqttTlsPort: hub.running.mqttTlsPort })

    // Plain HTTP on the HTTPS port gets no answer: nothing is served in clear.
    const plain = await new Promise<string>((resolve) => {
      const req = httpRequest(`http://127.0.0.1:${hub.running.httpPort}/healthz`, { timeout: 20_000 }, (res) => resolve(`status ${res.statusCode}`))
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
      req.on('timeout', () => req.destroy(new Error('timeout')))
      req.end()
    })
    expect(plain).toBe('ECONNRESET')
  })

  it('refuses a client pinning another CA, and counts the failed handshake', async () => {
    const p = pki()
    const other = makeUnrelatedPki()
    cleanups.push(other.remove)
    const hub = await tlsHub(p)
    const token = await hub.addDevice('tls-wrong')
    await expect(connectDevice(hub.mqttUrl, 'tls-wrong', token, { ca: readFileSync(other.caCert), connectTimeout: 20_000 }))
      .rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })
    await waitFor(() => hub.running.broker.stats().tlsHandshakesFailed >= 1, 'the failed handshake counted')
  })

  it('serves plaintext MQTT beside TLS only with allowPlaintext', async () => {
    const p = pki()
    const hub = await tlsHub(p, { allowPlaintext: true })
    expect(hub.running.mqttPort).toBeGreaterThan(0)
    const token = await hub.addDevice('both-dev')
    const plain = await connectDevice(`mqtt://127.0.0.1:${hub.running.mqttPort}`, 'both-dev', token)
    await plain.endAsync()
    const secure = await connectDevice(hub.mqttsUrl!, 'both-dev', token, { ca: readFileSync(p.caCert) })
    await secure.endAsync()
  })

  it('drops a socket that never starts its TLS handshake after tlsHandshakeTimeoutMs', async () => {
    const p = pki()
    const hub = await tlsHub(p, { tlsHandshakeTimeoutMs: 300 })
    const idle = netConnect({ host: '127.0.0.1', port: hub.running.mqttTlsPort! })
    idle.on('error', () => undefined)
    cleanups.push(() => idle.destroy())
    await new Promise<void>((r) => idle.once('connect', () => r()))
    // Hang guard only: the timeout is 300 ms; without one, Node's default is 120 s.
    const tookMs = await closedWithin(idle, 30_000)
    expect(tookMs).toBeGreaterThanOrEqual(0)
    await waitFor(() => hub.running.broker.stats().tlsHandshakesFailed >= 1, 'the timed-out handshake counted')
  })

  it('counts a TLS socket as pending from its TCP accept: idle handshakes from one address cannot keep a device from another out (M15b)', async () => {
    const p = pki()
    const hub = await tlsHub(p, { maxConnections: 100, maxPendingConnections: 50, maxPendingPerAddress: 10 })
    // 100 sockets from 127.0.0.2 (another source on loopback) that never send a ClientHello.
    const idle: Socket[] = []
    for (let i = 0; i < 100; i++) {
      const s = netConnect({ host: '127.0.0.1', port: hub.running.mqttTlsPort!, localAddress: '127.0.0.2' })
      s.on('error', () => undefined)
      cleanups.push(() => s.destroy())
      idle.push(s)
    }
    await Promise.all(idle.map((s) => new Promise<void>((r) => { s.once('connect', () => r()); s.once('close', () => r()) })))
    const stats = () => hub.running.broker.stats()
    await waitFor(() => stats().pending + stats().limits.pendingPerAddress === 100, 'every idle socket pending or refused')
    expect(stats().limits.pendingPerAddress).toBe(90)
    const token = await hub.addDevice('tls-dev')
    const dev = await connectDevice(hub.mqttUrl, 'tls-dev', token, { ca: readFileSync(p.caCert) })
    cleanups.push(() => dev.endAsync())
    expect(stats().connectsAccepted).toBe(1)
    // The device's socket stopped counting once its CONNECT was decided; the ten idle ones still wait.
    expect(stats().pending).toBe(10)
  })

  it('puts a TLS socket through the same guard as TCP: an oversized packet header closes it before the body is read', async () => {
    const p = pki()
    const hub = await tlsHub(p)
    const s = tlsConnect({ host: '127.0.0.1', port: hub.running.mqttTlsPort!, ca: readFileSync(p.caCert), servername: 'localhost' })
    s.on('error', () => undefined)
    cleanups.push(() => s.destroy())
    await new Promise<void>((r) => s.once('secureConnect', () => r()))
    // A PUBLISH announcing a remaining length of ~268 MB (the MQTT maximum), far above maxPayloadBytes.
    s.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]))
    const tookMs = await closedWithin(s, 30_000)
    expect(tookMs).toBeGreaterThanOrEqual(0)
    await waitFor(() => hub.running.broker.stats().violations >= 1, 'the refused packet counted as a violation')
  })

  it('serves a certificate renewed on disk to the next connection on both ports, without a restart', async () => {
    const p = pki()
    const hub = await tlsHub(p)
    const first = fingerprintOfFile(p.hubCert)
    expect(await servedFingerprint(hub.running.mqttTlsPort!, p.caCert)).toBe(first)
    expect(await servedFingerprint(hub.running.httpPort, p.caCert)).toBe(first)

    const renewed = p.renew()
    expect(renewed).not.toBe(first)
    // The hub watches the files: poll new connections until they see the new certificate.
    await waitFor(async () => await servedFingerprint(hub.running.mqttTlsPort!, p.caCert) === renewed, 'the MQTT TLS port serving the renewed certificate')
    await waitFor(async () => await servedFingerprint(hub.running.httpPort, p.caCert) === renewed, 'the HTTPS port serving the renewed certificate')
  })
})

describe('a bad certificate pair', () => {
  it('is refused at start with a message naming the file', async () => {
    const p = pki()
    const other = makeUnrelatedPki()
    cleanups.push(other.remove)
    const data = tempDir('tls-bad')
    cleanups.push(data.remove)
    const config = loadHubConfig({ dataDir: data.dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, logLevel: 'silent', tlsCert: p.hubCert, tlsKey: other.hubKey }, {})
    const hub = createHub(config, { logger: pino({ level: 'silent' }) })
    await expect(hub.start()).rejects.toThrow(`the private key ${other.hubKey} does not belong to the certificate ${p.hubCert}`)
    await hub.stop()
  })

  it('written over a good one keeps the old one serving, and is logged once', async () => {
    const p = pki()
    const other = makeUnrelatedPki()
    cleanups.push(other.remove)
    const data = tempDir('tls-reload')
    cleanups.push(data.remove)
    const lines: { level: number; msg: string }[] = []
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string }); cb() } })
    const config = loadHubConfig({ dataDir: data.dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, tlsCert: p.hubCert, tlsKey: p.hubKey }, {})
    const hub = createHub(config, { logger: pino({ level: 'info' }, sink) })
    cleanups.push(() => hub.stop())
    const running = await hub.start()
    const first = fingerprintOfFile(p.hubCert)

    // A key that does not match the certificate, written in place; then the same again, and a SIGHUP-style reload.
    writeFileSync(p.hubKey, readFileSync(other.hubKey))
    const refused = (l: { msg: string }) => l.msg === 'new TLS certificate refused; the old one keeps serving'
    await waitFor(() => lines.some(refused), 'the refusal logged')
    writeFileSync(p.hubKey, readFileSync(other.hubKey))
    expect(hub.reloadTls('test')).toMatchObject({ ok: false, error: expect.stringContaining('does not belong to the certificate') as unknown })
    expect(lines.filter(refused)).toHaveLength(1)
    expect(await servedFingerprint(running.mqttTlsPort!, p.caCert)).toBe(first)
    expect(await servedFingerprint(running.httpPort, p.caCert)).toBe(first)

    // A good pair afterwards is taken.
    const renewed = p.renew()
    await waitFor(async () => await servedFingerprint(running.mqttTlsPort!, p.caCert) === renewed, 'the renewed certificate served')
  })

  it('an expired pair written over a good one is refused, and a key others can read is warned about', async () => {
    const p = pki()
    const data = tempDir('tls-expired')
    cleanups.push(data.remove)
    const lines: { level: number; msg: string }[] = []
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string }); cb() } })
    chmodSync(p.hubKey, 0o644)
    const config = loadHubConfig({ dataDir: data.dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, tlsCert: p.hubCert, tlsKey: p.hubKey }, {})
    const hub = createHub(config, { logger: pino({ level: 'info' }, sink) })
    cleanups.push(() => hub.stop())
    const running = await hub.start()
    expect(lines.some((l) => l.level === 40 && l.msg.includes(`chmod 600 ${p.hubKey}`))).toBe(true)
    const first = fingerprintOfFile(p.hubCert)

    // A certificate of the same CA and names that expired nine days ago: every device would refuse it.
    const names = altNamesFor(['127.0.0.1', 'localhost'])
    if ('error' in names) throw new Error(names.error)
    const old = issueServerCert({ certPem: readFileSync(p.caCert, 'utf8'), keyPem: readFileSync(p.caKey, 'utf8') }, names, { now: new Date(Date.now() - 10 * 86_400_000), days: 1 })
    writeFileSync(p.hubKey, old.keyPem, { mode: 0o600 })
    writeFileSync(p.hubCert, old.certPem)
    expect(hub.reloadTls('test')).toMatchObject({ ok: false, error: expect.stringContaining('expired') as unknown })
    expect(await servedFingerprint(running.mqttTlsPort!, p.caCert)).toBe(first)
  })
})
