import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encode, topics } from '../protocol/index.js'
import { startTestHub, waitFor, type TestHub } from './support/hub.js'
import { mqttArgs, runMosquitto, spawnSubscriber, SKIP_WITHOUT_MOSQUITTO } from './support/mosquitto.js'

/**
 * Acceptance 1 (issue #2): deny by default, checked with the real Mosquitto
 * command-line clients against the hub's embedded broker.
 */
const storeId = '5d0f7a2c-1111-4222-8333-000000000001'
const batch = (seq: number) => encode({ type: 'telemetry', v: 1, storeId, samples: [{ seq, ts: Date.now(), sensor: 'temp', value: 21.5 }] }).toString()

// Skipped only where mosquitto-clients are missing outside CI (see support/mosquitto.ts).
describe.skipIf(SKIP_WITHOUT_MOSQUITTO)('ACL with mosquitto clients', () => {
  let hub: TestHub
  let tokenA: string
  let tokenB: string

  beforeAll(async () => {
    hub = await startTestHub()
    tokenA = await hub.addDevice('dev-a')
    tokenB = await hub.addDevice('dev-b')
  })
  afterAll(async () => { await hub.stop() })

  const port = () => hub.running.mqttPort
  const storedSeqs = async (id: string) =>
    (await hub.api<{ samples: Array<{ seq: number }> }>('GET', `/api/devices/${id}/telemetry?since=0`)).body.samples.map((s) => s.seq)

  it('accepts a device publishing on its own telemetry topic', async () => {
    const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port(), 'dev-a', tokenA, 'dev-a'), '-q', '1', '-t', topics.telemetry('dev-a'), '-m', batch(1)])
    expect(r.code, r.stderr).toBe(0)
    expect(await waitFor(async () => (await storedSeqs('dev-a')).includes(1), 'sample stored for dev-a')).toBe(true)
  })

  it('closes the connection of a device publishing on another device\'s topic, and stores nothing for it', async () => {
    // A subscriber on B's telemetry (as B's observer would be) must see nothing.
    const obs = await hub.api<{ token: string; username: string }>('POST', '/api/observers', { name: 'acl-watch' })
    const sub = spawnSubscriber([...mqttArgs(port(), obs.body.username, obs.body.token, 'watch:acl'), '-t', topics.telemetry('dev-b'), '-v'])
    try {
      await waitFor(() => hub.running.broker.isConnected('watch:acl'), 'observer connected')
      const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port(), 'dev-a', tokenA, 'dev-a'), '-q', '1', '-t', topics.telemetry('dev-b'), '-m', batch(2)])
      // mosquitto_pub waits for the PUBACK of a QoS 1 message; the broker closes instead.
      expect(r.code).not.toBe(0)
      await new Promise((res) => setTimeout(res, 300))
      expect(await storedSeqs('dev-b')).toEqual([])
      expect(sub.lines).toEqual([])
      const stats = await hub.api<{ broker: { violations: number } }>('GET', '/api/stats')
      expect(stats.body.broker.violations).toBeGreaterThan(0)
    } finally {
      sub.child.kill('SIGTERM')
    }
  })

  it('answers SUBACK 0x80 to a subscription on another device\'s command topic', async () => {
    // -d prints the SUBACK's granted QoS; 128 is the failure code [MQTT-3.9.3].
    const r = await runMosquitto('mosquitto_sub', [...mqttArgs(port(), 'dev-a', tokenA, 'dev-a'), '-t', topics.cmdReq('dev-b'), '-W', '1', '-d'])
    expect(r.stdout).toMatch(/Subscribed \(mid: \d+\): 128\n/)
    expect(r.stderr).toMatch(/All subscription requests were denied/)
    // Not a dropped connection: in one SUBSCRIBE, its own topic is granted and the other refused.
    const both = await runMosquitto('mosquitto_sub', [...mqttArgs(port(), 'dev-a', tokenA, 'dev-a'), '-t', topics.cmdReq('dev-a'), '-t', topics.cmdReq('dev-b'), '-W', '1', '-d'])
    expect(both.stdout).toMatch(/Subscribed \(mid: \d+\): 0, 128\n/)
    expect(both.stdout).toMatch(/sending DISCONNECT/)
  })

  it('refuses anonymous clients with CONNACK 5 (not authorised)', async () => {
    const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port()), '-t', 'anything', '-m', 'x'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/not authori[sz]ed/i)
  })

  it('refuses a wrong token with CONNACK 4 (bad user name or password)', async () => {
    const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port(), 'dev-a', 'not-the-token', 'dev-a'), '-t', topics.telemetry('dev-a'), '-m', batch(3)])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/bad user ?name or password/i)
    const unknown = await runMosquitto('mosquitto_pub', [...mqttArgs(port(), 'dev-zzz', tokenB, 'dev-zzz'), '-t', topics.telemetry('dev-zzz'), '-m', batch(3)])
    expect(unknown.stderr).toMatch(/bad user ?name or password/i)
  })

  it('refuses a device whose client id differs from its username', async () => {
    const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port(), 'dev-a', tokenA, 'dev-b'), '-t', topics.telemetry('dev-a'), '-m', batch(4)])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/refused|identifier rejected|not authori[sz]ed/i)
  })
})
