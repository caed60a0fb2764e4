import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { connect as netConnect, type Socket } from 'node:net'
import { join } from 'node:path'
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls'
import { pino } from 'pino'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { TLS_CAUSES } from '../agent/hub-tls.js'
import { altNamesFor, issueServerCert } from '../cli/tls-certs.js'
import { QUICK_AGENT } from './support/agents.js'
import { startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { startCli } from './support/procs.js'
import { makeTestPki, makeUnrelatedPki, type TestPki } from './support/tls.js'
import { within } from './support/leaks.js'

/**
 * Acceptance (issue #12, part 1): an agent over mqtts:// with a pinned CA
 * stores telemetry, every sample once; with the wrong CA, a certificate for
 * another name, an expired certificate or a plaintext port it does not
 * connect, says why (once per cause) and keeps retrying, so a certificate
 * fixed on the hub's side lets it in without a restart. A pinned CA with an
 * mqtt:// URL is refused at start.
 *
 * The first two run against the hub's own TLS listener (mqttTlsPort). The
 * others put a TLS terminator on loopback (Node's tls server) in front of a
 * plaintext hub, to serve certificates a hub would refuse to load (expired,
 * another name) and swap them at will: the handshake the agent makes is the
 * same real one.
 */

interface TlsFront { readonly url: string; setCert(cert: string, key: string): void; close(): Promise<void> }

async function tlsFront(targetPort: number, cert: string, key: string): Promise<TlsFront> {
  const sockets = new Set<Socket>()
  const server: TlsServer = createTlsServer({ cert: readFileSync(cert), key: readFileSync(key) }, (client) => {
    const up = netConnect(targetPort, '127.0.0.1')
    sockets.add(client).add(up)
    const done = () => { client.destroy(); up.destroy(); sockets.delete(client); sockets.delete(up) }
    client.on('error', done).on('close', done)
    up.on('error', done).on('close', done)
    client.pipe(up).pipe(client)
  })
  // A refused handshake is the client's business; the server only drops it.
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    url: `mqtts://127.0.0.1:${port}`,
    setCert: (c, k) => { server.setSecureContext({ cert: readFileSync(c), key: readFileSync(k) }) },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

interface LogLine { level: number; msg: string; hint?: string; err?: { code?: string; message?: string } }

/** An agent whose log lines are kept (pino JSON, level debug and up). */
function tlsAgent(hubUrl: string, id: string, token: string, dir: string, extra: { caFile?: string } = {}): { agent: Agent; log: LogLine[] } {
  const log: LogLine[] = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { log.push(JSON.parse(line) as LogLine) } })
  const agent = createAgent(resolveAgentConfig({ ...QUICK_AGENT, reconnectMaxMs: 200, sensors: [{ name: 'temp', model: 'sine', min: 0, max: 10, periodMs: 1000 }], hub: hubUrl, id, token, dataDir: join(dir, id), ...extra }), { logger })
  return { agent, log }
}

const ERROR = 50

