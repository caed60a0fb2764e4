import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import type { Clock } from '../../common/clock.js'
import { createLogger, silentLogger } from '../../common/logger.js'
import { loadHubConfig, type HubConfig } from '../../hub/config.js'
import { createHub, type RunningHub } from '../../hub/hub.js'
import { adminApi, type AdminApi } from '../../common/admin-http.js'
import { topics, type TelemetryAck } from '../../protocol/index.js'

/** A temp dir removed by the returned function. */
export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `rollcall-${prefix}-`))
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

export interface TestHub {
  readonly running: RunningHub
  /** mqtt://127.0.0.1:PORT, or mqtts:// on the TLS port when the hub serves TLS without plaintext MQTT. */
  readonly mqttUrl: string
  /** mqtts://127.0.0.1:TLSPORT when TLS is on. */
  readonly mqttsUrl: string | undefined
  /** http(s)://127.0.0.1:PORT */
  readonly httpUrl: string
  readonly dataDir: string
  readonly api: AdminApi
  addDevice(id: string, group?: string): Promise<string>
  stop(): Promise<void>
}

/**
 * A real hub in this process: aedes on port 0, SQLite in a temp dir, HTTP on port 0.
 * With a `clock` (common/clock.ts, manualClock), the hub's time and its timers (the job
 * sweeper, command deadlines) are the test's to move.
 * With tlsCert/tlsKey in `overrides` (test/support/tls.ts makes them), pass `tls.ca`:
 * the admin API is then called over HTTPS, pinning that CA.
 */
export async function startTestHub(overrides: Partial<HubConfig> = {}, dataDir?: string, tls?: { ca: string }, clock?: Clock): Promise<TestHub> {
  const tmp = dataDir ? undefined : tempDir('hub')
  const dir = dataDir ?? tmp!.dir
  const config = loadHubConfig({ dataDir: dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, logLevel: 'silent', ...overrides }, {})
  const hub = createHub(config, { logger: config.logLevel === 'silent' ? silentLogger() : createLogger({ level: config.logLevel, destination: 2 }), ...(clock ? { clock } : {}) })
  const running = await hub.start()
  const httpUrl = `${running.tls ? 'https' : 'http'}://127.0.0.1:${running.httpPort}`
  if (running.tls && !tls) throw new Error('startTestHub: a TLS hub needs { ca } to call its API')
  const api = adminApi({ api: httpUrl, token: running.adminToken, ...(running.tls ? { ca: tls!.ca } : {}) })
  const mqttsUrl = running.mqttTlsPort !== undefined ? `mqtts://127.0.0.1:${running.mqttTlsPort}` : undefined
  return {
    running,
    mqttUrl: running.mqttPort !== 0 ? `mqtt://127.0.0.1:${running.mqttPort}` : mqttsUrl!,
    mqttsUrl,
    httpUrl,
    dataDir: dir,
    api,
    async addDevice(id, group) {
      const r = await api<{ token: string }>('POST', '/api/devices', { id, ...(group ? { group } : {}) })
      if (r.status !== 201) throw new Error(`addDevice ${id}: ${r.status} ${JSON.stringify(r.body)}`)
      return r.body.token
    },
    async stop() {
      await hub.stop()
      tmp?.remove()
    },
  }
}

/**
 * A hub and its device `dev-1`, connected by hand and subscribed to its
 * telemetry acks, which collect in `acks`; both are closed by `cleanups`.
 */
export async function hubWithDevice(cleanups: Array<() => Promise<unknown> | void>, overrides: Partial<HubConfig> = {}): Promise<{ hub: TestHub; dev: MqttClient; acks: TelemetryAck[] }> {
  const hub = await startTestHub(overrides)
  cleanups.push(() => hub.stop())
  const token = await hub.addDevice('dev-1')
  const dev = await connectDevice(hub.mqttUrl, 'dev-1', token)
  cleanups.push(() => dev.endAsync())
  const acks: TelemetryAck[] = []
  dev.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
  await dev.subscribeAsync(topics.telemetryAck('dev-1'), { qos: 1 })
  return { hub, dev, acks }
}

/** A raw MQTT.js client logged in as a device, for tests that speak the wire protocol by hand. */
export async function connectDevice(url: string, id: string, token: string, extra: mqtt.IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { clientId: id, username: id, password: token, clean: true, reconnectPeriod: 0, keepalive: 30, ...extra })
}

/** Polls until `check` returns a truthy value or the deadline passes. */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 30_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  while (Date.now() < deadline) {
    last = await check()
    if (last) return last
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`)
}

