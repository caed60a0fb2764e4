import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'

/** The admin HTTP API: auth, device and observer lifecycle, and errors that say what to fix. */
type Err = { error: { code: string; message: string } }

describe('hub HTTP API', () => {
  let hub: TestHub
  beforeAll(async () => { hub = await startTestHub() })
  afterAll(async () => { await hub.stop() })

  async function raw(path: string, headers: Record<string, string>) {
    const res = await fetch(`http://127.0.0.1:${hub.running.httpPort}${path}`, { headers })
    return { status: res.status, body: await res.json() as Err }
  }

  it('needs the admin token under /api, accepts any case of "Bearer", and /healthz is open', async () => {
    expect((await raw('/api/devices', {})).status).toBe(401)
    const wrong = await raw('/api/devices', { authorization: 'Bearer nope' })
    expect(wrong.status).toBe(401)
    expect(wrong.body.error.code).toBe('UNAUTHORIZED')
    expect(wrong.body.error.message).toMatch(/admin-token/)
    expect((await raw('/api/devices', { authorization: `bearer ${hub.running.adminToken}` })).status).toBe(200)
    const health = await fetch(`http://127.0.0.1:${hub.running.httpPort}/healthz`)
    expect(health.status).toBe(200)
  })

  it('adds, lists, shows and removes devices; the token is shown once and works', async () => {
    const add = await hub.api<{ id: string; token: string; group: string }>('POST', '/api/devices', { id: 'api-dev-1', group: 'lab' })
    expect(add.status).toBe(201)
    expect(add.body.token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const list = await hub.api<{ devices: Array<{ id: string; token?: string }> }>('GET', '/api/devices?group=lab')
    expect(list.body.devices.map((d) => d.id)).toEqual(['api-dev-1'])
    expect(list.body.devices[0]!.token).toBeUndefined()
    const dup = await hub.api<Err>('POST', '/api/devices', { id: 'api-dev-1' })
    expect([dup.status, dup.body.error.code]).toEqual([409, 'DEVICE_EXISTS'])

    const client = await connectDevice(hub.mqttUrl, 'api-dev-1', add.body.token)
    const closed = new Promise<void>((r) => client.once('close', () => r()))
    expect((await hub.api('DELETE', '/api/devices/api-dev-1')).status).toBe(204)
    await closed
    client.end(true)
    expect((await hub.api<Err>('GET', '/api/devices/api-dev-1')).body.error.code).toBe('DEVICE_NOT_FOUND')
    await expect(connectDevice(hub.mqttUrl, 'api-dev-1', add.body.token)).rejects.toThrow(/Bad username or password|bad user/i)
  })

  it('rotating a token disconnects the device and retires the old token', async () => {
    const old = await hub.addDevice('api-dev-2')
    const client = await connectDevice(hub.mqttUrl, 'api-dev-2', old)
    const closed = new Promise<void>((r) => client.once('close', () => r()))
    const rot = await hub.api<{ token: string }>('POST', '/api/devices/api-dev-2/token')
    expect(rot.status).toBe(200)
    await closed
    client.end(true)
    await expect(connectDevice(hub.mqttUrl, 'api-dev-2', old)).rejects.toThrow()
    const fresh = await connectDevice(hub.mqttUrl, 'api-dev-2', rot.body.token)
    await fresh.endAsync()
  })

  it('removing an observer disconnects it whatever client id it used', async () => {
    const obs = await hub.api<{ username: string; token: string }>('POST', '/api/observers', { name: 'dash' })
    const a = await mqtt.connectAsync(hub.mqttUrl, { clientId: 'Dash-A', username: obs.body.username, password: obs.body.token, reconnectPeriod: 0 })
    const b = await mqtt.connectAsync(hub.mqttUrl, { clientId: 'Dash-B', username: obs.body.username, password: obs.body.token, reconnectPeriod: 0 })
    expect((await hub.api('DELETE', '/api/observers/dash')).status).toBe(204)
    await waitFor(() => !hub.running.broker.isConnected('Dash-A') && !hub.running.broker.isConnected('Dash-B'), 'both observer connections closed')
    a.end(true)
    b.end(true)
  })

  it.each<[string, string, unknown, string, RegExp]>([
    ['POST', '/api/devices', { id: 'x-1', foo: 1 }, 'BAD_REQUEST', /unknown field "foo"/],
    ['POST', '/api/devices', 'text', 'BAD_REQUEST', /JSON object/],
    ['POST', '/api/devices', { id: 'Bad Id' }, 'INVALID_DEVICE_ID', /lowercase letters/],
    ['POST', '/api/devices', { id: 'ok-id', group: 'Bad Group' }, 'INVALID_NAME', /group/],
    ['GET', '/api/devices/nope-1', undefined, 'DEVICE_NOT_FOUND', /nope-1/],
    ['GET', '/api/devices/nope-1/telemetry', undefined, 'DEVICE_NOT_FOUND', /nope-1/],
    ['DELETE', '/api/observers/nope-1', undefined, 'OBSERVER_NOT_FOUND', /nope-1/],
    ['GET', '/api/nothing-here', undefined, 'NOT_FOUND', /no route/],
  ])('%s %s → %s', async (method, path, body, code, message) => {
    const r = await hub.api<Err>(method, path, body)
    expect(r.body.error.code).toBe(code)
    expect(r.body.error.message).toMatch(message)
    expect(r.status).toBeGreaterThanOrEqual(400)
  })

  describe('time parameters', () => {
    beforeAll(async () => { await hub.addDevice('api-dev-t') })
    it.each<[string, number, RegExp | null]>([
      ['since=10m', 200, null],
      ['since=0', 200, null],
      ['since=2026-01-01T00:00:00Z', 200, null],
      ['since=1700000000000&until=1700000060000', 200, null],
      ['since=2026', 400, /epoch milliseconds/],
      ['since=1.5', 400, /not a time/],
      ['since=yesterday', 400, /not a time/],
      ['since=1h&until=2h', 400, /must be before/],
      ['bucket=1', 400, /with its unit/],
      ['bucket=0ms', 400, /not a duration/],
      ['bucket=1m', 200, null],
    ])('%s → %i', async (query, status, message) => {
      const r = await hub.api<Err>('GET', `/api/devices/api-dev-t/telemetry?${query}`)
      expect(r.status).toBe(status)
      if (message) {
        expect(r.body.error.code).toBe('BAD_REQUEST')
        expect(r.body.error.message).toMatch(message)
      }
    })
  })
})
