import { describe, expect, it } from 'vitest'
import { decideConnect, type ConnectPolicy, type ConnectRequest } from '../broker/connect-policy.js'
import type { AuthResult } from '../broker/types.js'
import { credentialsFrom, devicesIn, TOKENS } from './broker.harness.js'

const policy: ConnectPolicy = {
  allowAnonymous: false,
  keepaliveMinSec: 5,
  keepaliveMaxSec: 600,
  maxPayloadBytes: 1024,
  checkCredentials: credentialsFrom(TOKENS),
  isRegisteredDevice: devicesIn(TOKENS),
}

const device: ConnectRequest = {
  clientId: 'dev-a', clean: true, keepaliveSec: 30, username: 'dev-a', password: Buffer.from('token-a'), will: undefined,
}
const observer: ConnectRequest = {
  clientId: 'Grafana', clean: true, keepaliveSec: 30, username: 'observer:ops', password: Buffer.from('token-ops'), will: undefined,
}
const anonymous: ConnectRequest = { clientId: 'Anon:1', clean: true, keepaliveSec: 30, username: undefined, password: undefined, will: undefined }
const stateWill = { topic: 'devices/dev-a/state', retain: true, payloadBytes: 40 }

describe('decideConnect', () => {
  it.each<[string, ConnectRequest, Partial<ConnectPolicy>, string | { kind: string }]>([
    ['device with its token', device, {}, { kind: 'device' }],
    ['device with its state Will', { ...device, will: stateWill }, {}, { kind: 'device' }],
    ['device, persistent session', { ...device, clean: false }, {}, { kind: 'device' }],
    ['keepalive at the minimum', { ...device, keepaliveSec: 5 }, {}, { kind: 'device' }],
    ['keepalive at the maximum', { ...device, keepaliveSec: 600 }, {}, { kind: 'device' }],
    ['observer', observer, {}, { kind: 'observer' }],
    ['observer, empty id, clean', { ...observer, clientId: '' }, {}, { kind: 'observer' }],
    ['anonymous when allowed', anonymous, { allowAnonymous: true }, { kind: 'anonymous' }],
    ['anonymous, empty id, clean, allowed', { ...anonymous, clientId: '' }, { allowAnonymous: true }, { kind: 'anonymous' }],
    // Any id the specification allows, but a registered device's (issue #15).
    ['anonymous with an ordinary id', { ...anonymous, clientId: 'myclientid' }, { allowAnonymous: true }, { kind: 'anonymous' }],
    ['anonymous with the id of a device not registered', { ...anonymous, clientId: 'dev-z' }, { allowAnonymous: true }, { kind: 'anonymous' }],
    ['anonymous with / + # in its id', { ...anonymous, clientId: 'a/b+c#' }, { allowAnonymous: true }, { kind: 'anonymous' }],
    ['observer with an ordinary id', { ...observer, clientId: 'dashboard1' }, {}, { kind: 'observer' }],
    ['observer with / in its id', { ...observer, clientId: 'A/b' }, {}, { kind: 'observer' }],

    ['empty id without clean session [MQTT-3.1.3-8]', { ...observer, clientId: '', clean: false }, {}, 'EMPTY_ID_PERSISTENT'],
    ['client id over 64 characters', { ...observer, clientId: 'X'.repeat(65) }, {}, 'BAD_CLIENT_ID'],
    ['keepalive 0', { ...device, keepaliveSec: 0 }, {}, 'KEEPALIVE_OUT_OF_RANGE'],
    ['keepalive below the minimum', { ...device, keepaliveSec: 4 }, {}, 'KEEPALIVE_OUT_OF_RANGE'],
    ['keepalive above the maximum', { ...device, keepaliveSec: 601 }, {}, 'KEEPALIVE_OUT_OF_RANGE'],
    ['anonymous when not allowed', anonymous, {}, 'ANONYMOUS_REFUSED'],
    ['anonymous with a registered device\'s id', { ...anonymous, clientId: 'dev-a' }, { allowAnonymous: true }, 'BAD_CLIENT_ID'],
    ['device whose client id differs from its username', { ...device, clientId: 'dev-b' }, {}, 'BAD_CLIENT_ID'],
    ['device with an empty client id', { ...device, clientId: '' }, {}, 'BAD_CLIENT_ID'],
    ['username outside the device grammar', { ...device, clientId: 'Dev-A', username: 'Dev-A' }, {}, 'BAD_CREDENTIALS'],
    ['device without a password', { ...device, password: undefined }, {}, 'BAD_CREDENTIALS'],
    ['device with a wrong token', { ...device, password: Buffer.from('token-b') }, {}, 'BAD_CREDENTIALS'],
    ['unknown device', { ...device, clientId: 'dev-z', username: 'dev-z' }, {}, 'BAD_CREDENTIALS'],
    ['observer with a registered device\'s id', { ...observer, clientId: 'dev-b' }, {}, 'BAD_CLIENT_ID'],
    ['observer with a malformed name', { ...observer, username: 'observer:' }, {}, 'BAD_CREDENTIALS'],
    ['observer with a wrong token', { ...observer, password: Buffer.from('token-a') }, {}, 'BAD_CREDENTIALS'],
    ['Will on another device', { ...device, will: { ...stateWill, topic: 'devices/dev-b/state' } }, {}, 'WILL_DENIED'],
    ['Will on telemetry, retained', { ...device, will: { ...stateWill, topic: 'devices/dev-a/telemetry' } }, {}, 'WILL_DENIED'],
    ['Will payload over the limit', { ...device, will: { ...stateWill, payloadBytes: 1025 } }, {}, 'WILL_DENIED'],
    ['observer with a Will', { ...observer, will: { topic: 'chat', retain: false, payloadBytes: 1 } }, {}, 'WILL_DENIED'],
  ])('%s', (_name, request, overrides, expected) => {
    const decision = decideConnect(request, { ...policy, ...overrides })
    if (typeof expected === 'string') {
      expect(decision).toMatchObject({ ok: false, code: expected })
    } else {
      expect(decision).toMatchObject({ ok: true, principal: expected })
    }
  })

  it.each<[string, number]>([
    ['EMPTY_ID_PERSISTENT', 2], ['BAD_CLIENT_ID', 2], ['KEEPALIVE_OUT_OF_RANGE', 5], ['ANONYMOUS_REFUSED', 5], ['BAD_CREDENTIALS', 4],
  ])('%s answers CONNACK %i', (code, returnCode) => {
    const requests: Record<string, ConnectRequest> = {
      EMPTY_ID_PERSISTENT: { ...observer, clientId: '', clean: false },
      BAD_CLIENT_ID: { ...device, clientId: 'dev-b' },
      KEEPALIVE_OUT_OF_RANGE: { ...device, keepaliveSec: 0 },
      ANONYMOUS_REFUSED: anonymous,
      BAD_CREDENTIALS: { ...device, password: Buffer.from('x') },
    }
    expect(decideConnect(requests[code] as ConnectRequest, policy)).toMatchObject({ ok: false, code, returnCode })
  })

  it('passes on the hub\'s own refusal code and checks the principal it returns', () => {
    const unavailable = (): AuthResult => ({ ok: false, returnCode: 3, reason: 'registry busy' })
    expect(decideConnect(device, { ...policy, checkCredentials: unavailable }))
      .toMatchObject({ ok: false, code: 'CREDENTIALS_REFUSED', returnCode: 3, reason: 'registry busy' })
    const wrongPrincipal = (): AuthResult => ({ ok: true, principal: { kind: 'device', id: 'dev-b' } })
    expect(decideConnect(device, { ...policy, checkCredentials: wrongPrincipal }))
      .toMatchObject({ ok: false, code: 'PRINCIPAL_MISMATCH', returnCode: 5 })
  })

  it('never asks for credentials when the CONNECT is malformed', () => {
    let calls = 0
    const counting = (): AuthResult => {
      calls++
      return { ok: true, principal: { kind: 'device', id: 'dev-a' } }
    }
    decideConnect({ ...device, keepaliveSec: 0 }, { ...policy, checkCredentials: counting })
    decideConnect({ ...device, clientId: 'dev-b' }, { ...policy, checkCredentials: counting })
    expect(calls).toBe(0)
  })
})
