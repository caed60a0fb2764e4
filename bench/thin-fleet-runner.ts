/**
 * A lighter load generator than fleet-runner.ts, to find what the hub holds
 * when the generator shares the machine's two cores with it: each device is
 * one TCP socket speaking MQTT 3.1.1 through mqtt-packet (no client library,
 * no ledger) and the device protocol by hand: birth, telemetry batches with
 * `seq` and `prev`, the hub's cumulative acks. It sends like the agent's
 * outbox drain (agent/sender.ts): at most `inflightBatches` unacked batches,
 * samples that wait meanwhile leave together in the next one, and after a
 * reconnect or `ackTimeoutMs` without ack progress everything unacked goes
 * again from the last ack. So a hub that acks late sees fewer, fuller
 * messages, as from real agents, and the exactly-once path is exercised;
 * only the device's disk is left out. Reports like fleet-runner: one JSON
 * line per `reportEveryMs`.
 *
 * Like an agent, a device keeps sampling while its link is down (the samples
 * wait and leave in fuller batches when it is back) and reconnects with the
 * agent's own jittered exponential back-off (agent/reconnect.ts), so a hub
 * restart meets the reconnect storm a real fleet would make. SIGUSR2 stops
 * the sampling, so the fleet drains what it holds and its final report can be
 * counted against what the hub stored. SIGUSR1 switches every device between
 * its sample rate and `overloadFactor` times it (2 by default), the extra
 * samples evenly between the usual ones: an overload step without new
 * connections.
 *
 *   node dist/bench/thin-fleet-runner.js SPEC.json
 */
import { readFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { connect as tcpConnect, type Socket } from 'node:net'
import { generate, parser as packetParser, type Packet } from 'mqtt-packet'
import { DEFAULT_RECONNECT_POLICY, planReconnect } from '../agent/reconnect.js'
import { topics } from '../protocol/topics.js'
import type { FleetReport, FleetSpec } from '../devices-sim/fleet-runner.js'

interface Pending { readonly seq: number; readonly ts: number; readonly value: number }

interface ThinDevice {
  readonly id: string
  readonly token: string
  readonly storeId: string
  socket: Socket | undefined
  ready: boolean
  /** Samples from its first CONNACK on, connected or not, as an agent does. */
  started: boolean
  /** Ack progress on the current connection: the device is streaming. */
  streaming: boolean
  /** When the current connection got its CONNACK (undefined: none yet). */
  connectedAt: number | undefined
  /** Reconnect attempts that did not last (agent/reconnect.ts). */
  attempt: number
  nextMessageId: number
  seq: number
  acked: number
  /** Highest seq sent on this connection. */
  sentUpTo: number
  /** Tops of the batches sent and not yet acked, oldest first. */
  inflight: number[]
  /** Not yet acked, in seq order (sent or not). */
  pending: Pending[]
  lastAckProgress: number
  /** ackOnPuback: the top seq of each telemetry publish awaiting its PUBACK, by packet id. */
  readonly byPacketId: Map<number, number>
}

const BATCH_MAX_SAMPLES = 500

let lags: number[] = []

function takeLags(): { p50: number; p99: number; count: number } {
  const xs = lags.sort((a, b) => a - b)
  lags = []
  const at = (q: number) => (xs.length === 0 ? 0 : xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]!)
  return { p50: at(0.5), p99: at(0.99), count: xs.length }
}

