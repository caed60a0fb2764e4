import { describe, expect, it } from 'vitest'
import mqtt, { type MqttClient } from 'mqtt'
import type { Broker } from '../broker/types.js'
import { WriteCoalescer, type Corked } from '../broker/write-coalescer.js'
import { manualClock, type ManualClock } from '../common/clock.js'
import { connackCode, deviceOptions, leakCheckedCleanups, sleep, startBroker, waitFor } from './broker.harness.js'

/**
 * Coalesced writes (broker/write-coalescer.ts): a connection's writes wait for
 * flushWrites() or writeCoalesceMs, then leave together; nothing is lost,
 * including what aedes writes just before it closes a connection.
 */
const cleanups = leakCheckedCleanups()

/**
 * Connects devices while the broker's held writes are released every 20 ms
 * (CONNACKs and SUBACKs leave at once, but what follows them, a retained
 * message say, is held like any write), runs `then` with them, and stops
 * releasing: from then on only the test releases anything.
 */
async function connectAll(broker: Pick<Broker, 'flushWrites'>, url: string, ids: readonly string[], then?: (clients: MqttClient[]) => Promise<unknown>): Promise<MqttClient[]> {
  const releasing = setInterval(() => broker.flushWrites(), 20)
  try {
    const clients: MqttClient[] = []
    for (const id of ids) {
      const c = mqtt.connect(url, { ...deviceOptions(id), reconnectPeriod: 0, keepalive: 30 })
      cleanups.add(() => c.endAsync(true))
      await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject) })
      clients.push(c)
    }
    await then?.(clients)
    return clients
  } finally {
    clearInterval(releasing)
  }
}

/** Publishes one QoS 1 message: its PUBACK must not come for 300 ms, and must come after flushWrites(). */
async function expectPubackHeldUntilFlush(broker: Pick<Broker, 'flushWrites'>, client: MqttClient, deviceId: string): Promise<void> {
  let acked = false
  client.publish(`devices/${deviceId}/telemetry`, '{}', { qos: 1 }, () => { acked = true })
  await sleep(300)
  expect(acked).toBe(false)
  broker.flushWrites()
  await waitFor(() => acked, 'PUBACK after flushWrites()')
}

describe('coalesced writes', () => {
  it('hold a PUBACK until flushWrites(), then deliver it', async () => {
    // Long enough that only flushWrites() can release anything during the test.
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const client = (await connectAll(broker, url, ['dev-a']))[0]!
    await expectPubackHeldUntilFlush(broker, client, 'dev-a')
  })

  it('send what the broker publishes to a device at once, with what that connection held, and nothing of another\'s', async () => {
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const [a, b] = await connectAll(broker, url, ['dev-a', 'dev-b'], ([c]) => c!.subscribeAsync('devices/dev-a/cmd/req', { qos: 1 })) as [MqttClient, MqttClient]
    const acked = new Set<string>()
    const received: string[] = []
    a.on('message', (topic) => received.push(topic))
    a.publish('devices/dev-a/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-a') })
    b.publish('devices/dev-b/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-b') })
    await sleep(300)
    expect([...acked]).toEqual([])
    // A command, say: published by the hub after the commit that recorded it.
    await broker.publish('devices/dev-a/cmd/req', Buffer.from('{}'), { qos: 1 })
    await waitFor(() => received.length > 0 && acked.has('dev-a'), 'the command and dev-a\'s held PUBACK without a flush')
    await sleep(300)
    expect(acked.has('dev-b')).toBe(false)
    broker.flushWrites()
    await waitFor(() => acked.has('dev-b'), 'dev-b\'s PUBACK after flushWrites()')
  })

  it('sealWrites() closes the set held now: its release sends those PUBACKs and not ones held after the seal', async () => {
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const [a, b] = await connectAll(broker, url, ['dev-a', 'dev-b']) as [MqttClient, MqttClient]
    broker.flushWrites()
    const acked = new Set<string>()
    a.publish('devices/dev-a/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-a') })
    await sleep(300)
    // A commit is written with dev-a's message in it; dev-b's arrives while its fsync runs.
    const release = broker.sealWrites()
    b.publish('devices/dev-b/telemetry', '{}', { qos: 1 }, () => { acked.add('dev-b') })
    await sleep(300)
    expect([...acked]).toEqual([])
    release()
    await waitFor(() => acked.has('dev-a'), 'dev-a\'s PUBACK on its commit\'s release')
    await sleep(300)
    expect(acked.has('dev-b')).toBe(false)
    // Released once: calling it again sends nothing of the next set.
    release()
    await sleep(100)
    expect(acked.has('dev-b')).toBe(false)
    broker.sealWrites()()
    await waitFor(() => acked.has('dev-b'), 'dev-b\'s PUBACK on the next commit\'s release')
  })

  it('release held writes after writeCoalesceMs without a flush', async () => {
    const { url } = await startBroker(cleanups, { writeCoalesceMs: 50 })
    expect(await connackCode(url, deviceOptions('dev-a'))).toBe(0)
  })

  it('still send a refusing CONNACK that aedes writes just before it closes the connection', async () => {
    const { url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    expect(await connackCode(url, { ...deviceOptions('dev-a'), password: 'wrong' })).toBe(4)
  })

  it('refuse a negative writeCoalesceMs with a message naming it', async () => {
    await expect(startBroker(cleanups, { writeCoalesceMs: -1 })).rejects.toThrow(/writeCoalesceMs must be a number from 0 to 2147483647/)
    await expect(startBroker(cleanups, { writeCoalesceMs: 2 ** 31 })).rejects.toThrow(/writeCoalesceMs must be a number from 0 to 2147483647/)
  })

  it('send a CONNACK and a SUBACK at once while other writes are held', async () => {
    const { broker, url } = await startBroker(cleanups, { writeCoalesceMs: 60_000 })
    const c = mqtt.connect(url, { ...deviceOptions('dev-a'), reconnectPeriod: 0, keepalive: 30 })
    cleanups.add(() => c.endAsync(true))
    await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject) })
    await c.subscribeAsync('devices/dev-a/cmd/req', { qos: 1 })
    // Held as before: the PUBACK waits for a release.
    await expectPubackHeldUntilFlush(broker, c, 'dev-a')
  })
})

