import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Aedes, type AedesPublishPacket } from 'aedes'
import type { Agent } from '../agent/agent.js'
import { isRollcallError } from '../common/errors.js'
import { decode, encode, topics, type Birth, type Death, type Message } from '../protocol/index.js'

/**
 * Real parts on loopback for the agent's tests: an aedes broker on port 0
 * that can be taken down and brought back on the same port, and an "acker"
 * that plays the hub's part for telemetry (records what arrives, keeps a
 * per-store high-water mark, publishes the cumulative ack); the rig a wire
 * test runs them in. And the issues a bad agent config is refused with, for
 * the config tests.
 */

export async function waitFor(what: string, cond: () => boolean, timeoutMs = 20_000, stepMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)
    await sleep(stepMs)
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** The issues a bad config is refused with (asserting on the code and the named fields, not prose). */
export function issuesOf(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (isRollcallError(err) && err.code === 'BAD_REQUEST') return (err.details?.issues as string[]) ?? []
    throw err
  }
  throw new Error('expected the config to be refused')
}

export function tempDir(prefix = 'rollcall-agent-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}

export interface TestBroker {
  readonly broker: Aedes
  readonly port: number
  readonly url: string
  /** Stops listening and cuts every connection (no DISCONNECT: Wills fire). */
  down(): Promise<void>
  /** Listens again on the same port. */
  up(): Promise<void>
  /** Destroys the broker side of every open connection, like a dead link. */
  cutConnections(): void
  close(): Promise<void>
}

export async function startBroker(): Promise<TestBroker> {
  const broker = await Aedes.createBroker()
  const sockets = new Set<Socket>()
  let server: Server = newServer()
  function newServer(): Server {
    const s = createServer((socket) => {
      // As broker/broker.ts does: small packets (acks, commands) are not held back by Nagle.
      socket.setNoDelay(true)
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      broker.handle(socket)
    })
    return s
  }
  await listen(server, 0)
  const port = (server.address() as AddressInfo).port
  let listening = true
  const cutConnections = () => { for (const s of sockets) s.destroy() }
  return {
    broker,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    cutConnections,
    async down() {
      if (!listening) return
      listening = false
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      cutConnections()
      await closed
    },
    async up() {
      if (listening) return
      server = newServer()
      await listen(server, port)
      listening = true
    },
    async close() {
      if (listening) {
        listening = false
        const closed = new Promise<void>((resolve) => server.close(() => resolve()))
        cutConnections()
        await closed
      }
      await new Promise<void>((resolve) => broker.close(() => resolve()))
    },
  }
}

async function listen(server: Server, port: number): Promise<void> {
  // Re-binding a port just released can briefly fail on a busy machine; retry within a deadline.
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve() })
      })
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() > deadline) throw err
      await sleep(50)
    }
  }
}

export interface ReceivedItem {
  readonly deviceId: string
  readonly storeId: string
  readonly kind: 'telemetry' | 'events'
  readonly seq: number
  readonly item: Record<string, unknown>
}

export interface Acker {
  /** Every item in arrival order, duplicates included. */
  readonly received: ReceivedItem[]
  /** Every state message (birth/death) in arrival order, with its retain flag. */
  readonly states: Array<{ deviceId: string; message: Birth | Death; retain: boolean }>
  /** Payloads that failed decode (must stay empty: the agent only sends valid messages). */
  readonly invalid: string[]
  /** Batches received, per kind. */
  readonly batches: { telemetry: number; events: number }
  /** Every batch in arrival order: its kind, seqs and the outbox backlog it reported. */
  readonly batchLog: Array<{ kind: 'telemetry' | 'events'; seqs: number[]; backlog: number | undefined }>
  /** The largest telemetry/events payload seen, in bytes. */
  largestPayload: number
  /** When false, nothing is acked (the hub is "slow"); setting it true acks the current high-water marks. */
  autoAck: boolean
  setAutoAck(on: boolean): Promise<void>
  highWater(storeId: string): number
  seqsOf(storeId: string): number[]
  publishAck(deviceId: string, storeId: string, upTo: number): Promise<void>
  publishRaw(topic: string, payload: Buffer): Promise<void>
  close(): Promise<void>
}

/** Subscribes in-process (no socket), so it survives the broker's listener going down and up. */
/**
 * `accepts`: the optional batch fields the acker says it takes in each ack,
 * like a hub of this version (["backlog"]); without it, it acks like an older hub.
 */
