import { afterEach, describe, expect, it } from 'vitest'
import { connect as netConnect } from 'node:net'
import { pino } from 'pino'
import mqtt, { type MqttClient } from 'mqtt'
import { ConfigError, loadHubConfig, type HubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { adminApi } from '../common/admin-http.js'
import { connectDevice, tempDir, waitFor } from './support/hub.js'

/**
 * Issue #12, section 2, at the hub: idle sockets cannot keep a device out
 * (M15b), and a SUBSCRIBE flood is logged in a bounded number of lines and
 * ends the client's connection through its bad-message budget (M24); the
 * metrics say which limit fired.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function hubWithLogs(overrides: Partial<HubConfig>) {
  const tmp = tempDir('conn-limits')
  cleanups.push(tmp.remove)
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
  const config = loadHubConfig({ dataDir: tmp.dir, mqttPort: 0, httpPort: 0, ...overrides }, {})
  const hub = createHub(config, { logger })
  const running = await hub.start()
  cleanups.push(() => hub.stop())
  const api = adminApi({ api: `http://127.0.0.1:${running.httpPort}`, token: running.adminToken })
  const addDevice = async (id: string) => (await api<{ token: string }>('POST', '/api/devices', { id })).body.token
  const metric = async (line: string) => {
    const res = await fetch(`http://127.0.0.1:${running.httpPort}/metrics`, { headers: { authorization: `Bearer ${running.adminToken}` } })
    const text = await res.text()
    return Number(text.split('\n').find((l) => l.startsWith(line + ' '))?.slice(line.length + 1))
  }
  return { running, url: `mqtt://127.0.0.1:${running.mqttPort}`, lines, addDevice, api, metric }
}

describe('connection limits at the hub', () => {
  it('refuses maxPendingConnections at or above maxConnections, saying what to change', () => {
    expect(() => loadHubConfig({ maxConnections: 100, maxPendingConnections: 1000 }, {})).toThrow(ConfigError)
    expect(() => loadHubConfig({ maxConnections: 100, maxPendingConnections: 1000 }, {})).toThrow(/maxPendingConnections \(1000\) must be below maxConnections \(100\)/)
    // Not set, they follow a small maxConnections: a tenth of it, and the per-address one at most that.
    expect(loadHubConfig({ maxConnections: 100 }, {})).toMatchObject({ maxPendingConnections: 10, maxPendingPerAddress: 10 })
    expect(loadHubConfig({}, {}, { maxConnections: 5000 })).toMatchObject({ maxPendingConnections: 500, maxPendingPerAddress: 100 })
    expect(loadHubConfig({}, {})).toMatchObject({ maxConnections: 20_000, maxPendingConnections: 1000, maxPendingPerAddress: 100 })
    expect(() => loadHubConfig({ maxPendingConnections: 10, maxPendingPerAddress: 20 }, {})).toThrow(/maxPendingPerAddress/)
  })

  it('100 idle sockets from 127.0.0.2 cannot keep a device from 127.0.0.1 out of a hub with maxConnections 100', async () => {
    const hub = await hubWithLogs({ maxConnections: 100, maxPendingConnections: 50, maxPendingPerAddress: 10 })
    const token = await hub.addDevice('dev-1')
    const idle = Array.from({ length: 100 }, () => {
      const s = netConnect({ host: '127.0.0.1', port: hub.running.mqttPort, localAddress: '127.0.0.2' })
      s.on('error', () => undefined)
      cleanups.push(() => s.destroy())
      return s
    })
    await Promise.all(idle.map((s) => new Promise((resolve) => { s.once('connect', resolve); s.once('close', resolve) })))
    const broker = hub.running.broker
    await waitFor(() => broker.stats().sockets + broker.stats().acceptsRefused === 100, 'every idle socket taken or refused')
    const device = await connectDevice(hub.url, 'dev-1', token)
    cleanups.push(() => device.endAsync(true))
    expect(device.connected).toBe(true)
    expect(await hub.metric('rollcall_broker_limit_refusals_total{limit="pending_per_address"}')).toBe(90)
    expect(await hub.metric('rollcall_broker_pending_sockets')).toBe(10)
  }, 60_000)

  it('a 10,000-filter SUBSCRIBE costs a bounded number of log lines and the connection, through the bad-message budget', async () => {
    const hub = await hubWithLogs({ badMessagesPerMinute: 100 })
    const token = await hub.addDevice('dev-b')
    const filters: Record<string, { qos: 0 }> = {}
    for (let i = 0; i < 10_000; i++) filters[i.toString(36).padStart(3, '0')] = { qos: 0 }
    const flooder: MqttClient = await mqtt.connectAsync(hub.url, { clientId: 'dev-b', username: 'dev-b', password: token, reconnectPeriod: 0, keepalive: 30 })
    cleanups.push(() => flooder.endAsync(true))
    const closed = new Promise<void>((resolve) => flooder.once('close', () => resolve()))
    flooder.subscribe(filters, () => undefined)
    await closed
    // A well-behaved device is served meanwhile.
    const other = await connectDevice(hub.url, 'dev-c', await hub.addDevice('dev-c'))
    cleanups.push(() => other.endAsync(true))
    expect(other.connected).toBe(true)
    const denied = hub.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('subscribe denied'))
    expect(denied.length).toBeLessThanOrEqual(11)
    expect(hub.lines.filter((l) => l.msg === 'client cut off: too many bad messages')).toHaveLength(1)
    expect(hub.lines.filter((l) => l.msg === 'disconnecting client' && l.clientId === 'dev-b')).toHaveLength(1)
    expect(hub.lines.length).toBeLessThan(100)
    expect(await hub.metric('rollcall_broker_limit_refusals_total{limit="filters_per_subscribe"}')).toBe(9_900)
  }, 60_000)
})
