import { describe, expect, it } from 'vitest'
import { connect as netConnect, type Socket } from 'node:net'
import { createPendingSockets, decideAccept, type AcceptDecision, type AcceptState } from '../broker/accept-policy.js'
import { connackCode, connectClient, deviceOptions, HOST, leakCheckedCleanups, startBroker, TOKENS, waitFor, type Cleanups } from './broker.harness.js'

/** M15b: sockets that have not sent CONNECT are limited per address and in total, below maxConnections. */

const limits = { maxConnections: 100, maxPendingConnections: 20, maxPendingPerAddress: 5 }
const calm: AcceptState = { closing: false, banned: false, sockets: 10, pending: 2, pendingFromAddress: 1 }

describe('accept policy (pure)', () => {
  it.each<[string, Partial<AcceptState>, AcceptDecision]>([
    ['a socket with room everywhere', {}, { ok: true, evictOldestPending: false }],
    ['anything while the broker closes', { closing: true }, { ok: false, cause: 'closing' }],
    ['a banned source', { banned: true }, { ok: false, cause: 'banned' }],
    ['a source already holding maxPendingPerAddress', { pendingFromAddress: 5 }, { ok: false, cause: 'pending-per-address' }],
    ['one below maxPendingPerAddress', { pendingFromAddress: 4 }, { ok: true, evictOldestPending: false }],
    ['pending slots full: the oldest pending socket makes room', { pending: 20 }, { ok: true, evictOldestPending: true }],
    ['every slot full with pending ones among them: eviction frees one', { sockets: 100, pending: 20 }, { ok: true, evictOldestPending: true }],
    ['every slot full, a few of them pending: the oldest pending one still makes room', { sockets: 100, pending: 3 }, { ok: true, evictOldestPending: true }],
    ['every slot held by authenticated clients', { sockets: 100, pending: 0 }, { ok: false, cause: 'max-connections' }],
    ['per-address before the global count', { sockets: 100, pendingFromAddress: 5 }, { ok: false, cause: 'pending-per-address' }],
  ])('%s', (_name, state, expected) => {
    expect(decideAccept({ ...calm, ...state }, limits)).toEqual(expected)
  })

  it('tracks pending sockets per address, oldest first, and settles each once', () => {
    const p = createPendingSockets<string>()
    p.add('s1', '10.0.0.1')
    p.add('s2', '10.0.0.1')
    p.add('s3', '10.0.0.2')
    expect([p.size, p.fromAddress('10.0.0.1'), p.fromAddress('10.0.0.2'), p.fromAddress('10.0.0.3')]).toEqual([3, 2, 1, 0])
    expect(p.oldest()).toBe('s1')
    p.settle('s1')
    p.settle('s1')
    expect([p.size, p.fromAddress('10.0.0.1'), p.oldest()]).toEqual([2, 1, 's2'])
    p.settle('s2')
    p.settle('s3')
    expect([p.size, p.fromAddress('10.0.0.1'), p.oldest()]).toEqual([0, 0, undefined])
  })
})

/** Opens `n` sockets from `localAddress` that never send a byte; resolves once each is connected or closed. */
async function idleSockets(cleanups: Cleanups, port: number, localAddress: string, n: number): Promise<Socket[]> {
  const socks = Array.from({ length: n }, () => {
    const s = netConnect({ host: HOST, port, localAddress })
    s.on('error', () => undefined)
    cleanups.add(() => { s.destroy() })
    return s
  })
  await Promise.all(socks.map((s) => new Promise<void>((resolve) => {
    s.once('connect', () => resolve())
    s.once('close', () => resolve())
  })))
  return socks
}

describe('accept policy (broker)', () => {
  const cleanups = leakCheckedCleanups()

  it('100 idle sockets from one address cannot keep a device from another address out of a broker with maxConnections 100', async () => {
    const { broker, url, port } = await startBroker(cleanups, { maxConnections: 100, maxPendingConnections: 50, maxPendingPerAddress: 10 })
    // 127.0.0.2 is another source on loopback (Linux routes 127.0.0.0/8 to lo); the broker listens on 127.0.0.1.
    await idleSockets(cleanups, port, '127.0.0.2', 100)
    await waitFor(() => broker.stats().acceptsRefused + broker.stats().sockets === 100, 'every idle socket taken or refused')
    // The device connects at once, from 127.0.0.1: CONNACK 0.
    expect(await connackCode(url, deviceOptions('dev-a'))).toBe(0)
    expect(broker.stats()).toMatchObject({ connectsAccepted: 1, pending: 10, acceptsRefused: 90, limits: { pendingPerAddress: 90 } })
  })

  it('when every pending slot is taken, the socket waiting longest is closed to make room', async () => {
    const { broker, url, port } = await startBroker(cleanups, { maxPendingConnections: 4, maxPendingPerAddress: 4 })
    const idle = await idleSockets(cleanups, port, '127.0.0.2', 4)
    await waitFor(() => broker.stats().sockets === 4, 'four sockets accepted')
    const firstClosed = new Promise<void>((resolve) => idle[0]!.once('close', () => resolve()))
    expect(await connackCode(url, deviceOptions('dev-a'))).toBe(0)
    await firstClosed
    expect(broker.stats().limits.pendingEvicted).toBe(1)
    expect(idle.slice(1).every((s) => !s.destroyed)).toBe(true)
  })

  it('a socket stops counting as pending once its CONNECT is decided', async () => {
    const { broker, url } = await startBroker(cleanups, { maxPendingConnections: 2, maxPendingPerAddress: 2 })
    // Three clients stay connected from one address whose pending limit is 2, and a refused one comes and goes.
    await connectClient(cleanups, url, deviceOptions('dev-a'))
    await connectClient(cleanups, url, deviceOptions('dev-b'))
    await connectClient(cleanups, url, { clientId: 'Grafana:1', username: 'observer:ops', password: TOKENS['observer:ops'] })
    expect(await connackCode(url, { clientId: 'dev-z', username: 'dev-z', password: 'wrong' })).toBe(4)
    expect(broker.stats()).toMatchObject({ connections: 3, pending: 0, acceptsRefused: 0 })
  })
})
