import { afterEach, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { encode, topics, type TelemetryAck } from '../protocol/index.js'
import { connectDevice, tempDir, waitFor } from './support/hub.js'
import { killProc, startCli, startHubProc, type HubProc } from './support/procs.js'
import { fingerprintOfFile, makeTestPki, type TestPki } from './support/tls.js'
import { SKIP_WITHOUT_MOSQUITTO, spawnSubscriber } from './support/mosquitto.js'
import { within } from './support/leaks.js'

/**
 * Acceptance for TLS on the hub (issue #12, "Done when"), with real outside
 * clients against a real `rollcall hub` process:
 * - `mosquitto_sub --cafile ca.pem -p <TLS port>` as an observer receives
 *   telemetry a device published over mqtts;
 * - `curl --cacert ca.pem` reaches /healthz and the API over HTTPS;
 * - a certificate renewed on disk is served to the next connection after
 *   SIGHUP, without a restart;
 * - a hub on 0.0.0.0 without TLS refuses to start, before binding anything,
 *   with a message naming --allow-plaintext.
 * Tests dial 127.0.0.1, so the test certificate carries the IP SAN 127.0.0.1.
 */

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000a1'
const cleanups: (() => unknown)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

function run(bin: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(bin, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
    // openssl s_client reads stdin until EOF before it hangs up.
    child.stdin?.end()
  })
}

async function tlsHubProc(): Promise<{ hub: HubProc; pki: TestPki; dataDir: string }> {
  const pki = makeTestPki()
  cleanups.push(pki.remove)
  const data = tempDir('acc-tls')
  cleanups.push(data.remove)
  const hub = await startHubProc(data.dir, { tls: { cert: pki.hubCert, key: pki.hubKey, ca: pki.caCert }, extra: ['--log-level', 'info'] })
  cleanups.push(() => killProc(hub, 'SIGTERM'))
  return { hub, pki, dataDir: data.dir }
}

describe.skipIf(SKIP_WITHOUT_MOSQUITTO)('TLS with real clients', () => {
  it('mosquitto_sub over TLS as an observer receives telemetry a device sent over mqtts; curl reaches the API over HTTPS', async () => {
    const { hub, pki } = await tlsHubProc()
    expect(hub.mqttPort).toBe(0) // no plaintext MQTT listener
    const tlsPort = hub.mqttTlsPort!

    const obs = await hub.api<{ username: string; token: string }>('POST', '/api/observers', { name: 'tls-viewer' })
    expect(obs.status).toBe(201)
    const dev = await hub.api<{ token: string }>('POST', '/api/devices', { id: 'tls-acc' })
    expect(dev.status).toBe(201)

    const sub = spawnSubscriber(['--cafile', pki.caCert, '-h', '127.0.0.1', '-p', String(tlsPort), '-V', 'mqttv311',
      '-i', 'tls-viewer:1', '-u', obs.body.username, '-P', obs.body.token, '-t', 'devices/+/telemetry', '-v'])
    cleanups.push(() => { sub.child.kill('SIGKILL') })
    // mosquitto_sub connects quietly: wait until the hub counts it.
    await waitFor(async () => (await hub.api<{ broker: { connections: number } }>('GET', '/api/stats')).body.broker.connections >= 1, 'mosquitto_sub connected over TLS')

    const client = await connectDevice(`mqtts://127.0.0.1:${tlsPort}`, 'tls-acc', dev.body.token, { ca: readFileSync(pki.caCert) })
    cleanups.push(() => client.endAsync())
    const acks: TelemetryAck[] = []
    client.on('message', (_t, p) => acks.push(JSON.parse(p.toString()) as TelemetryAck))
    await client.subscribeAsync(topics.telemetryAck('tls-acc'), { qos: 1 })
    await client.publishAsync(topics.telemetry('tls-acc'), encode({ type: 'telemetry', v: 1, storeId, samples: [{ seq: 1, ts: 1_700_000_000_000, sensor: 'env.temp', value: 21.5 }] }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 1), 'the telemetry acked')

    const line = await waitFor(() => sub.lines.find((l) => l.startsWith('devices/tls-acc/telemetry ')), `mosquitto_sub receiving the telemetry (stderr: ${sub.stderr()})`)
    expect(line).toContain('"value":21.5')

    const health = await run('curl', ['-sS', '--fail', '--cacert', pki.caCert, `https://127.0.0.1:${hub.httpPort}/healthz`])
    expect(health.code, health.stderr).toBe(0)
    expect(JSON.parse(health.stdout)).toMatchObject({ ok: true, mqttPort: 0, mqttTlsPort: tlsPort })
    const api = await run('curl', ['-sS', '--fail', '--cacert', pki.caCert, '-H', `Authorization: Bearer ${hub.adminToken}`, `https://127.0.0.1:${hub.httpPort}/api/devices/tls-acc/telemetry?since=0`])
    expect(api.code, api.stderr).toBe(0)
    expect((JSON.parse(api.stdout) as { samples: { value: number }[] }).samples.map((s) => s.value)).toEqual([21.5])
    // Without the CA, curl refuses the hub's certificate: nothing falls back to an unverified connection.
    const noCa = await run('curl', ['-sS', `https://127.0.0.1:${hub.httpPort}/healthz`])
    expect(noCa.code).toBe(60) // CURLE_PEER_FAILED_VERIFICATION
  })
})

// These need openssl and the hub's CLI only, not the Mosquitto clients.
describe('TLS at the hub process', () => {
  it('serves a certificate renewed on disk after SIGHUP, to both ports, without a restart', async () => {
    const { hub, pki } = await tlsHubProc()
    const fingerprint = async (port: number) => {
      const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', pki.caCert, '-verify_return_error'])
      const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0]
      if (!cert) return `no certificate (${r.stderr.slice(0, 200)})`
      const { X509Certificate } = await import('node:crypto')
      return new X509Certificate(cert).fingerprint256
    }
    expect(await fingerprint(hub.mqttTlsPort!)).toBe(fingerprintOfFile(pki.hubCert))
    const renewed = pki.renew()
    process.kill(hub.pid, 'SIGHUP')
    await waitFor(async () => await fingerprint(hub.mqttTlsPort!) === renewed, 'the MQTT TLS port serving the renewed certificate')
    await waitFor(async () => await fingerprint(hub.httpPort) === renewed, 'the HTTPS port serving the renewed certificate')
    // The same process: SIGHUP reloaded, it did not stop the hub.
    expect(hub.child.exitCode).toBeNull()
    await waitFor(() => hub.output().includes('"trigger":"SIGHUP"'), 'the reload logged with its trigger')
  })

  it('a hub on 0.0.0.0 without TLS refuses to start, before binding anything, and names --allow-plaintext', async () => {
    const data = tempDir('acc-plain')
    cleanups.push(data.remove)
    const p = startCli(['hub', '--data', data.dir, '--host', '0.0.0.0', '--mqtt-port', '0', '--http-port', '0', '--ready-file', join(data.dir, 'ready.json')])
    cleanups.push(() => killProc(p))
    const code = await within(p.exited, 60_000, 'still running')
    expect(code, p.output()).toBe(1)
    expect(p.output()).toContain('--allow-plaintext')
    expect(p.output()).toContain('rollcall tls init')
    expect(p.output()).toContain('--tls-cert')
    // Refused before anything was opened or bound: no ready file, no database, no admin token.
    expect(existsSync(join(data.dir, 'ready.json'))).toBe(false)
    expect(readdirSync(data.dir)).toEqual([])
  })
})
