/**
 * A lighter load generator than fleet-runner.ts, to find what the hub holds
 * when the generator shares the machine's two cores with it: each device is
 * one MQTT.js client speaking the device protocol by hand (birth, one
 * telemetry batch per interval with `seq` and `prev`, the hub's cumulative
 * acks), with no ledger. It keeps unacked samples in memory and sends them
 * again after a reconnect, so the hub's exactly-once path is exercised as for
 * a real agent; only the device's disk is left out. Reports like
 * fleet-runner: one JSON line per second.
 *
 *   node dist/bench/thin-fleet-runner.js SPEC.json
 */
import { readFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import mqtt, { type MqttClient } from 'mqtt'
import { topics } from '../protocol/topics.js'
import type { FleetReport, FleetSpec } from './fleet-runner.js'

interface ThinDevice {
  readonly id: string
  client: MqttClient | undefined
  readonly storeId: string
  seq: number
  acked: number
  /** Sent, not yet acked: seq -> the time it was sampled. */
  readonly pending: Map<number, number>
  connected: boolean
}

let lags: number[] = []

function takeLags(): { p50: number; p99: number; count: number } {
  const xs = lags.sort((a, b) => a - b)
  lags = []
  const at = (q: number) => (xs.length === 0 ? 0 : xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]!)
  return { p50: at(0.5), p99: at(0.99), count: xs.length }
}

async function main(): Promise<void> {
  const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FleetSpec
  const intervalMs = spec.agent.sampleIntervalMs as number
  const devices: ThinDevice[] = []
  let generated = 0
  const timers: NodeJS.Timeout[] = []

  const connect = (d: ThinDevice, token: string) => {
    const client = mqtt.connect(spec.hub, {
      clientId: d.id, username: d.id, password: token, clean: true, keepalive: 60, reconnectPeriod: 1000, protocolVersion: 4,
      will: { topic: topics.state(d.id), payload: Buffer.from(JSON.stringify({ type: 'death', v: 1, epoch: 1, storeId: d.storeId })), qos: 1, retain: true },
    })
    d.client = client
    client.on('connect', () => {
      client.subscribe(topics.telemetryAck(d.id), { qos: 1 }, () => {
        client.publish(topics.state(d.id), JSON.stringify({ type: 'birth', v: 1, epoch: 1, bootId: 'thin', agentVersion: 'thin', storeId: d.storeId, capabilities: ['telemetry'] }), { qos: 1, retain: true })
        d.connected = true
        // Unacked samples go again, in order, from the last ack.
        if (d.pending.size > 0) send(d, [...d.pending.keys()].sort((a, b) => a - b), d.acked)
      })
    })
    client.on('close', () => { d.connected = false })
    client.on('error', () => {})
    client.on('message', (_topic, payload) => {
      const ack = JSON.parse(payload.toString()) as { upTo: number; storeId: string }
      if (ack.storeId !== d.storeId || ack.upTo <= d.acked) return
      const now = Date.now()
      for (const [seq, at] of d.pending) {
        if (seq > ack.upTo) continue
        if (seq % 10 === 0) lags.push(now - at)
        d.pending.delete(seq)
      }
      d.acked = ack.upTo
    })
  }

  const send = (d: ThinDevice, seqs: number[], prev: number) => {
    const samples = seqs.map((seq) => ({ seq, ts: d.pending.get(seq)!, sensor: 'temp', value: Math.round(Math.random() * 1000) / 10 }))
    d.client!.publish(topics.telemetry(d.id), JSON.stringify({ type: 'telemetry', v: 1, storeId: d.storeId, prev, samples }), { qos: 1 })
  }

  const gap = (spec.staggerMs ?? 0) / Math.max(1, spec.devices.length)
  const report = (): FleetReport => {
    const lag = takeLags()
    return {
      t: Date.now(), agents: devices.length, connected: devices.filter((d) => d.connected).length, generated,
      acked: devices.reduce((s, d) => s + d.acked, 0), backlog: devices.reduce((s, d) => s + d.pending.size, 0), dropped: 0,
      ackP50Ms: lag.p50, ackP99Ms: lag.p99, rssBytes: process.memoryUsage().rss, lagP50Ms: lag.p50, lagP99Ms: lag.p99, lagCount: lag.count,
    }
  }
  const reporter = setInterval(() => process.stdout.write(`${JSON.stringify(report())}\n`), spec.reportEveryMs)
  const stop = () => {
    clearInterval(reporter)
    for (const t of timers) clearInterval(t)
    for (const d of devices) d.client?.end(true)
    process.stdout.write(`${JSON.stringify({ ...report(), final: true })}\n`)
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)

  for (const [i, spec_] of spec.devices.entries()) {
    const d: ThinDevice = { id: spec_.id, client: undefined, storeId: randomUUID(), seq: 0, acked: 0, pending: new Map(), connected: false }
    devices.push(d)
    connect(d, spec_.token)
    // Each device samples on its own phase, as independent devices would.
    const phase = (i * 7919) % intervalMs
    setTimeout(() => {
      timers.push(setInterval(() => {
        if (!d.connected) return
        const seq = ++d.seq
        d.pending.set(seq, Date.now())
        generated++
        send(d, [seq], seq - 1 > d.acked ? seq - 1 : d.acked)
      }, intervalMs))
    }, phase)
    if (gap > 0) await new Promise((r) => setTimeout(r, gap))
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`thin-fleet-runner: ${String(err)}\n`)
  process.exit(1)
})
