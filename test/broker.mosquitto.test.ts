import { describe, expect, it } from 'vitest'
import type { InboundMessage } from '../broker/types.js'
import {
  HOST, leakCheckedCleanups, run, sleep, startBroker, TOKENS, waitFor,
} from './broker.harness.js'
import { SKIP_WITHOUT_MOSQUITTO } from './support/mosquitto.js'

/** Black-box checks with the Mosquitto command-line clients: what an operator would see. */

const cleanups = leakCheckedCleanups()

function as(id: string): string[] {
  return ['-i', id, '-u', id, '-P', TOKENS[id] ?? 'none']
}

// Skipped only where mosquitto-clients are missing outside CI (see support/mosquitto.ts).
describe.skipIf(SKIP_WITHOUT_MOSQUITTO)('mosquitto clients', () => {
  it('mosquitto_pub: a device\'s own telemetry reaches the hub', async () => {
    const { broker, port } = await startBroker(cleanups)
    const got: InboundMessage[] = []
    await broker.subscribe('devices/+/telemetry', (m) => {
      got.push(m)
    })
    const exit = await run(cleanups, 'mosquitto_pub', ['-h', HOST, '-p', String(port), ...as('dev-a'), '-q', '1', '-t', 'devices/dev-a/telemetry', '-m', '{"v":1}']).exit
    expect(exit.code).toBe(0)
    await waitFor(() => got.length === 1, 'telemetry at the hub')
    expect(got[0]).toMatchObject({ clientId: 'dev-a', payload: Buffer.from('{"v":1}') })
  })

  it('mosquitto_pub: publishing on another device\'s topic loses the connection and delivers nothing', async () => {
    const { broker, port } = await startBroker(cleanups)
    const got: InboundMessage[] = []
    await broker.subscribe('devices/#', (m) => {
      got.push(m)
    })
    const exit = await run(cleanups, 'mosquitto_pub', ['-h', HOST, '-p', String(port), ...as('dev-a'), '-q', '1', '-t', 'devices/dev-b/telemetry', '-m', 'spoof']).exit
    expect(exit.code).not.toBe(0)
    expect(got).toEqual([])
    expect(broker.stats().violations).toBe(1)
  })

  it('mosquitto_sub: subscribing to another device\'s commands is denied with SUBACK 0x80, not a dropped connection', async () => {
    const { broker, port } = await startBroker(cleanups)
    const ends: string[] = []
    broker.on('disconnected', (_info, reason) => ends.push(reason))
    const exit = await run(cleanups, 'mosquitto_sub', ['-h', HOST, '-p', String(port), ...as('dev-a'), '-q', '1', '-t', 'devices/dev-b/cmd/req', '-W', '3']).exit
    // mosquitto_sub 2.0 reports the 0x80 and leaves on its own, with DISCONNECT.
    expect(exit.stderr).toMatch(/All subscription requests were denied/)
    await waitFor(() => ends.length === 1, 'disconnected event')
    expect(ends).toEqual(['client-disconnect'])
  })

  it('mosquitto_sub: anonymous is refused as not authorised', async () => {
    const { port } = await startBroker(cleanups)
    const exit = await run(cleanups, 'mosquitto_sub', ['-h', HOST, '-p', String(port), '-t', 'chat', '-W', '3']).exit
    expect(exit.code).not.toBe(0)
    expect(exit.stderr).toMatch(/Connection Refused: not authori[sz]ed/)
  })

  it('mosquitto_sub: a wrong token is refused as bad user name or password', async () => {
    const { port } = await startBroker(cleanups)
    const exit = await run(cleanups, 'mosquitto_sub', ['-h', HOST, '-p', String(port), '-i', 'dev-a', '-u', 'dev-a', '-P', 'wrong', '-t', 'devices/dev-a/cmd/req', '-W', '3']).exit
    expect(exit.code).not.toBe(0)
    expect(exit.stderr).toMatch(/Connection Refused: bad user name or password/)
  })

  it('mosquitto_sub: a keepalive below the minimum is refused as not authorised', async () => {
    // mosquitto_sub will not send keepalive 0 itself (MQTT.js covers that in broker.connect).
    const { port } = await startBroker(cleanups, { keepaliveMinSec: 10 })
    const exit = await run(cleanups, 'mosquitto_sub', ['-h', HOST, '-p', String(port), ...as('dev-a'), '-k', '5', '-t', 'devices/dev-a/cmd/req', '-W', '3']).exit
    expect(exit.code).not.toBe(0)
    expect(exit.stderr).toMatch(/Connection Refused: not authori[sz]ed/)
  })

  it('mosquitto_sub as an observer receives telemetry sent with mosquitto_pub', async () => {
    const { broker, port } = await startBroker(cleanups)
    const subscribed = new Promise<void>((resolve) => broker.on('connected', (info) => {
      if (info.clientId === 'Ops:cli') resolve()
    }))
    const sub = run(cleanups, 'mosquitto_sub', ['-h', HOST, '-p', String(port), '-i', 'Ops:cli', '-u', 'observer:ops', '-P', TOKENS['observer:ops'] ?? '',
      '-q', '1', '-t', 'devices/+/telemetry', '-C', '1', '-v', '-W', '30'])
    await subscribed
    // CONNECT precedes SUBSCRIBE; publish until the subscription is in place.
    let exited = false
    void sub.exit.then(() => {
      exited = true
    })
    let published = 0
    const deadline = Date.now() + 25_000
    while (!exited && Date.now() < deadline) {
      published++
      await run(cleanups, 'mosquitto_pub', ['-h', HOST, '-p', String(port), ...as('dev-a'), '-q', '1', '-t', 'devices/dev-a/telemetry', '-m', 'hello']).exit
      await sleep(100)
    }
    const exit = await sub.exit
    expect(published).toBeGreaterThan(0)
    expect(exit.code).toBe(0)
    expect(exit.stdout.trim()).toBe('devices/dev-a/telemetry hello')
  })
})