describe('agent over TLS', () => {
  let pki: TestPki
  let unrelated: TestPki
  let hub: TestHub
  let tlsHub: TestHub
  let work: { dir: string; remove: () => void }
  const cleanups: Array<() => Promise<void> | void> = []

  beforeAll(async () => {
    pki = makeTestPki()
    unrelated = makeUnrelatedPki()
    hub = await startTestHub()
    tlsHub = await startTestHub({ tlsCert: pki.hubCert, tlsKey: pki.hubKey }, undefined, { ca: pki.caCert })
    work = tempDir('agent-tls')
  })
  afterAll(async () => {
    await hub.stop()
    await tlsHub.stop()
    pki.remove()
    unrelated.remove()
    work.remove()
  })
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function front(cert = pki.hubCert, key = pki.hubKey): Promise<TlsFront> {
    const f = await tlsFront(hub.running.mqttPort, cert, key)
    cleanups.push(() => f.close())
    return f
  }

  function start(a: { agent: Agent }): Promise<void> {
    cleanups.push(() => a.agent.stop())
    return a.agent.start()
  }

  /** Waits for `attempts` failed attempts; the agent must not have connected. */
  async function failedAttempts(agent: Agent, attempts: number): Promise<void> {
    await waitFor(() => agent.stats().link.attempts >= attempts, `${attempts} connection attempts`, 30_000)
    expect(agent.stats().link.connects).toBe(0)
    expect(agent.isConnected()).toBe(false)
  }

  it('stores every sample once over mqtts:// with the pinned CA', async () => {
    const hub = tlsHub
    expect(hub.mqttsUrl).toMatch(/^mqtts:\/\/127.0.0.1:\d+$/)
    const token = await hub.addDevice('tls-ok')
    const a = tlsAgent(hub.mqttsUrl!, 'tls-ok', token, work.dir, { caFile: pki.caCert })
    await start(a)
    await waitFor(() => hub.running.services.presence.isReachable('tls-ok'), 'tls-ok online', 30_000)
    const ticks = 200
    for (let i = 0; i < ticks; i++) a.agent.sampleNow()
    const generated = a.agent.stats().outbox!.newestSeq
    await waitFor(() => a.agent.stats().outbox!.backlogRows === 0, 'outbox drained', 30_000)
    const rows = (await hub.running.services.telemetry.query({ deviceId: 'tls-ok', sinceMs: 0, untilMs: Date.now() + 60_000, limit: 1_000_000 })) as Array<{ seq: number }>
    const seqs = new Set(rows.map((r) => r.seq))
    const s = a.agent.stats()
    expect(generated).toBeGreaterThan(0)
    expect({ sentAtLeast: s.sender!.rowsSent >= generated, acked: s.sender!.ackedUpTo, stored: rows.length, duplicates: rows.length - seqs.size, lost: generated - seqs.size })
      .toEqual({ sentAtLeast: true, acked: generated, stored: generated, duplicates: 0, lost: 0 })
    expect(s.link.lastError).toBeUndefined()
  })

  it('refuses a hub whose certificate another CA signed, says to check caFile once, and keeps retrying', async () => {
    const hub = tlsHub
    const token = await hub.addDevice('tls-wrong-ca')
    const a = tlsAgent(hub.mqttsUrl!, 'tls-wrong-ca', token, work.dir, { caFile: unrelated.caCert })
    await start(a)
    await failedAttempts(a.agent, 4)
    expect(a.agent.stats().link.lastError?.code).toBe(TLS_CAUSES.UNTRUSTED)
    const errors = a.log.filter((l) => l.level >= ERROR)
    expect(errors).toHaveLength(1)
    expect(errors[0]!.err?.code).toBe(TLS_CAUSES.UNTRUSTED)
    expect(errors[0]!.hint).toContain(`not signed by the CA in caFile ${unrelated.caCert}: is caFile the ca.pem from \`rollcall tls init\``)
    expect(hub.running.services.presence.isReachable('tls-wrong-ca')).toBe(false)
  })

  it('refuses a certificate for another name, naming both, and connects once the hub has the right one', async () => {
    const other = pki.issue('other-name', ['other.example'])
    const f = await front(other.cert, other.key)
    const token = await hub.addDevice('tls-name')
    const a = tlsAgent(f.url, 'tls-name', token, work.dir, { caFile: pki.caCert })
    await start(a)
    await failedAttempts(a.agent, 3)
    const e = a.agent.stats().link.lastError
    expect(e?.code).toBe(TLS_CAUSES.NAME_MISMATCH)
    expect(e?.message).toBe('the certificate holds DNS:other.example; the agent dialled 127.0.0.1')
    // A renewal on the hub's side: the next attempt gets in, no restart.
    f.setCert(pki.hubCert, pki.hubKey)
    await waitFor(() => a.agent.isConnected(), 'connected after the certificate was fixed', 30_000)
    expect(a.agent.stats().link.lastError).toBeUndefined()
  })

  it('refuses an expired certificate, saying so', async () => {
    const ca = { certPem: readFileSync(pki.caCert, 'utf8'), keyPem: readFileSync(pki.caKey, 'utf8') }
    const names = altNamesFor(['127.0.0.1'])
    if ('error' in names) throw new Error(names.error)
    const old = issueServerCert(ca, names, { now: new Date(Date.now() - 10 * 86_400_000), days: 1 })
    const dir = tempDir('expired')
    cleanups.push(dir.remove)
    const { writeFileSync } = await import('node:fs')
    writeFileSync(join(dir.dir, 'hub.pem'), old.certPem)
    writeFileSync(join(dir.dir, 'hub.key'), old.keyPem)
    const f = await front(join(dir.dir, 'hub.pem'), join(dir.dir, 'hub.key'))
    const token = await hub.addDevice('tls-expired')
    const a = tlsAgent(f.url, 'tls-expired', token, work.dir, { caFile: pki.caCert })
    await start(a)
    await failedAttempts(a.agent, 3)
    expect(a.agent.stats().link.lastError?.code).toBe(TLS_CAUSES.EXPIRED)
  })

  it('never falls back to plaintext: mqtts:// to a plaintext port fails as not TLS', async () => {
    const token = await hub.addDevice('tls-plain-port')
    const a = tlsAgent(`mqtts://127.0.0.1:${hub.running.mqttPort}`, 'tls-plain-port', token, work.dir, { caFile: pki.caCert })
    await start(a)
    await failedAttempts(a.agent, 3)
    expect(a.agent.stats().link.lastError?.code).toBe(TLS_CAUSES.NOT_TLS)
    expect(hub.running.services.presence.isReachable('tls-plain-port')).toBe(false)
  })

  it('rollcall agent refuses --ca with an mqtt:// URL at start, saying to use mqtts://', async () => {
    const p = startCli(['agent', '--hub', 'mqtt://127.0.0.1:1883', '--ca', pki.caCert, '--id', 'tls-cli', '--data', join(work.dir, 'tls-cli'), '--log-format', 'json'],
      { ROLLCALL_TOKEN: 't' })
    cleanups.push(() => { if (p.child.exitCode === null) p.child.kill('SIGKILL') })
    const code = await within(p.exited, 20_000, 'hung')
    expect(code).toBe(1)
    expect(p.output()).toMatch(/caFile is set but hub "mqtt:\/\/127.0.0.1:1883" is plaintext MQTT: use mqtts:\/\//)
  })
})