function main(): void {
  const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FleetSpec
  const intervalMs = spec.agent.sampleIntervalMs as number
  const window = spec.agent.inflightBatches ?? 4
  const ackTimeoutMs = (spec.agent.ackTimeoutMs as number | undefined) ?? 10_000
  const url = new URL(spec.hub)
  const devices: ThinDevice[] = []
  let generated = 0
  let stopping = false

  const messageId = (d: ThinDevice): number => {
    const id = d.nextMessageId
    d.nextMessageId = id >= 65535 ? 1 : id + 1
    return id
  }
  const write = (d: ThinDevice, packet: Packet): void => { d.socket?.write(generate(packet)) }

  /** Sends what the in-flight window allows, oldest unsent first. */
  const drain = (d: ThinDevice): void => {
    while (d.ready && d.inflight.length < window) {
      // pending holds consecutive seqs from the oldest unacked: the first unsent follows sentUpTo.
      const from = d.pending.length === 0 ? 0 : d.sentUpTo + 1 - d.pending[0]!.seq
      if (from >= d.pending.length) return
      const batch = d.pending.slice(from, from + BATCH_MAX_SAMPLES)
      const top = batch[batch.length - 1]!.seq
      const payload = JSON.stringify({
        type: 'telemetry', v: 1, storeId: d.storeId, prev: d.sentUpTo,
        samples: batch.map((p) => ({ seq: p.seq, ts: p.ts, sensor: 'temp', value: p.value })),
      })
      const id = messageId(d)
      if (spec.ackOnPuback === true) d.byPacketId.set(id, top)
      write(d, { cmd: 'publish', topic: topics.telemetry(d.id), payload, qos: 1, messageId: id, retain: false, dup: false })
      d.inflight.push(top)
      d.sentUpTo = top
    }
  }

  const onAck = (d: ThinDevice, ack: { storeId?: unknown; upTo?: unknown }): void => {
    if (ack.storeId !== d.storeId || typeof ack.upTo !== 'number' || ack.upTo <= d.acked) return
    const now = Date.now()
    let n = 0
    while (n < d.pending.length && d.pending[n]!.seq <= ack.upTo) {
      const p = d.pending[n]!
      if (p.seq % 10 === 0) lags.push(now - p.ts)
      n++
    }
    d.pending.splice(0, n)
    d.acked = ack.upTo
    d.lastAckProgress = now
    d.streaming = true
    while (d.inflight.length > 0 && d.inflight[0]! <= ack.upTo) d.inflight.shift()
    drain(d)
  }

  const connect = (d: ThinDevice): void => {
    const socket = tcpConnect({ host: url.hostname, port: Number(url.port || 1883) })
    socket.setNoDelay(true)
    d.socket = socket
    const parser = packetParser({ protocolVersion: 4 })
    const subscribeId = messageId(d)
    let reached = false
    socket.on('connect', () => {
      reached = true
      write(d, {
        cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60,
        clientId: d.id, username: d.id, password: Buffer.from(d.token),
        will: { topic: topics.state(d.id), payload: Buffer.from(JSON.stringify({ type: 'death', v: 1, epoch: 1, storeId: d.storeId })), qos: 1, retain: true },
      })
    })
    parser.on('packet', (packet: Packet) => {
      switch (packet.cmd) {
        case 'connack':
          if (packet.returnCode !== 0) { socket.destroy(); return }
          d.connectedAt = Date.now()
          write(d, { cmd: 'subscribe', messageId: subscribeId, subscriptions: [{ topic: topics.telemetryAck(d.id), qos: 1 }] })
          return
        case 'suback':
          if (packet.messageId !== subscribeId) return
          write(d, {
            cmd: 'publish', topic: topics.state(d.id), qos: 1, messageId: messageId(d), retain: true, dup: false,
            payload: JSON.stringify({ type: 'birth', v: 1, epoch: 1, bootId: 'thin', agentVersion: 'thin', storeId: d.storeId, capabilities: ['telemetry'] }),
          })
          // Everything unacked goes again, in order, from the last ack.
          d.ready = true
          d.started = true
          d.sentUpTo = d.acked
          d.inflight = []
          d.byPacketId.clear()
          d.lastAckProgress = Date.now()
          drain(d)
          return
        case 'puback': {
          const top = d.byPacketId.get(packet.messageId!)
          if (top === undefined) return
          d.byPacketId.delete(packet.messageId!)
          onAck(d, { storeId: d.storeId, upTo: top })
          return
        }
        case 'publish': {
          const p = packet
          if (p.qos > 0) write(d, { cmd: 'puback', messageId: p.messageId! })
          try { onAck(d, JSON.parse(p.payload.toString()) as { storeId?: unknown; upTo?: unknown }) } catch { /* not an ack */ }
          return
        }
        default:
      }
    })
    parser.on('error', () => socket.destroy())
    socket.on('data', (chunk) => parser.parse(chunk))
    socket.on('error', () => {})
    socket.on('close', () => {
      const plan = planReconnect(DEFAULT_RECONNECT_POLICY, d.attempt, { connectedForMs: d.connectedAt === undefined ? undefined : Date.now() - d.connectedAt, unreachable: !reached }, Math.random)
      d.attempt = plan.attempt
      d.ready = false
      d.streaming = false
      d.connectedAt = undefined
      d.socket = undefined
      if (!stopping) setTimeout(() => connect(d), plan.delayMs)
    })
  }

  const gap = (spec.staggerMs ?? 0) / Math.max(1, spec.devices.length)
  const report = (): FleetReport => {
    const lag = takeLags()
    return {
      t: Date.now(), agents: devices.length, connected: devices.filter((d) => d.ready).length, streaming: devices.filter((d) => d.streaming).length, generated,
      acked: devices.reduce((s, d) => s + d.acked, 0), backlog: devices.reduce((s, d) => s + d.pending.length, 0), dropped: 0,
      ackP50Ms: lag.p50, ackP99Ms: lag.p99, rssBytes: process.memoryUsage().rss, lagP50Ms: lag.p50, lagP99Ms: lag.p99, lagCount: lag.count,
    }
  }
  const timers: NodeJS.Timeout[] = []
  const reporter = setInterval(() => process.stdout.write(`${JSON.stringify(report())}\n`), spec.reportEveryMs)
  const stop = () => {
    stopping = true
    clearInterval(reporter)
    for (const t of timers) clearInterval(t)
    for (const d of devices) d.socket?.destroy()
    process.stdout.write(`${JSON.stringify({ ...report(), final: true })}\n`)
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  let sampling = true
  process.on('SIGUSR2', () => { sampling = false })
  if (spec.durationMs !== undefined) setTimeout(stop, spec.durationMs).unref()

  // One timer for the fleet: each device samples on its own phase within the interval, as independent devices would.
  const TICK_MS = 10
  const slots = Math.max(1, Math.round(intervalMs / TICK_MS))
  let slot = 0
  // Overloaded (SIGUSR1): each device also samples at `factor - 1` more phases, evenly spread.
  const overloadFactor = spec.overloadFactor ?? 2
  let factor = 1
  process.on('SIGUSR1', () => { factor = factor === 1 ? overloadFactor : 1 })
  // Slots are due by the clock, not by the timer's count: a late tick catches up, so each device keeps its rate.
  let due = Date.now()
  timers.push(setInterval(() => {
    const now = Date.now()
    for (; due <= now; due += TICK_MS, slot = (slot + 1) % slots) {
      for (let k = 0; k < factor; k++) sampleSlot((slot + Math.round((k * slots) / factor)) % slots, now)
    }
  }, TICK_MS))

  function sampleSlot(slot: number, now: number): void {
    for (let i = slot; i < devices.length; i += slots) {
      const d = devices[i]!
      if (d.ready && d.inflight.length > 0 && now - d.lastAckProgress > ackTimeoutMs) {
        // No ack progress: resend everything unacked (the hub drops what it has as duplicates).
        d.sentUpTo = d.acked
        d.inflight = []
        d.lastAckProgress = now
      }
      if (!d.started || !sampling) continue
      d.pending.push({ seq: ++d.seq, ts: now, value: Math.round(Math.random() * 1000) / 10 })
      generated++
      drain(d)
    }
  }

  let i = 0
  const startNext = (): void => {
    for (; i < spec.devices.length; i++) {
      const s = spec.devices[i]!
      const d: ThinDevice = {
        id: s.id, token: s.token, storeId: randomUUID(), socket: undefined, ready: false, started: false, streaming: false, connectedAt: undefined, attempt: 0, nextMessageId: 1,
        seq: 0, acked: 0, sentUpTo: 0, inflight: [], pending: [], lastAckProgress: 0, byPacketId: new Map(),
      }
      devices.push(d)
      connect(d)
      if (gap > 0) {
        i++
        setTimeout(startNext, gap)
        return
      }
    }
  }
  startNext()
}

main()
