import { describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { filterMatches, grantedQos } from '../broker/delivery-qos.js'
import { connectClient, leakCheckedCleanups, startBroker, waitFor } from './broker.harness.js'

/**
 * The QoS a subscriber gets a message at (broker/delivery-qos.ts, issue #15):
 * the lower of the published QoS and the highest QoS granted among its
 * matching subscriptions [MQTT-3.3.5-1] [MQTT-3.8.4-6], once per message.
 */
const cleanups = leakCheckedCleanups()

describe('filterMatches', () => {
  it.each<[string, string, boolean]>([
    ['a/b', 'a/b', true], ['a/b', 'a/c', false], ['a/+', 'a/b', true], ['a/+', 'a/b/c', false], ['a/+', 'a', false],
    ['a/#', 'a', true], ['a/#', 'a/b/c', true], ['#', 'a/b', true], ['+/+', 'a/b', true], ['+', '/', false], ['+/+', '/', true],
    ['a/+/c', 'a//c', true], ['#', '$SYS/x', false], ['+/x', '$a/x', false], ['$SYS/#', '$SYS/x', true], ['a', 'a/b', false],
  ])('%s against %s: %s', (filter, topic, matches) => {
    expect(filterMatches(filter, topic)).toBe(matches)
  })

  it('picks the highest grant among the matching filters, -1 for none', () => {
    expect(grantedQos({ 'a/#': { qos: 0 }, 'a/b': { qos: 1 }, 'x/+': { qos: 2 } }, 'a/b')).toBe(1)
    expect(grantedQos({ 'a/#': { qos: 0 } }, 'b')).toBe(-1)
  })
})

describe('delivery QoS at the broker', () => {
  async function received(subscriptions: Record<string, { qos: 0 | 1 | 2 }>, publishQos: 0 | 1 | 2): Promise<number[]> {
    const { url } = await startBroker(cleanups, { allowAnonymous: true })
    const sub = await connectClient(cleanups, url, { clientId: 'sub-1' })
    const got: Array<{ payload: string; qos: number }> = []
    sub.on('message', (_topic, payload, packet) => got.push({ payload: payload.toString(), qos: packet.qos }))
    await sub.subscribeAsync(subscriptions)
    const pub = await connectClient(cleanups, url, { clientId: 'pub-1' })
    await pub.publishAsync('apps/x', 'first', { qos: publishQos })
    // A second message on its own topic: anything delivered twice would have come before it.
    await sub.subscribeAsync({ 'end/x': { qos: 0 } })
    await pub.publishAsync('end/x', 'end', { qos: 0 })
    await waitFor(() => got.some((g) => g.payload === 'end'), 'the end marker')
    return got.filter((g) => g.payload === 'first').map((g) => g.qos)
  }

  it.each<[string, Record<string, { qos: 0 | 1 | 2 }>, 0 | 1 | 2, number]>([
    ['overlapping, the wildcard granted less', { 'apps/#': { qos: 0 }, 'apps/x': { qos: 1 } }, 1, 1],
    ['overlapping, published at QoS 2', { 'apps/#': { qos: 0 }, 'apps/x': { qos: 1 } }, 2, 1],
    ['two wildcards, the second granted more', { 'apps/#': { qos: 0 }, 'apps/+': { qos: 2 } }, 2, 2],
    ['a wildcard granted 1, a QoS 2 publish', { 'apps/+': { qos: 1 } }, 2, 1],
    ['a wildcard granted 0, a QoS 1 publish', { 'apps/#': { qos: 0 } }, 1, 0],
    ['a wildcard granted 2, a QoS 0 publish', { 'apps/#': { qos: 2 } }, 0, 0],
  ])('%s: once, at the right QoS', async (_name, subscriptions, publishQos, expected) => {
    expect(await received(subscriptions, publishQos)).toEqual([expected])
  })

  it('delivers a retained message at the QoS granted to the wildcard that matches it', async () => {
    const { url } = await startBroker(cleanups)
    const dev = await connectClient(cleanups, url, { clientId: 'dev-a', username: 'dev-a', password: 'token-a' })
    await dev.publishAsync('devices/dev-a/state', '{}', { qos: 1, retain: true })
    const obs = await mqtt.connectAsync(url, { clientId: 'obs-1', username: 'observer:ops', password: 'token-ops', reconnectPeriod: 0 })
    cleanups.add(() => obs.endAsync(true))
    const got: number[] = []
    obs.on('message', (_t, _p, packet) => got.push(packet.qos))
    await obs.subscribeAsync({ 'devices/+/state': { qos: 0 } })
    await waitFor(() => got.length > 0, 'the retained birth')
    expect(got).toEqual([0])
  })
})