describe('the coalescer\'s timer', () => {
  /** A connection that counts its releases and keeps the clock's time of the last. */
  function conn(clock?: ManualClock): Corked & { releases: number; at: number | undefined } {
    const c = { releases: 0, at: undefined as number | undefined, release: () => { c.releases++; c.at = clock?.now() } }
    return c
  }

  it('release an open set after maxDelayMs and a sealed one after sealedMaxDelayMs, each counted from its own first write', () => {
    const clock = manualClock()
    const coalescer = new WriteCoalescer(40, clock, 200)
    const a = conn(), b = conn(), c = conn(), d = conn()
    coalescer.hold(a)
    clock.advance(15)
    coalescer.seal() // a's commit: its fsync stalls, and its release does not come
    clock.advance(15)
    coalescer.hold(b) // t = 30: the next set
    clock.advance(5)
    const releaseB = coalescer.seal()
    coalescer.hold(c) // t = 35: the set after that, still open
    clock.advance(39) // t = 74: a and b are sealed, waiting for their commits; c is not due
    expect([a.releases, b.releases, c.releases]).toEqual([0, 0, 0])
    clock.advance(1) // t = 75: c has waited 40 ms
    expect([a.releases, b.releases, c.releases]).toEqual([0, 0, 1])
    releaseB() // b's commit comes
    expect([a.releases, b.releases, c.releases]).toEqual([0, 1, 1])
    clock.advance(25)
    coalescer.hold(d) // t = 100: only a's (later) deadline was set; d's comes first
    clock.advance(39)
    expect(d.releases).toBe(0)
    clock.advance(1) // t = 140
    expect([a.releases, d.releases]).toEqual([0, 1])
    clock.advance(59)
    expect(a.releases).toBe(0)
    clock.advance(1) // t = 200: a has waited for its commit as long as it may
    expect(a.releases).toBe(1)
    expect(coalescer.released).toEqual({ commit: 1, timer: 3, single: 0, flush: 0 })
    expect(coalescer.size).toBe(0)
    expect(clock.pending).toBe(0)
  })

  it('refuse a sealed set\'s cap below the open one\'s, and delays a Node timer cannot take', () => {
    expect(() => new WriteCoalescer(40, manualClock(), 20)).toThrow(/sealedMaxDelayMs must be at least maxDelayMs \(40\) and at most 2147483647, got 20/)
    expect(() => new WriteCoalescer(40, manualClock(), Infinity)).toThrow(/sealedMaxDelayMs must be at least maxDelayMs \(40\) and at most 2147483647, got Infinity/)
    expect(() => new WriteCoalescer(2 ** 31)).toThrow(/maxDelayMs must be a number of ms above 0, at most 2147483647, got 2147483648/)
  })

  it('release one connection out of a sealed set once, leave no timer when nothing is held, and arm none for an empty seal', () => {
    const clock = manualClock()
    const coalescer = new WriteCoalescer(40, clock, 200)
    expect(coalescer.seal()).toBeTypeOf('function')
    expect(clock.pending).toBe(0)
    const a = conn(), b = conn()
    coalescer.hold(a)
    coalescer.hold(b)
    const releaseAB = coalescer.seal()
    coalescer.release(a) // a command for a: it goes now
    expect([a.releases, b.releases]).toEqual([1, 0])
    releaseAB()
    expect([a.releases, b.releases]).toEqual([1, 1])
    expect(clock.pending).toBe(0)
    // A connection released alone while it was the only one held: no timer is left behind.
    coalescer.hold(a)
    coalescer.release(a)
    expect(a.releases).toBe(2)
    expect(clock.pending).toBe(0)
    // flush() releases sealed and open sets alike, and stops the timer.
    coalescer.hold(a)
    const releaseA = coalescer.seal()
    coalescer.hold(b)
    coalescer.flush()
    expect([a.releases, b.releases]).toEqual([3, 2])
    expect(clock.pending).toBe(0)
    releaseA()
    expect(a.releases).toBe(3)
    expect(coalescer.released).toEqual({ commit: 1, timer: 0, single: 2, flush: 2 })
  })

  it('under steady load, release each set by its commit and none by the timer', () => {
    const clock = manualClock()
    const coalescer = new WriteCoalescer(40, clock)
    const conns = Array.from({ length: 50 }, () => conn(clock))
    // A commit every 20 ms whose acks are written 30 ms later (past maxDelayMs from the
    // set's first write); writes keep arriving in between.
    const commits: Array<() => void> = []
    for (let tick = 0; tick < 50; tick++) {
      coalescer.hold(conns[tick]!)
      clock.advance(10)
      if (commits.length === 2) commits.shift()!()
      clock.advance(10)
      commits.push(coalescer.seal())
    }
    for (const release of commits) release()
    // Each connection left once, when its commit's acks were written: 50 ms after its write.
    expect(conns.map((c) => c.releases)).toEqual(conns.map(() => 1))
    expect(conns.slice(0, 48).map((c) => c.at)).toEqual(conns.slice(0, 48).map((_, k) => 20 * k + 50))
    expect(coalescer.released).toEqual({ commit: 50, timer: 0, single: 0, flush: 0 })
    expect(coalescer.size).toBe(0)
    expect(clock.pending).toBe(0)
  })
})
