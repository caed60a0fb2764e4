import { afterEach, describe, expect, it } from 'vitest'
import { encode, topics } from '../protocol/index.js'
import { connectDevice, startTestHub, waitFor } from './support/hub.js'
import { mqttArgs, runMosquitto, spawnSubscriber, SKIP_WITHOUT_MOSQUITTO } from './support/mosquitto.js'

/**
 * Issue #15: the Mosquitto clients, as users run them, against a real hub:
 * QoS 0, 1 and 2 round trips between anonymous clients with their default
 * ids, and retained messages as MQTT 3.1.1 delivers them: with the retain
 * flag to a new subscription, without it to one that was already there
 * [MQTT-3.3.1-9]. `$SYS` is not offered to anyone but the hub: SUBACK 0x80.
 */
const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000016'

// Skipped only where mosquitto-clients are missing outside CI (see support/mosquitto.ts).
describe.skipIf(SKIP_WITHOUT_MOSQUITTO)('standard MQTT clients against the hub', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('round-trips QoS 0, 1 and 2 between anonymous mosquitto clients', async () => {
    const hub = await startTestHub({ allowAnonymous: true })
    cleanups.push(() => hub.stop())
    const port = Number(new URL(hub.mqttUrl).port)
    // "%q %t %p": the QoS it was delivered at, topic, payload.
    const sub = spawnSubscriber([...mqttArgs(port), '-q', '2', '-t', 'apps/#', '-F', '%q %t %p'])
    cleanups.push(() => { sub.child.kill() })
    const publish = async (qos: 0 | 1 | 2) => {
      const r = await runMosquitto('mosquitto_pub', [...mqttArgs(port), '-q', String(qos), '-t', `apps/q${qos}`, '-m', `m${qos}`])
      expect(r.code, r.stderr).toBe(0)
    }
    // Until the subscriber is in: what came before its SUBSCRIBE is not its to get.
    await waitFor(async () => { await publish(0); return sub.lines.includes('0 apps/q0 m0') }, 'the subscriber in', 30_000, 300)
    await publish(1)
    await publish(2)
    await waitFor(() => sub.lines.includes('2 apps/q2 m2'), 'the QoS 2 message')
    expect(sub.lines).toContain('1 apps/q1 m1')
    // Each once: QoS 2 is exactly once end to end.
    expect(sub.lines.filter((l) => l === '2 apps/q2 m2')).toHaveLength(1)
    expect(sub.lines.filter((l) => l === '1 apps/q1 m1')).toHaveLength(1)

    const sys = await runMosquitto('mosquitto_sub', [...mqttArgs(port), '-t', '$SYS/#', '-C', '1', '-W', '3'])
    expect(sys.stderr).toMatch(/denied/i)
  })

  it('delivers a retained message with the retain flag to a new subscription and without it to an existing one', async () => {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    const port = Number(new URL(hub.mqttUrl).port)
    const token = await hub.addDevice('dev-1')
    const obs = await hub.api<{ token: string }>('POST', '/api/observers', { name: 'ops' })
    // "%r %t": the retain flag as delivered, and the topic.
    const early = spawnSubscriber([...mqttArgs(port, 'observer:ops', obs.body.token, 'early'), '-t', 'devices/+/state', '-t', 'devices/+/telemetry', '-F', '%r %t'])
    cleanups.push(() => { early.child.kill() })
    const dev = await connectDevice(hub.mqttUrl, 'dev-1', token)
    cleanups.push(() => dev.endAsync())
    // Telemetry (never retained) until the early subscriber gets some: from then on it is subscribed.
    let seq = 1
    await waitFor(async () => {
      await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, prev: seq - 1, samples: [{ seq, ts: Date.now(), sensor: 't', value: seq++ }] }), { qos: 1 })
      return early.lines.includes('0 devices/dev-1/telemetry')
    }, 'the early subscriber in', 30_000, 300)
    // A birth, retained: the early subscriber was there before it, so it gets it as a normal message, retain 0.
    await dev.publishAsync(topics.state('dev-1'), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: '0.1.0', storeId, capabilities: ['telemetry'] }), { qos: 1, retain: true })
    await waitFor(() => early.lines.some((l) => l.endsWith('devices/dev-1/state')), 'the birth at the early subscriber')
    expect(early.lines.filter((l) => l.endsWith('devices/dev-1/state'))).toEqual(['0 devices/dev-1/state'])

    // A subscription made now gets the stored one, flagged retained.
    const late = await runMosquitto('mosquitto_sub', [...mqttArgs(port, 'observer:ops', obs.body.token, 'late'), '-t', 'devices/+/state', '-F', '%r %t', '-C', '1', '-W', '10'])
    expect(late.stdout.trim()).toBe('1 devices/dev-1/state')
  })
})
