import { afterEach, beforeEach } from 'vitest'
import { spawn } from 'node:child_process'
import { connect as netConnect, type Socket } from 'node:net'
import { timingSafeEqual } from 'node:crypto'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { systemClock } from '../common/clock.js'
import { silentLogger } from '../common/logger.js'
import { createBroker } from '../broker/broker.js'
import { expectNoLeaks, resourceCounts } from './support/leaks.js'
import type { AuthResult, Broker, BrokerOptions, CredentialCheck } from '../broker/types.js'

/** Shared set-up for the broker's loopback tests: real broker, real clients, LIFO teardown. */

export const HOST = '127.0.0.1'

export const TOKENS: Readonly<Record<string, string>> = {
  'dev-a': 'token-a',
  'dev-b': 'token-b',
  'observer:ops': 'token-ops',
}

/** A real credential check over a tiny map, shaped like the hub's. */
export function credentialsFrom(tokens: Readonly<Record<string, string>>): CredentialCheck {
  return (username: string, password: Buffer): AuthResult => {
    const expected = tokens[username]
    const ok = expected !== undefined && expected.length === password.length && timingSafeEqual(Buffer.from(expected), password)
    if (!ok) return { ok: false, returnCode: 4, reason: 'unknown user or wrong token' }
    return username.startsWith('observer:')
      ? { ok: true, principal: { kind: 'observer', name: username.slice('observer:'.length) } }
      : { ok: true, principal: { kind: 'device', id: username } }
  }
}

/** The devices of a token map: its keys that are not observers. */
export function devicesIn(tokens: Readonly<Record<string, string>>): (id: string) => boolean {
  return (id) => Object.hasOwn(tokens, id) && !id.startsWith('observer:')
}

export function brokerOptions(overrides: Partial<BrokerOptions> = {}): BrokerOptions {
  return {
    host: HOST,
    port: 0,
    maxPayloadBytes: 64 * 1024,
    allowAnonymous: false,
    maxConnections: 500,
    maxPendingConnections: 100,
    maxPendingPerAddress: 100,
    connectRatePerSec: 1000,
    connectBurst: 1000,
    clientConnectRatePerSec: 1000,
    clientConnectBurst: 1000,
    maxFiltersPerSubscribe: 100,
    maxSubscriptionsPerClient: 1000,
    keepaliveMinSec: 5,
    keepaliveMaxSec: 600,
    drainTimeoutMs: 10_000,
    connectTimeoutMs: 5_000,
    checkCredentials: credentialsFrom(TOKENS),
    isRegisteredDevice: devicesIn(TOKENS),
    logger: silentLogger(),
    clock: systemClock,
    ...overrides,
  }
}

/** Teardown registry: everything a test starts is registered here and released in reverse order. */
export class Cleanups {
  private readonly fns: Array<() => Promise<void> | void> = []
  add(fn: () => Promise<void> | void): void {
    this.fns.push(fn)
  }
  async run(): Promise<void> {
    const errors: unknown[] = []
    for (let fn = this.fns.pop(); fn !== undefined; fn = this.fns.pop()) {
      try {
        await fn()
      } catch (err) {
        errors.push(err)
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed')
  }
}

/**
 * One Cleanups for a test file, run after each test, followed by the leak
 * check (a socket, server, timer or child left open fails the test).
 */
export function leakCheckedCleanups(): Cleanups {
  const cleanups = new Cleanups()
  let baseline: Record<string, number> = {}
  beforeEach(() => { baseline = resourceCounts() })
  afterEach(async () => {
    await cleanups.run()
    await expectNoLeaks(baseline)
  })
  return cleanups
}

export async function startBroker(cleanups: Cleanups, overrides: Partial<BrokerOptions> = {}): Promise<{ broker: Broker; port: number; url: string }> {
  const broker = createBroker(brokerOptions(overrides))
  cleanups.add(() => broker.close())
  const { port } = await broker.listen()
  return { broker, port, url: `mqtt://${HOST}:${port}` }
}

export async function connectClient(cleanups: Cleanups, url: string, options: IClientOptions): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, keepalive: 30, ...options })
  cleanups.add(() => client.endAsync(true))
  return client
}

