import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import type { MqttClient } from 'mqtt'
import { decideSubscribeLimit, type SubscribeLimitState, type SubscribeLimitVerdict } from '../broker/subscribe-limits.js'
import { connectClient, deviceOptions, leakCheckedCleanups, startBroker, subackCodes, TOKENS, waitFor } from './broker.harness.js'

/** M24: caps on filters per SUBSCRIBE and per client, answered with SUBACK 0x80, and log lines bounded per client. */

const limits = { maxFiltersPerSubscribe: 100, maxSubscriptionsPerClient: 1000 }

describe('subscribe limits (pure)', () => {
  it.each<[string, SubscribeLimitState, SubscribeLimitVerdict['ok'], string?]>([
    ['the first filter of a packet', { indexInPacket: 0, held: 0, alreadyHeld: false }, true],
    ['the last filter within the packet cap', { indexInPacket: 99, held: 99, alreadyHeld: false }, true],
    ['a filter past the packet cap', { indexInPacket: 100, held: 0, alreadyHeld: false }, false, 'filtersPerSubscribe'],
    ['a new filter when the client holds the most it may', { indexInPacket: 0, held: 1000, alreadyHeld: false }, false, 'subscriptionsPerClient'],
    ['a held filter again (it replaces itself [MQTT-3.8.4-3])', { indexInPacket: 0, held: 1000, alreadyHeld: true }, true],
    ['past the packet cap, even a held filter', { indexInPacket: 150, held: 1000, alreadyHeld: true }, false, 'filtersPerSubscribe'],
  ])('%s', (_name, state, ok, limit) => {
    const verdict = decideSubscribeLimit(state, limits)
    expect(verdict.ok).toBe(ok)
    if (!verdict.ok) expect(verdict.limit).toBe(limit)
  })
})

/** 10,000 distinct three-character filters: one SUBSCRIBE of 60 KB, inside the broker's packet limit. */
function manyFilters(n: number, prefix = ''): Record<string, { qos: 0 }> {
  const filters: Record<string, { qos: 0 }> = {}
  for (let i = 0; i < n; i++) filters[prefix + i.toString(36).padStart(3, '0')] = { qos: 0 }
  return filters
}

function captureLogs(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
  return { logger, lines }
}

function nextMessage(client: MqttClient): Promise<string> {
  return new Promise((resolve) => client.once('message', (topic) => resolve(topic)))
}

describe('subscribe limits (broker)', () => {
  const cleanups = leakCheckedCleanups()

  it('a 10,000-filter SUBSCRIBE writes a bounded number of log lines, and the broker keeps serving others', async () => {
    const { logger, lines } = captureLogs()
    const { broker, url } = await startBroker(cleanups, { logger })
    const flooder = await connectClient(cleanups, url, { clientId: 'Flood:1', username: 'observer:ops', password: TOKENS['observer:ops'] })
    const codes = await subackCodes(flooder, manyFilters(10_000))
    expect(codes).toHaveLength(10_000)
    expect(codes.every((c) => c === 0x80)).toBe(true)
    expect(broker.stats().limits.filtersPerSubscribe).toBe(9_900)

    // Others are served: an observer gets a device's telemetry.
    const watcher = await connectClient(cleanups, url, { clientId: 'Grafana:1', username: 'observer:ops', password: TOKENS['observer:ops'] })
    expect(await subackCodes(watcher, { 'devices/+/telemetry': { qos: 0 } })).toEqual([0])
    const device = await connectClient(cleanups, url, deviceOptions('dev-a'))
    const received = nextMessage(watcher)
    await device.publishAsync('devices/dev-a/telemetry', '{}', { qos: 1 })
    expect(await received).toBe('devices/dev-a/telemetry')

    await broker.close()
    // 10 lines as they came, and at close one summary of the 9,990 held back.
    const denied = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('subscribe denied'))
    expect(denied).toHaveLength(11)
    expect(denied[10]).toMatchObject({ clientId: 'Flood:1', suppressed: 9_990 })
    expect(lines.length).toBeLessThan(40)
  }, 30_000)

  it('grants the first maxFiltersPerSubscribe filters of a SUBSCRIBE and answers 0x80 for the rest', async () => {
    const { broker, url } = await startBroker(cleanups, { allowAnonymous: true, maxFiltersPerSubscribe: 100 })
    const client = await connectClient(cleanups, url, { clientId: 'App:1' })
    const codes = await subackCodes(client, manyFilters(10_000))
    expect(codes.slice(0, 100).every((c) => c === 0)).toBe(true)
    expect(codes.slice(100).every((c) => c === 0x80)).toBe(true)
    expect(broker.stats().limits).toMatchObject({ filtersPerSubscribe: 9_900, subscriptionsPerClient: 0 })
  }, 30_000)

  it('a client holds at most maxSubscriptionsPerClient; a held filter again is no new one, and unsubscribing frees room', async () => {
    const { broker, url } = await startBroker(cleanups, { allowAnonymous: true, maxSubscriptionsPerClient: 5 })
    const client = await connectClient(cleanups, url, { clientId: 'App:1' })
    expect(await subackCodes(client, manyFilters(4, 'a'))).toEqual([0, 0, 0, 0])
    expect(await subackCodes(client, { a000: { qos: 0 }, b000: { qos: 0 }, b001: { qos: 0 } })).toEqual([0, 0, 0x80])
    await client.unsubscribeAsync(['a000', 'a001'])
    expect(await subackCodes(client, manyFilters(3, 'c'))).toEqual([0, 0, 0x80])
    expect(broker.stats().limits.subscriptionsPerClient).toBe(2)
    // The client stays connected throughout [MQTT-3.9.3].
    await waitFor(() => client.connected, 'client still connected')
  })
})
