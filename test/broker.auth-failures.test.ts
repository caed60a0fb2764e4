import { describe, expect, it } from 'vitest'
import { manualClock } from '../common/clock.js'
import { AUTH_FAILURE_DEFAULTS, createAuthFailures } from '../broker/auth-failures.js'
import {
  connackCode, deviceOptions, leakCheckedCleanups, rawConnect, startBroker,
} from './broker.harness.js'

/** A source that keeps failing authentication is shut out for a while; a good fleet is not. */
describe('auth failure penalty (pure)', () => {
  it('bans an address after maxFailures within the window, and lets it back after banMs', () => {
    const clock = manualClock(1_000_000)
    const f = createAuthFailures({ maxFailures: 3, windowMs: 1000, banMs: 5000, maxAddresses: 10, clock })
    expect([f.failed('a'), f.failed('a'), f.failed('a')]).toEqual([false, false, false])
    expect(f.banned('a')).toBe(false)
    expect(f.failed('a')).toBe(true) // the 4th in the window starts the ban
    expect(f.banned('a')).toBe(true)
    expect(f.banned('b')).toBe(false)
    clock.advance(4999)
    expect(f.banned('a')).toBe(true)
    clock.advance(1)
    expect(f.banned('a')).toBe(false)
  })

  it('forgets failures spread over more than the window (a retrying agent is never banned)', () => {
    const clock = manualClock(0)
    const f = createAuthFailures({ maxFailures: 3, windowMs: 1000, banMs: 5000, maxAddresses: 10, clock })
    for (let i = 0; i < 20; i++) {
      expect(f.failed('a')).toBe(false)
      clock.advance(500) // two failures a second, like an agent at its fastest backoff
    }
    expect(f.banned('a')).toBe(false)
  })

  it('tracks a bounded number of addresses', () => {
    const clock = manualClock(0)
    const f = createAuthFailures({ maxFailures: 1, windowMs: 1000, banMs: 5000, maxAddresses: 2, clock })
    f.failed('a'); f.failed('a')
    f.failed('b')
    f.failed('c') // evicts the oldest entry, 'a'
    expect(f.banned('a')).toBe(false)
  })
})

describe('auth failure penalty (broker)', () => {
  const cleanups = leakCheckedCleanups()

  it('refused CONNECTs take no rate tokens, and a flood of them shuts its address out', async () => {
    const clock = manualClock(Date.now())
    // A bucket of 5: if refused CONNECTs took tokens, the good device below would get CONNACK 3.
    const { broker, url, port } = await startBroker(cleanups, { clock, connectRatePerSec: 0.001, connectBurst: 5 })
    const bad = { clientId: 'dev-a', username: 'dev-a', password: 'wrong' }
    for (let i = 0; i < AUTH_FAILURE_DEFAULTS.maxFailures; i++) expect(await connackCode(url, bad)).toBe(4)
    expect(await connackCode(url, deviceOptions('dev-a'))).toBe(0)
    // One more failure starts the ban: even good credentials from this address are now cut at accept.
    expect(await connackCode(url, bad)).toBe(4)
    const cut = await rawConnect(cleanups, port)
    await cut.closed
    expect(broker.stats().acceptsRefused).toBe(1)
    clock.advance(AUTH_FAILURE_DEFAULTS.banMs)
    expect(await connackCode(url, deviceOptions('dev-a'))).toBe(0)
  })
})