export function deviceOptions(id: string): IClientOptions {
  return { clientId: id, username: id, password: TOKENS[id] ?? 'no-token' }
}

/** Connects and returns the CONNACK refusal code, or 0 if accepted (and then closes). */
export async function connackCode(url: string, options: IClientOptions): Promise<number> {
  try {
    const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, keepalive: 30, ...options })
    await client.endAsync(true)
    return 0
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (typeof code === 'number') return code
    throw err
  }
}

/** SUBACK return codes in request order; MQTT.js rejects when any is 0x80, with the packet attached. */
export async function subackCodes(client: MqttClient, filters: Record<string, { qos: 0 | 1 }>): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filters)
    return granted.map((g) => g.qos)
  } catch (err) {
    const granted = (err as { packet?: { granted?: unknown } }).packet?.granted
    if (Array.isArray(granted)) return granted.map(Number)
    throw err
  }
}

export async function waitFor(predicate: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export function closed(client: MqttClient, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!client.connected && client.disconnected) {
      resolve()
      return
    }
    const timer = setTimeout(() => reject(new Error('client was not disconnected')), timeoutMs)
    client.once('close', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

// --- raw MQTT 3.1.1 bytes, for clients MQTT.js will not imitate ---

function str(value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value
  const len = Buffer.alloc(2)
  len.writeUInt16BE(bytes.length)
  return Buffer.concat([len, bytes])
}

export function remainingLength(n: number): Buffer {
  const out: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return Buffer.from(out)
}

function packet(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body])
}

export function connectPacket(o: { clientId: string; username?: string; password?: string; keepalive?: number; clean?: boolean }): Buffer {
  const flags = (o.username !== undefined ? 0x80 : 0) | (o.password !== undefined ? 0x40 : 0) | (o.clean === false ? 0 : 0x02)
  const keepalive = Buffer.alloc(2)
  keepalive.writeUInt16BE(o.keepalive ?? 30)
  const parts = [str('MQTT'), Buffer.from([4, flags]), keepalive, str(o.clientId)]
  if (o.username !== undefined) parts.push(str(o.username))
  if (o.password !== undefined) parts.push(str(o.password))
  return packet(0x10, Buffer.concat(parts))
}

export function subscribePacket(messageId: number, filter: string, qos: 0 | 1): Buffer {
  const id = Buffer.alloc(2)
  id.writeUInt16BE(messageId)
  return packet(0x82, Buffer.concat([id, str(filter), Buffer.from([qos])]))
}

export interface RawClient {
  readonly socket: Socket
  /** Resolves with every byte received until now, once `count` bytes arrived. */
  received(): Buffer
  closed: Promise<void>
}

/** `localAddress`: another loopback source (127.0.0.2), for limits per address. */
export async function rawConnect(cleanups: Cleanups, port: number, localAddress?: string): Promise<RawClient> {
  const socket = netConnect({ host: HOST, port, ...(localAddress === undefined ? {} : { localAddress }) })
  cleanups.add(() => {
    socket.destroy()
  })
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.on('error', () => undefined)
  const closedPromise = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  return { socket, received: () => Buffer.concat(chunks), closed: closedPromise }
}

// --- child processes (mosquitto CLIs) ---

export interface Exit {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export function run(cleanups: Cleanups, command: string, args: string[], timeoutMs = 30_000): { exit: Promise<Exit>; kill(): void } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  const timer = setTimeout(kill, timeoutMs)
  const exit = new Promise<Exit>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
  cleanups.add(async () => {
    kill()
    await exit.catch(() => undefined)
  })
  return { exit, kill }
}

