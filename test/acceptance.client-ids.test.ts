import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { encode, topics } from '../protocol/index.js'
import { connectDevice, startTestHub, waitFor } from './support/hub.js'
import { mqttArgs, runMosquitto, spawnSubscriber, SKIP_WITHOUT_MOSQUITTO } from './support/mosquitto.js'

/**
 * Issue #15, part 1: everyday MQTT clients connect with the client ids they
 * pick (`dashboard1`, `telegraf`, mosquitto's random default, none at all),
 * as observers and as anonymous clients; only a registered device's id stays
 * its own. Real mosquitto_sub/mosquitto_pub against a real hub.
 */
const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000015'

// Skipped only where mosquitto-clients are missing outside CI (see support/mosquitto.ts).
describe.skipIf(SKIP_WITHOUT_MOSQUITTO)('client ids of standard MQTT clients', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('accepts ordinary ids for observers and anonymous clients, and keeps a registered device\'s id its own', async () => {
    const hub = await startTestHub({ allowAnonymous: true })
    cleanups.push(() => hub.stop())
    const port = Number(new URL(hub.mqttUrl).port)
    const token = await hub.addDevice('dev-1')
    const obs = await hub.api<{ token: string }>('POST', '/api/observers', { name: 'ops' })
    expect(obs.status).toBe(201)

    // An observer with an id shaped like a device id (not a registered one): it gets the fleet's stream.
    const observer = spawnSubscriber([...mqttArgs(port, 'observer:ops', obs.body.token, 'dashboard1'), '-t', 'devices/+/telemetry', '-v'])
    cleanups.push(() => { observer.child.kill() })
    // And one with mosquitto's default (random) id.
    const observer2 = spawnSubscriber([...mqttArgs(port, 'observer:ops', obs.body.token), '-t', 'devices/+/telemetry', '-v'])
    cleanups.push(() => { observer2.child.kill() })
    // An anonymous subscriber with mosquitto's default (random) id, and an anonymous publisher called telegraf.
    const app = spawnSubscriber([...mqttArgs(port), '-t', 'apps/#', '-v'])
    cleanups.push(() => { app.child.kill() })

    const dev = await connectDevice(hub.mqttUrl, 'dev-1', token)
    cleanups.push(() => dev.endAsync())
    const batch = (seq: number) => encode({ type: 'telemetry', v: 1, storeId, prev: seq - 1, samples: [{ seq, ts: Date.now(), sensor: 't', value: 21.5 }] })
    // Until the subscribers are in: a publish before their SUBSCRIBE is not theirs to get.
    let seq = 1
    await waitFor(async () => {
      await dev.publishAsync(topics.telemetry('dev-1'), batch(seq++), { qos: 1 })
      const pub = await runMosquitto('mosquitto_pub', [...mqttArgs(port, undefined, undefined, 'telegraf'), '-t', 'apps/telegraf/cpu', '-m', '42'])
      expect(pub.code, pub.stderr).toBe(0)
      return [observer, observer2].every((o) => o.lines.some((l) => l.startsWith('devices/dev-1/telemetry '))) && app.lines.includes('apps/telegraf/cpu 42')
    }, 'the observer and the anonymous subscriber get their messages', 30_000, 300)

    // With / + # in its id, and with none at all (clean session: the broker assigns one).
    for (const id of ['a/b+c#', '']) {
      const c = await mqtt.connectAsync(hub.mqttUrl, { clientId: id, clean: true, reconnectPeriod: 0, keepalive: 30 })
      await c.publishAsync('apps/x', 'y', { qos: 1 })
      await c.endAsync()
    }

    // A registered device's id, taken by anyone else: refused with CONNACK 2, and the device stays connected.
    for (const creds of [[undefined, undefined], ['observer:ops', obs.body.token]] as const) {
      const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port, creds[0], creds[1], 'dev-1'), '-t', 'apps/x', '-m', 'taken'])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/identifier rejected/i)
    }
    expect(dev.connected).toBe(true)
    expect(observer.stderr()).toBe('')
    expect(observer2.stderr()).toBe('')
    expect(app.stderr()).toBe('')
  })
})
