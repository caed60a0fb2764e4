import { randomUUID } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt, { type MqttClient } from 'mqtt'
import { tlsInit } from '../cli/tls-init.js'
import { startHubProcess, type HubProcess } from './hub-process.js'
import { cpuMs } from './proc-stats.js'

/**
 * TLS against plaintext, in the same run and against the same hub process
 * (issue #12: "TLS costs CPU per byte; say how much"). The hub serves both
 * listeners (TLS plus --allow-plaintext on loopback); the same devices, as
 * MQTT.js clients, send the same telemetry batches, QoS 1 with 4 in flight
 * each, first over mqtt:// and then over mqtts://. Connections are made
 * before the window opens, so the figures are the steady-state cost per
 * byte, not the handshakes (which are timed apart).
 */
export interface TransportFigures {
  readonly samplesPerS: number
  readonly messagesPerS: number
  /** Hub process CPU time per telemetry message, in microseconds. */
  readonly hubCpuUsPerMessage: number
  readonly hubCpuPct: number
  /** Wall time to connect every device (CONNECT to CONNACK, with the TLS handshake for mqtts). */
  readonly connectAllMs: number
}

export async function measureTransports(o: { devices: number; samplesPerMessage: number; warmupS: number; measureS: number }, work: string): Promise<{ plain: TransportFigures; tls: TransportFigures; payloadBytes: number }> {
  const hubDir = join(work, 'hub-tls')
  mkdirSync(hubDir, { recursive: true })
  const { paths } = tlsInit({ dataDir: hubDir, hosts: [] })
  const hub = await startHubProcess(hubDir, ['--tls-cert', paths.hubCert, '--tls-key', paths.hubKey, '--mqtt-tls-port', '0', '--allow-plaintext'], { ca: paths.caCert })
  const ca = readFileSync(paths.caCert)
  try {
    const devices = await Promise.all(Array.from({ length: o.devices }, async (_, i) => {
      const id = `tls-bench-${String(i).padStart(4, '0')}`
      const r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
      if (r.status !== 201) throw new Error(`provisioning ${id}: ${r.status} ${JSON.stringify(r.body)}`)
      return { id, token: r.body.token, storeId: randomUUID(), seq: 0 }
    }))
    let payloadBytes = 0
    const run = async (url: string, options: mqtt.IClientOptions): Promise<TransportFigures> => {
      const r = await driveTelemetry(hub, devices, url, options, o)
      payloadBytes = r.payloadBytes
      return r.figures
    }
    // A first plaintext round, discarded: the hub's JIT and database warm up in it, so neither measured round pays for that.
    await run(`mqtt://127.0.0.1:${hub.mqttPort}`, {})
    const plain = await run(`mqtt://127.0.0.1:${hub.mqttPort}`, {})
    // The same devices again, over TLS, pinning the CA as an agent does.
    const tls = await run(`mqtts://127.0.0.1:${hub.mqttTlsPort!}`, { ca, servername: 'localhost' })
    return { plain, tls, payloadBytes }
  } finally {
    await hub.stop()
  }
}

/** A device as driveTelemetry sends for it: its credentials, its store and the next seq. */
export interface DrivenDevice { readonly id: string; readonly token: string; readonly storeId: string; seq: number }

/**
 * Connects every device to `url` (MQTT.js), then has each send telemetry
 * batches of `samplesPerMessage` random samples on sensors s0..s49, QoS 1
 * with 4 in flight, as fast as the hub takes them; measures what the hub
 * stored and its CPU over `measureS` after `warmupS`, then disconnects.
 */
export async function driveTelemetry(hub: HubProcess, devices: DrivenDevice[], url: string, options: mqtt.IClientOptions, o: { samplesPerMessage: number; warmupS: number; measureS: number }): Promise<{ figures: TransportFigures; payloadBytes: number }> {
  let payloadBytes = 0
  const c0 = Date.now()
  const clients: MqttClient[] = await Promise.all(devices.map((d) => mqtt.connectAsync(url, {
    clientId: d.id, username: d.id, password: d.token, clean: true, reconnectPeriod: 0, keepalive: 60, ...options,
  })))
  const connectAllMs = Date.now() - c0
  let sent = 0
  let running = true
  const loops = clients.map(async (client, i) => {
    const d = devices[i]!
    const topic = `devices/${d.id}/telemetry`
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (running) {
        const first = d.seq + 1
        d.seq += o.samplesPerMessage
        const payload = Buffer.from(JSON.stringify({
          type: 'telemetry', v: 1, storeId: d.storeId,
          samples: Array.from({ length: o.samplesPerMessage }, (_, k) => ({ seq: first + k, ts: Date.now(), sensor: `s${k % 50}`, value: Math.random() * 100 })),
        }))
        payloadBytes = payload.length
        await client.publishAsync(topic, payload, { qos: 1 })
        sent++
      }
    }))
  })
  await sleep(o.warmupS * 1000)
  const stored = async () => (await hub.api<{ ingest: { samplesStored: number } }>('GET', '/api/stats')).body.ingest.samplesStored
  const s0 = await stored(), m0 = sent, cpu0 = cpuMs(hub.pid), t0 = Date.now()
  await sleep(o.measureS * 1000)
  const s1 = await stored(), m1 = sent, cpu1 = cpuMs(hub.pid), t1 = Date.now()
  running = false
  await Promise.allSettled(loops)
  await Promise.allSettled(clients.map((c) => c.endAsync()))
  const secs = (t1 - t0) / 1000
  return {
    payloadBytes,
    figures: {
      samplesPerS: (s1 - s0) / secs,
      messagesPerS: (m1 - m0) / secs,
      hubCpuUsPerMessage: ((cpu1 - cpu0) * 1000) / Math.max(1, m1 - m0),
      hubCpuPct: ((cpu1 - cpu0) / (t1 - t0)) * 100,
      connectAllMs,
    },
  }
}
