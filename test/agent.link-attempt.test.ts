import { describe, expect, it } from 'vitest'
import { birthOf, connectOptions, deathOf } from '../agent/link-attempt.js'
import { connectionHint } from '../agent/link-failures.js'
import { topics } from '../protocol/topics.js'

/** What one attempt of the link presents to the hub, and the hint for a failed one: pure, as tables. */

const identity = { deviceId: 'dev-1', token: 'tok', storeId: 'store-1', bootId: 'boot-1', agentVersion: '1.2.3', capabilities: ['cmd:ping'] }

describe('birthOf', () => {
  it.each<[string, Parameters<typeof birthOf>[2], Record<string, unknown>]>([
    ['plain', {}, {}],
    ['with units', { units: { temp: '°C' } }, { units: { temp: '°C' } }],
    ['with the clock', { clockMs: 1_700_000_000_000 }, { clock: 1_700_000_000_000 }],
    ['with both', { units: {}, clockMs: 5 }, { units: {}, clock: 5 }],
  ])('%s', (_name, extras, added) => {
    expect(birthOf(identity, 7, extras)).toEqual({
      type: 'birth', v: 1, epoch: 7, bootId: 'boot-1', agentVersion: '1.2.3', storeId: 'store-1', capabilities: ['cmd:ping'], ...added,
    })
  })
})

describe('connectOptions', () => {
  it('presents the device id and token, never reconnects by itself, and wills the death of its epoch, retained', () => {
    const topic = topics.state('dev-1')
    const o = connectOptions({ ...identity, keepaliveSec: 30, connectTimeoutMs: 10_000 }, topic, 9)
    expect(o).toMatchObject({ clientId: 'dev-1', username: 'dev-1', password: 'tok', clean: true, keepalive: 30, connectTimeout: 10_000, reconnectPeriod: 0, protocolVersion: 4, manualConnect: true })
    expect(o.will).toMatchObject({ topic, qos: 1, retain: true })
    expect(JSON.parse(String(o.will!.payload))).toEqual(deathOf('store-1', 9))
  })
})

describe('connectionHint', () => {
  it.each<[unknown, RegExp]>([
    [2, /client id/],
    [3, /busy/],
    [4, /credentials/],
    [5, /credentials/],
    ['ECONNREFUSED', /nothing listens/],
    ['ENOTFOUND', /does not resolve/],
    ['EHOSTUNREACH', /unreachable/],
    ['EWHATEVER', /keeps retrying/],
  ])('%s', (code, hint) => {
    expect(connectionHint(code)).toMatch(hint)
  })
})
