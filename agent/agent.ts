import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { systemClock, type Clock, type Random } from '../common/clock.js'
import { silentLogger, type Logger } from '../common/logger.js'
import { decode } from '../protocol/codec.js'
import { EVENT_LEVELS, LIMITS } from '../protocol/limits.js'
import { isSensorName } from '../protocol/ids.js'
import type { AgentConfig } from './config.js'
import { Ledger } from './ledger.js'
import { Link, type LinkStats } from './link.js'
import { eventBody, Outbox, type OutboxStats } from './outbox.js'
import { Sampler, type SamplerStats } from './sampler.js'
import { Sender, type SenderStats } from './sender.js'
import { builtinSensors, simulatedSensor, type SensorSource } from './sensors.js'

/**
 * The agent's composition root. `start()` opens the ledger, then starts the
 * sender, the link and the sampler; `stop()` releases them in reverse order
 * (sampler, sender, link with a death for the current epoch, ledger) and is
 * safe to call twice.
 */

export interface AgentDeps {
  readonly logger?: Logger
  readonly clock?: Clock
  /** Jitter for the reconnect backoff. */
  readonly random?: Random
  /** Extra sensors, sampled with the configured ones (the simulator injects its models here). */
  readonly sensors?: readonly SensorSource[]
  /** Identifies this run of the agent in its births; a random UUID by default. */
  readonly bootId?: string
}

export type EventLevel = (typeof EVENT_LEVELS)[number]

export interface AgentStats {
  readonly deviceId: string
  /** Undefined until start() opened the ledger. */
  readonly storeId: string | undefined
  readonly bootId: string
  readonly connected: boolean
  readonly link: LinkStats
  readonly outbox: OutboxStats | undefined
  readonly sender: SenderStats | undefined
  readonly sampler: SamplerStats | undefined
}

export interface Agent {
  readonly deviceId: string
  readonly bootId: string
  start(): Promise<void>
  stop(): Promise<void>
  stats(): AgentStats
  /** Samples every sensor now (also what the timer does every sampleIntervalMs); returns the sample count. */
  sampleNow(): number
  /** Appends a device event to the outbox; it is sent and acked like telemetry. */
  emitEvent(kind: string, level: EventLevel, message: string, data?: Record<string, unknown>): void
  /** The outbox, once started (tests and the simulator's accounting read it). */
  readonly outbox: Outbox | undefined
  readonly ledger: Ledger | undefined
  isConnected(): boolean
}

/** What a device advertises in its birth; grows as the agent learns jobs and commands. */
export const AGENT_CAPABILITIES = ['telemetry', 'events'] as const

/** An event's JSON may not exceed this, so it always fits one batch under the payload cap. */
export const MAX_EVENT_BYTES = 16 * 1024

let cachedVersion: string | undefined

/** The package version, read once from the nearest package.json (source and dist layouts differ in depth). */
export function agentVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion
  cachedVersion = '0.0.0'
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown }
      if (pkg.name === 'rollcall' && typeof pkg.version === 'string') {
        cachedVersion = pkg.version.slice(0, 32)
        break
      }
    } catch {
      // not here; look one level up
    }
    dir = dirname(dir)
  }
  return cachedVersion
}