export async function startAcker(tb: TestBroker, options: { autoAck?: boolean; accepts?: string[] } = {}): Promise<Acker> {
  const { broker } = tb
  const hwm = new Map<string, { deviceId: string; upTo: number }>()
  // What the acker has told devices it holds: its answer to a birth.
  const acked = new Map<string, number>()
  const subs: Array<[string, (packet: AedesPublishPacket, cb: () => void) => void]> = []

  const publish = (topic: string, payload: Buffer) => new Promise<void>((resolve, reject) => {
    broker.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err) => (err ? reject(err) : resolve()))
  })

  const acker: Acker = {
    received: [],
    states: [],
    invalid: [],
    batches: { telemetry: 0, events: 0 },
    batchLog: [],
    largestPayload: 0,
    autoAck: options.autoAck ?? true,
    async setAutoAck(on) {
      acker.autoAck = on
      if (on) for (const [storeId, h] of hwm) await acker.publishAck(h.deviceId, storeId, h.upTo)
    },
    highWater: (storeId) => hwm.get(storeId)?.upTo ?? 0,
    seqsOf: (storeId) => acker.received.filter((r) => r.storeId === storeId).map((r) => r.seq),
    publishAck: (deviceId, storeId, upTo) => {
      acked.set(storeId, Math.max(acked.get(storeId) ?? 0, upTo))
      return publish(topics.telemetryAck(deviceId), encode({ type: 'telemetry.ack', v: 1, storeId, upTo, ...(options.accepts ? { accepts: options.accepts } : {}) }))
    },
    publishRaw: publish,
    async close() {
      for (const [topic, fn] of subs) await new Promise<void>((resolve) => broker.unsubscribe(topic, fn, () => resolve()))
    },
  }

  const onData = (packet: AedesPublishPacket, cb: () => void) => {
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
    if (!packet.topic.endsWith('/state')) acker.largestPayload = Math.max(acker.largestPayload, payload.byteLength)
    const d = decode(packet.topic, payload)
    if (!d.ok) {
      acker.invalid.push(`${packet.topic}: ${d.error.code} ${d.error.message}`)
      cb()
      return
    }
    const m: Message = d.message
    const deviceId = d.topic.deviceId
    if (m.type === 'telemetry' || m.type === 'events') {
      const items = m.type === 'telemetry' ? m.samples : m.events
      acker.batches[m.type]++
      acker.batchLog.push({ kind: m.type, seqs: items.map((i) => i.seq), backlog: m.backlog })
      const h = hwm.get(m.storeId) ?? { deviceId, upTo: 0 }
      for (const item of items) {
        acker.received.push({ deviceId, storeId: m.storeId, kind: m.type, seq: item.seq, item: item })
        // The hub's dedup: only seqs above the high-water mark are new.
        if (item.seq > h.upTo) h.upTo = item.seq
      }
      hwm.set(m.storeId, h)
      if (acker.autoAck) {
        acker.publishAck(deviceId, m.storeId, h.upTo).then(cb, cb)
        return
      }
    } else if (m.type === 'birth' || m.type === 'death') {
      acker.states.push({ deviceId, message: m, retain: packet.retain })
      // Like the hub, answer every birth with the store's mark, acks withheld or
      // not; here that is what it has acked so far (withheld acks model a hub
      // that did not store).
      if (m.type === 'birth') {
        acker.publishAck(deviceId, m.storeId, acked.get(m.storeId) ?? 0).then(cb, cb)
        return
      }
    }
    cb()
  }
  for (const topic of ['devices/+/telemetry', 'devices/+/events', 'devices/+/state']) {
    await new Promise<void>((resolve) => broker.subscribe(topic, onData, () => resolve()))
    subs.push([topic, onData])
  }
  return acker
}

/**
 * What one wire test runs on, torn down together after it: the broker, the
 * acker, the test's own stand-in for the hub's command or job side
 * (`startHub`), and the agents and ledger dirs the test adds to `agents` and
 * `dirs`. `start` brings the three up in that order; `stop` (for afterEach)
 * stops the agents, then the stand-in, the acker and the broker, and removes
 * the dirs.
 */
export interface WireRig<H> {
  readonly agents: Agent[]
  readonly dirs: string[]
  start(): Promise<{ broker: TestBroker; acker: Acker; hub: H }>
  stop(): Promise<void>
}

export function wireRig<H extends { close(): Promise<void> }>(startHub: (broker: TestBroker) => Promise<H>): WireRig<H> {
  const agents: Agent[] = []
  const dirs: string[] = []
  let up: { broker?: TestBroker; acker?: Acker; hub?: H } = {}
  return {
    agents,
    dirs,
    async start() {
      const broker = await startBroker()
      up.broker = broker
      const acker = await startAcker(broker)
      up.acker = acker
      const hub = await startHub(broker)
      up.hub = hub
      return { broker, acker, hub }
    },
    async stop() {
      for (const a of agents.splice(0)) await a.stop()
      const { broker, acker, hub } = up
      up = {}
      await hub?.close()
      await acker?.close()
      await broker?.close()
      for (const d of dirs.splice(0)) removeDir(d)
    },
  }
}
