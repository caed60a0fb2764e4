import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import { startHubProcess, type HubProcess } from './hub-process.js'
import { spawnIdleAgent, stopChild } from './idle-agent.js'
import { cpuMs, mb, rssBytes } from './proc-stats.js'
import { startRawAedes } from './raw-aedes-process.js'
import type { FleetSpec } from '../devices-sim/fleet-runner.js'
import { provision, startFleet } from './fleet.js'
import { percentiles } from '../common/latency.js'
import { measureTransports } from './ingest-tls.js'
import { table } from '../cli/output.js'

/**
 * `npm run bench -- ingest`: a fleet of agents in one process streams to a hub
 * process on the same machine; in the same run, a raw aedes QoS 1
 * publish→subscribe baseline with MQTT.js and the same payload size, and the
 * RSS of an idle agent process; and the hub's cost of TLS against plaintext
 * with the same devices and payloads (bench/ingest-tls.ts).
 */
export interface IngestOptions {
  readonly devices: number
  readonly sensors: number
  readonly intervalMs: number
  readonly warmupS: number
  readonly measureS: number
  readonly idleAgentS: number
}

async function measureHub(o: IngestOptions, work: string) {
  const hubDir = join(work, 'hub')
  mkdirSync(hubDir, { recursive: true })
  const hub = await startHubProcess(hubDir)
  try {
    const devices = await provision(hub, o.devices)
    const spec: FleetSpec = {
      hub: `mqtt://127.0.0.1:${hub.mqttPort}`, dataDir: join(work, 'agents'), devices, reportEveryMs: 1000, staggerMs: 2000,
      agent: {
        builtinSensors: false, sampleIntervalMs: o.intervalMs, keepaliveSec: 30,
        sensors: Array.from({ length: o.sensors }, (_, i) => ({ name: `s${i}`, model: 'random-walk' as const, min: 0, max: 100 })),
      },
    }
    const specPath = join(work, 'fleet.json')
    writeFileSync(specPath, JSON.stringify(spec))
    const fleet = startFleet(specPath)
    const stored = async () => (await hub.api<{ ingest: { samplesStored: number; batches: number } }>('GET', '/api/stats')).body.ingest
    await sleep((o.warmupS + 2) * 1000)
    const s0 = await stored(), f0 = fleet.last(), cpu0 = cpuMs(hub.pid), fcpu0 = cpuMs(fleet.child.pid!), t0 = Date.now()
    const rss: number[] = []
    const p99s: number[] = []
    const p50s: number[] = []
    for (let i = 0; i < o.measureS; i++) {
      await sleep(1000)
      rss.push(rssBytes(hub.pid))
      const r = fleet.last()
      if (r) { p50s.push(r.ackP50Ms); p99s.push(r.ackP99Ms) }
    }
    const s1 = await stored(), f1 = fleet.last(), cpu1 = cpuMs(hub.pid), fcpu1 = cpuMs(fleet.child.pid!), t1 = Date.now()
    const secs = (t1 - t0) / 1000
    const result = {
      storedPerS: (s1.samplesStored - s0.samplesStored) / secs,
      samplesPerBatch: (s1.samplesStored - s0.samplesStored) / Math.max(1, s1.batches - s0.batches),
      generatedPerS: f0 && f1 ? (f1.generated - f0.generated) / ((f1.t - f0.t) / 1000) : 0,
      ackP50Ms: percentiles(p50s).p50,
      ackP99Ms: percentiles(p99s).p50,
      hubRssMaxBytes: Math.max(...rss),
      hubCpuPct: ((cpu1 - cpu0) / (t1 - t0)) * 100,
      fleetCpuPct: ((fcpu1 - fcpu0) / (t1 - t0)) * 100,
      fleetConnected: f1?.connected ?? 0,
      fleetBacklog: f1?.backlog ?? 0,
      fleetRssBytes: f1?.rssBytes ?? 0,
    }
    await fleet.stop()
    const idle = await idleAgentRss(hub, work, o.idleAgentS)
    return { ...result, idleAgentRssBytes: idle }
  } finally {
    await hub.stop()
  }
}

/** One `rollcall agent` process with the default config (built-in sensors every 10 s), RSS after a while. */
async function idleAgentRss(hub: HubProcess, work: string, seconds: number): Promise<number> {
  const child = await spawnIdleAgent(hub, join(work, 'idle-agent'), 'idle-agent')
  await sleep(seconds * 1000)
  const rss = rssBytes(child.pid!)
  await stopChild(child)
  return rss
}

/** Bare Node 20 RSS, for scale. */
async function bareNodeRss(): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' })
  await sleep(1500)
  const rss = rssBytes(child.pid!)
  child.kill('SIGKILL')
  return rss
}

/**
 * Baseline: raw aedes, QoS 1, same number of publishers and the same payload
 * size, each publisher keeping 4 messages in flight like an agent; one
 * subscriber on devices/+/telemetry counts what arrives.
 */