export function createAgent(config: AgentConfig, deps: AgentDeps = {}): Agent {
  const clock = deps.clock ?? systemClock
  const random = deps.random ?? Math.random
  const log = (deps.logger ?? silentLogger()).child({ component: 'agent', deviceId: config.id })
  const bootId = deps.bootId ?? randomUUID()
  const sensors: SensorSource[] = [
    ...(config.builtinSensors ? builtinSensors() : []),
    ...config.sensors.map(simulatedSensor),
    ...(deps.sensors ?? []),
  ]

  let ledger: Ledger | undefined
  let outbox: Outbox | undefined
  let sender: Sender | undefined
  let sampler: Sampler | undefined
  let link: Link | undefined
  let phase: 'new' | 'starting' | 'started' | 'stopping' | 'stopped' = 'new'
  let stopping: Promise<void> | undefined

  function onMessage(topic: string, payload: Buffer): void {
    // Without field detail: explaining a bad message would load TypeBox for good.
    const decoded = decode(topic, payload, { schemaDetail: false })
    if (!decoded.ok) {
      log.warn({ topic, error: decoded.error }, 'ignoring an undecodable message')
      return
    }
    if (decoded.topic.deviceId !== config.id) {
      log.warn({ topic }, 'ignoring a message for another device')
      return
    }
    const message = decoded.message
    switch (message.type) {
      case 'telemetry.ack':
        if (message.storeId !== ledger?.storeId) {
          // An ack for an older store of this device (before a re-flash): not ours to apply.
          log.debug({ storeId: message.storeId }, 'ignoring an ack for another store')
          return
        }
        sender?.onAck(message.upTo)
        return
      case 'jobs.notify':
      case 'jobs.batch':
      case 'jobs.ack':
      case 'birth':
      case 'death':
      case 'telemetry':
      case 'events':
      case 'jobs.pull':
      case 'jobs.update':
        log.warn({ topic, type: message.type }, 'ignoring a message the agent does not handle')
        return
      default: {
        const never: never = message
        log.warn({ message: never }, 'unknown message type')
      }
    }
  }

  async function start(): Promise<void> {
    if (phase !== 'new') return
    phase = 'starting'
    try {
      ledger = new Ledger({ dataDir: config.dataDir, synchronous: config.synchronous })
      outbox = new Outbox(ledger, { maxRows: config.outboxMaxRows, maxBytes: config.outboxMaxBytes })
      sampler = new Sampler(outbox, sensors, { intervalMs: config.sampleIntervalMs, clock, logger: log })
      const l = new Link({
        hub: config.hub,
        deviceId: config.id,
        token: config.token,
        storeId: ledger.storeId,
        bootId,
        agentVersion: agentVersion(),
        capabilities: AGENT_CAPABILITIES,
        keepaliveSec: config.keepaliveSec,
        connectTimeoutMs: config.connectTimeoutMs,
        stopTimeoutMs: config.stopTimeoutMs,
        reconnect: { baseMs: config.reconnectBaseMs, maxMs: config.reconnectMaxMs, stableAfterMs: config.reconnectStableMs },
        nextEpoch: () => ledger!.nextEpoch(),
        clock,
        random,
        logger: log,
      })
      link = l
      const s = new Sender(outbox, { isConnected: () => l.isConnected(), publish: (topic, payload) => l.publish(topic, payload) }, {
        deviceId: config.id,
        storeId: ledger.storeId,
        inflightBatches: config.inflightBatches,
        batchMaxSamples: config.batchMaxSamples,
        batchMaxBytes: config.batchMaxBytes,
        ackTimeoutMs: config.ackTimeoutMs,
        coalesceMs: config.coalesceMs,
        logger: log,
      })
      sender = s
      l.on('connected', () => { s.onConnected() })
      l.on('disconnected', () => { s.onDisconnected() })
      l.on('message', onMessage)
      s.start()
      l.start()
      sampler.start()
      log.info({ storeId: ledger.storeId, dataDir: config.dataDir, sensors: sampler.sensorNames, backlog: outbox.stats().backlogRows }, 'agent started')
      phase = 'started'
    } catch (err) {
      await release()
      phase = 'stopped'
      throw err
    }
  }

  async function release(): Promise<void> {
    sampler?.stop()
    sender?.stop()
    try {
      await link?.stop()
    } catch (err) {
      log.warn({ err }, 'error while closing the link')
    }
    link?.removeAllListeners()
    ledger?.close()
  }

  function stop(): Promise<void> {
    if (stopping) return stopping
    stopping = (async () => {
      phase = 'stopping'
      await release()
      phase = 'stopped'
      log.info('agent stopped')
    })()
    return stopping
  }

  function emitEvent(kind: string, level: EventLevel, message: string, data?: Record<string, unknown>): void {
    if (!outbox || phase !== 'started') throw new Error('emitEvent: the agent is not started')
    if (!isSensorName(kind)) throw new Error(`emitEvent: kind ${JSON.stringify(kind)} must match the sensor-name pattern`)
    if (!EVENT_LEVELS.includes(level)) throw new Error(`emitEvent: level must be one of ${EVENT_LEVELS.join(', ')}`)
    if (data !== undefined && (typeof data !== 'object' || data === null || Array.isArray(data))) {
      // The hub would dead-letter the whole batch: refuse it here, where the caller can fix it.
      throw new Error('emitEvent: data must be a plain JSON object')
    }
    const ts = Math.floor(clock.now())
    const text = message.length > LIMITS.maxEventMessageChars ? message.slice(0, LIMITS.maxEventMessageChars) : message
    let body = eventBody(ts, kind, level, text, data)
    if (Buffer.byteLength(body) > MAX_EVENT_BYTES) {
      // Keep the event, lose the detail: an oversize payload would be refused by the broker and block the outbox.
      body = eventBody(ts, kind, level, text, { truncated: true, dataBytes: Buffer.byteLength(body) })
    }
    outbox.append([{ kind: 'event', ts, body }])
  }

  return {
    deviceId: config.id,
    bootId,
    start,
    stop,
    sampleNow: () => (phase === 'started' && sampler ? sampler.sampleNow() : 0),
    emitEvent,
    isConnected: () => link?.isConnected() ?? false,
    get outbox() { return outbox },
    get ledger() { return ledger },
    stats: () => ({
      deviceId: config.id,
      storeId: ledger?.storeId,
      bootId,
      connected: link?.isConnected() ?? false,
      link: link?.stats() ?? { connected: false, epoch: 0, attempts: 0, connects: 0, disconnects: 0 },
      outbox: ledger?.isOpen ? outbox?.stats() : undefined,
      sender: sender?.stats(),
      sampler: sampler?.stats(),
    }),
  }
}
