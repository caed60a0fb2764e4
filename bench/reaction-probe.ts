import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { percentiles } from '../common/latency.js'
import { decode, encode } from '../protocol/codec.js'
import type { CommandRequest } from '../protocol/messages.js'
import { topics } from '../protocol/topics.js'

/**
 * A rule's reaction time as a device sees it (issue #17: "sample ts → command
 * at the device, p99 under 50 ms plus the group-commit window on loopback").
 * One MQTT.js client plays the device as the agent does (birth, telemetry
 * batches with seqs, an answer to each command) against a rule that sends a
 * command to the device whose sample crosses its threshold. Each crossing:
 *
 *   ts = now; publish one sample above the threshold
 *   -> wait for cmd/req (the rule's command): latency = arrival - ts
 *   -> answer it; publish one sample under the clear; pause 20-40 ms (at
 *      random, so crossings do not fall in step with the hub's commit timer)
 *
 * The clear is not waited for: the hub evaluates a device's samples in seq
 * order, so the next crossing is seen after it. (Waiting for its ack made a
 * crossing under load last as long as the hub's ack queue, a dozen in a
 * measurement window.)
 *
 * Bounded in crossings and in time; a command that does not come within
 * `commandTimeoutMs` is counted as missed and the probe waits as long
 * again before going on, so a late one is not counted for the next. It runs in
 * a process of its own (reaction-probe-main.ts): beside a load generator in
 * the same process, its timings would include that process's event-loop lag.
 */

export interface ReactionProbeSpec {
  readonly url: string
  readonly deviceId: string
  readonly token: string
  /** The sensor the rule watches: above `value` 50 it fires, under 10 it clears. */
  readonly sensor: string
  readonly crossings: number
  /** Crossings first, not counted (the first command warms the hub's paths). */
  readonly warmup: number
  /** The probe stops after this long, whatever it counted. */
  readonly budgetMs: number
  readonly commandTimeoutMs: number
}

export interface ReactionFigures {
  /** Crossings timed (warm-up excluded). */
  readonly count: number
  /** Crossings whose command did not come within commandTimeoutMs. */
  readonly missed: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

/** The rule the probe expects: a command to the device that crossed `> 50` on `sensor`, clear under 10. */
export function reactionRule(name: string, deviceId: string, sensor: string): Record<string, unknown> {
  return {
    name, for: `device:${deviceId}`,
    when: { telemetry: { sensor, op: '>', value: 50, clear: { op: '<', value: 10 } } },
    then: [{ command: { name: 'ping', timeoutMs: 5000 } }],
    // Every crossing must act: the default rate (60 a minute) would suppress most of them.
    maxFiringsPerMinute: 100_000,
  }
}

export async function probeReactions(spec: ReactionProbeSpec): Promise<ReactionFigures> {
  const storeId = randomUUID()
  const client = await mqtt.connectAsync(spec.url, {
    clientId: spec.deviceId, username: spec.deviceId, password: spec.token, clean: true, reconnectPeriod: 0, keepalive: 60,
  })
  let seq = 0
  let ackedUpTo = 0
  let onAck: (() => void) | undefined
  let onCommand: ((req: CommandRequest) => void) | undefined
  client.on('message', (topic, payload) => {
    const d = decode(topic, payload)
    if (!d.ok) return
    if (d.message.type === 'telemetry.ack') {
      ackedUpTo = Math.max(ackedUpTo, d.message.upTo)
      onAck?.()
    } else if (d.message.type === 'cmd.req') {
      const req = d.message
      // Answered as the agent would, so the rule's action ends as done.
      void client.publishAsync(topics.cmdRes(spec.deviceId), encode({ type: 'cmd.res', v: 1, id: req.id, ok: true, result: { pong: true } }), { qos: 1 }).catch(() => {})
      onCommand?.(req)
    }
  })
  const waitFor = <T>(arm: (done: (v: T) => void) => void, disarm: () => void, ms: number): Promise<T | undefined> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => { disarm(); resolve(undefined) }, ms)
      arm((v) => { clearTimeout(timer); disarm(); resolve(v) })
    })
  const sample = (value: number): number => {
    seq++
    const ts = Date.now()
    void client.publishAsync(topics.telemetry(spec.deviceId), encode({ type: 'telemetry', v: 1, storeId, samples: [{ seq, ts, sensor: spec.sensor, value }] }), { qos: 1 }).catch(() => {})
    return seq
  }
  const acked = (upTo: number) => waitFor<true>(
    (done) => { if (ackedUpTo >= upTo) done(true); else onAck = () => { if (ackedUpTo >= upTo) done(true) } },
    () => { onAck = undefined }, spec.commandTimeoutMs)

  const latencies: number[] = []
  let missed = 0
  try {
    await client.subscribeAsync([topics.telemetryAck(spec.deviceId), topics.cmdReq(spec.deviceId)], { qos: 1 })
    await client.publishAsync(topics.state(spec.deviceId), encode({
      type: 'birth', v: 1, epoch: 1, bootId: randomUUID(), agentVersion: 'reaction-probe', storeId, capabilities: ['telemetry', 'commands'],
    }), { qos: 1, retain: true })
    // The birth and a first clear sample are stored before the first crossing: the device is reachable and idle.
    await acked(sample(0))
    const deadline = Date.now() + spec.budgetMs
    for (let i = 0; i < spec.warmup + spec.crossings && Date.now() < deadline; i++) {
      const command = waitFor<number>((done) => { onCommand = () => done(performance.now()) }, () => { onCommand = undefined }, spec.commandTimeoutMs)
      // The sample's ts is taken in sample(), just before the publish; performance.now() beside it times the interval finely.
      const t0 = performance.now()
      sample(100)
      const arrived = await command
      if (i >= spec.warmup) {
        if (arrived === undefined) missed++
        else latencies.push(arrived - t0)
      }
      // A command that comes after its timeout must not be taken for the next crossing's: it comes, unheeded, in this wait.
      if (arrived === undefined) await new Promise((r) => setTimeout(r, spec.commandTimeoutMs))
      sample(0)
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 20))
    }
  } finally {
    await client.endAsync().catch(() => {})
  }
  const p = percentiles(latencies)
  return { count: latencies.length, missed, p50Ms: p.p50, p99Ms: p.p99, maxMs: p.max }
}

const MAIN = fileURLToPath(new URL('./reaction-probe-main.js', import.meta.url))

/** Runs probeReactions in a child process (reaction-probe-main.ts) and resolves with its figures. */
export function runReactionProbe(spec: ReactionProbeSpec): Promise<ReactionFigures> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let result: ReactionFigures | undefined
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
    createInterface({ input: child.stdout }).on('line', (l) => {
      try {
        result = JSON.parse(l) as ReactionFigures
      } catch {
        // not the result line
      }
    })
    // A hang guard: the probe bounds itself by budgetMs, plus a command timeout per step.
    const guard = setTimeout(() => child.kill('SIGKILL'), spec.budgetMs + 4 * spec.commandTimeoutMs + 10_000)
    child.once('exit', (code) => {
      clearTimeout(guard)
      if (code === 0 && result) resolve(result)
      else reject(new Error(`the reaction probe failed (exit ${String(code)}):\n${stderr}`))
    })
  })
}