async function measureRawAedes(o: IngestOptions, samplesPerBatch: number, seconds: number) {
  const { child, url } = await startRawAedes('pipe')
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const k = Math.max(1, Math.round(samplesPerBatch))
  const payload = Buffer.from(JSON.stringify({
    type: 'telemetry', v: 1, storeId: '00000000-0000-4000-8000-000000000000',
    samples: Array.from({ length: k }, (_, i) => ({ seq: 1_000_000 + i, ts: Date.now(), sensor: `s${i % 50}`, value: Math.random() * 100 })),
  }))
  let received = 0
  const sub = await mqtt.connectAsync(url, { clientId: 'baseline-sub', reconnectPeriod: 0 })
  sub.on('message', () => { received++ })
  await sub.subscribeAsync('devices/+/telemetry', { qos: 1 })
  const pubs = await Promise.all(Array.from({ length: o.devices }, (_, i) => mqtt.connectAsync(url, { clientId: `baseline-${i}`, reconnectPeriod: 0 })))
  let running = true
  const loops = pubs.map(async (p, i) => {
    const topic = `devices/baseline-${i}/telemetry`
    const window = Array.from({ length: 4 }, async () => {
      while (running) await p.publishAsync(topic, payload, { qos: 1 })
    })
    await Promise.all(window)
  })
  await sleep(2000)
  const r0 = received, t0 = Date.now(), cpu0 = cpuMs(child.pid!)
  await sleep(seconds * 1000)
  const r1 = received, t1 = Date.now(), cpu1 = cpuMs(child.pid!)
  running = false
  await Promise.allSettled(loops)
  await Promise.allSettled(pubs.map((p) => p.endAsync(true)))
  await sub.endAsync(true)
  child.kill('SIGTERM')
  const code = await Promise.race([exited, sleep(5000).then(() => 'timeout' as const)])
  if (code !== 0) {
    // Bare aedes 1.2 can overflow its stack when a loaded subscriber leaves: say so, it is the baseline's, not ours.
    const first = /^(\w*Error[^\n]*)/m.exec(stderr)?.[1] ?? `exit ${String(code)}`
    process.stderr.write(`note: the baseline aedes process failed while shutting down (${first}); its figures above were taken before that\n`)
    if (code === 'timeout') child.kill('SIGKILL')
  }
  const msgsPerS = (r1 - r0) / ((t1 - t0) / 1000)
  return { msgsPerS, samplesPerS: msgsPerS * k, payloadBytes: payload.length, cpuPct: ((cpu1 - cpu0) / (t1 - t0)) * 100 }
}

export async function runIngestBench(o: IngestOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-'))
  try {
    const offered = (o.devices * o.sensors * 1000) / o.intervalMs
    process.stderr.write(`ingest bench: ${o.devices} agents x ${o.sensors} sensors every ${o.intervalMs} ms = ${offered.toFixed(0)} samples/s offered; warmup ${o.warmupS}s, measure ${o.measureS}s\n`)
    const hub = await measureHub(o, work)
    process.stderr.write('raw aedes baseline...\n')
    const raw = await measureRawAedes(o, hub.samplesPerBatch, o.measureS)
    const bare = await bareNodeRss()
    process.stderr.write('TLS against plaintext...\n')
    const t = await measureTransports({ devices: o.devices, samplesPerMessage: Math.max(1, Math.round(hub.samplesPerBatch)), warmupS: 2, measureS: o.measureS }, work)
    const rows: Array<[string, string, string]> = [
      ['', 'rollcall hub', 'raw aedes (baseline)'],
      ['samples/s stored (durable, deduped, indexed)', hub.storedPerS.toFixed(0), '-'],
      ['samples/s delivered publish→subscribe (not stored)', '-', raw.samplesPerS.toFixed(0)],
      ['samples/s generated by the fleet', hub.generatedPerS.toFixed(0), '-'],
      ['messages/s', (hub.storedPerS / hub.samplesPerBatch).toFixed(0), raw.msgsPerS.toFixed(0)],
      ['samples per message (payload bytes)', `${hub.samplesPerBatch.toFixed(0)}`, `${Math.round(hub.samplesPerBatch)} (${raw.payloadBytes} B)`],
      ['ack latency p50 / p99 (send → durable ack)', `${hub.ackP50Ms.toFixed(1)} / ${hub.ackP99Ms.toFixed(1)} ms`, '-'],
      ['broker/hub process CPU', `${hub.hubCpuPct.toFixed(0)}%`, `${raw.cpuPct.toFixed(0)}%`],
      ['hub RSS (max during run)', mb(hub.hubRssMaxBytes), '-'],
      ['fleet: connected / backlog at end', `${hub.fleetConnected} / ${hub.fleetBacklog}`, '-'],
      ['fleet process CPU / RSS', `${hub.fleetCpuPct.toFixed(0)}% / ${mb(hub.fleetRssBytes)}`, '-'],
      [`idle agent process RSS after ${o.idleAgentS}s`, mb(hub.idleAgentRssBytes), `bare node: ${mb(bare)}`],
    ]
    process.stdout.write(`${table(rows)}\n`)
    const pct = (a: number, b: number) => `${a >= b ? '+' : ''}${(((a - b) / b) * 100).toFixed(0)}%`
    const tlsRows: Array<[string, string, string, string]> = [
      [`hub, ${o.devices} MQTT.js devices, ${Math.round(hub.samplesPerBatch)} samples (${t.payloadBytes} B) per message`, 'mqtt:// (plaintext)', 'mqtts:// (TLS)', 'TLS vs plaintext'],
      ['samples/s stored', t.plain.samplesPerS.toFixed(0), t.tls.samplesPerS.toFixed(0), pct(t.tls.samplesPerS, t.plain.samplesPerS)],
      ['messages/s', t.plain.messagesPerS.toFixed(0), t.tls.messagesPerS.toFixed(0), pct(t.tls.messagesPerS, t.plain.messagesPerS)],
      ['hub CPU per message', `${t.plain.hubCpuUsPerMessage.toFixed(0)} µs`, `${t.tls.hubCpuUsPerMessage.toFixed(0)} µs`, pct(t.tls.hubCpuUsPerMessage, t.plain.hubCpuUsPerMessage)],
      ['hub process CPU', `${t.plain.hubCpuPct.toFixed(0)}%`, `${t.tls.hubCpuPct.toFixed(0)}%`, ''],
      [`connect all ${o.devices} devices`, `${t.plain.connectAllMs} ms`, `${t.tls.connectAllMs} ms`, ''],
    ]
    process.stdout.write(`\n${table(tlsRows)}\n`)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
