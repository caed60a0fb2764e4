/**
 * `npm run bench -- online [--devices 2000]`: how soon after its connect slot
 * a device of a staggered fleet is online, and where the time goes.
 *
 * Three runs on this machine, one after the other, with the same stagger
 * (200 connects/s, as the simulator's default):
 *
 *   1. rollcall sim     real agents in this process (each opens its SQLite
 *                       ledger, behind the simulator's per-device TCP link)
 *                       against a rollcall hub in its own process
 *   2. bare clients     one MQTT.js client per device in this process, no
 *                       ledger: CONNECT, SUBSCRIBE to the five down-topics,
 *                       birth; against a rollcall hub in its own process
 *   3. bare -> aedes    the same bare clients against raw aedes (no auth, no
 *                       ACL, no storage): the baseline
 *
 * "Online" is what the agent calls ready: CONNACK and SUBACK in. 1 against 2
 * is the agent's and the simulator's own cost; 2 against 3 is the hub's
 * connect path (authentication, ACL, presence).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import mqtt, { type MqttClient } from 'mqtt'
import { percentiles } from '../common/latency.js'
import { topics } from '../protocol/topics.js'
import { ownHub, type SimHub } from '../devices-sim/hub-control.js'
import { runSim } from '../devices-sim/sim.js'
import { startRawAedes } from './raw-aedes-process.js'

export interface OnlineBenchOptions {
  readonly devices: number
}

const CONNECTS_PER_SECOND = 200

interface Row {
  readonly name: string
  readonly online: number
  readonly late: { p50: number; p99: number; max: number }
  readonly lastOnlineMs: number | null
  readonly agentStart?: { p50: number; p99: number }
  readonly loopDelay: { p50: number; p99: number; max: number }
  readonly cpuMs: number
}

export async function runOnlineBench(o: OnlineBenchOptions): Promise<void> {
  const staggerMs = (o.devices / CONNECTS_PER_SECOND) * 1000
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-online-'))
  process.stdout.write(`${o.devices} devices connecting at ${CONNECTS_PER_SECOND}/s (slots over ${staggerMs / 1000} s); online = CONNACK + SUBACK\n\n`)
  const rows: Row[] = []
  try {
    rows.push(await simRun(o.devices, staggerMs, join(work, 'sim')))
    rows.push(await bareRun('bare clients -> hub', o.devices, staggerMs, join(work, 'bare')))
    rows.push(await bareRun('bare clients -> aedes', o.devices, staggerMs, undefined))
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  const f = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`)
  const table = [
    ['run', 'online', 'after slot p50', 'p99', 'max', 'last online', 'agent start p50', 'loop delay p99', 'CPU here'],
    ...rows.map((r) => [
      r.name, `${r.online}/${o.devices}`, f(r.late.p50), f(r.late.p99), f(r.late.max),
      r.lastOnlineMs === null ? '-' : f(r.lastOnlineMs), r.agentStart ? `${r.agentStart.p50.toFixed(1)} ms` : '-', f(r.loopDelay.p99), f(r.cpuMs),
    ]),
  ]
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)))
  for (const row of table) process.stdout.write(`${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}\n`)
  process.stdout.write(`\n"CPU here" is this process's CPU time over the run (the agents, or the bare clients); the hub or aedes runs in its own process.\n`)
}

/** Run 1: the simulator, exactly as `rollcall sim` and the 2,000-device test run it. */
async function simRun(devices: number, staggerMs: number, dir: string): Promise<Row> {
  const hub: SimHub = await ownHub(join(dir, 'hub'))
  const cpu0 = process.cpuUsage()
  try {
    const report = await runSim({
      hub, devices, durationMs: staggerMs + 10_000, profile: 'steady', seed: 7, sampleIntervalMs: 5000, staggerMs,
      chaos: [], workDir: join(dir, 'fleet'), jobEveryMs: 0, commandEveryMs: 0, drainTimeoutMs: 60_000,
    })
    const cpu = process.cpuUsage(cpu0)
    if (report.totals.lost !== 0 || report.totals.duplicates !== 0) throw new Error(`the simulator lost ${report.totals.lost} and duplicated ${report.totals.duplicates} samples`)
    return {
      name: 'rollcall sim (agents) -> hub', online: report.online.everOnline, late: report.online.lateAfterSlotMs, lastOnlineMs: report.online.allOnlineByMs,
      agentStart: report.online.agentStartMs, loopDelay: report.online.loopDelayMs, cpuMs: (cpu.user + cpu.system) / 1000,
    }
  } finally {
    await hub.stop()
  }
}

/** Runs 2 and 3: one bare MQTT.js client per device, connecting at its slot; `hubDir` undefined for raw aedes. */
async function bareRun(name: string, devices: number, staggerMs: number, hubDir: string | undefined): Promise<Row> {
  let url: string
  let stop: () => Promise<void>
  let creds: Map<string, string> | undefined
  if (hubDir !== undefined) {
    const hub = await ownHub(hubDir)
    stop = () => hub.stop()
    url = hub.mqttUrl
    creds = new Map()
    const ids = Array.from({ length: devices }, (_, i) => `bare-${String(i + 1).padStart(5, '0')}`)
    for (let i = 0; i < ids.length; i += 1000) {
      const r = await hub.api<{ devices: Array<{ id: string; token: string }> }>('POST', '/api/devices/bulk', { devices: ids.slice(i, i + 1000).map((id) => ({ id })), existing: 'rotate' })
      if (r.status !== 200) throw new Error(`provisioning: ${r.status} ${JSON.stringify(r.body)}`)
      for (const d of r.body.devices) creds.set(d.id, d.token)
    }
  } else {
    const raw = await startRawAedes('inherit')
    const child = raw.child
    url = raw.url
    stop = async () => {
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
    }
  }

  const clients: MqttClient[] = []
  const late: number[] = []
  let lastOnline = 0
  const loop = monitorEventLoopDelay({ resolution: 10 })
  const cpu0 = process.cpuUsage()
  const t0 = Date.now()
  try {
    loop.enable()
    const all = Array.from({ length: devices }, (_, i) => new Promise<void>((resolve) => {
      const slot = (i * staggerMs) / devices
      setTimeout(() => {
        const id = `bare-${String(i + 1).padStart(5, '0')}`
        const client = mqtt.connect(url, {
          clientId: id, username: id, password: creds?.get(id) ?? 'x', clean: true, keepalive: 60, reconnectPeriod: 0, protocolVersion: 4,
          will: { topic: topics.state(id), payload: Buffer.from(JSON.stringify({ type: 'death', v: 1, epoch: 1 })), qos: 1, retain: true },
        })
        clients.push(client)
        client.on('error', () => {})
        client.once('close', () => resolve())
        client.once('connect', () => {
          client.subscribe([topics.telemetryAck(id), topics.jobsNotify(id), topics.jobsBatch(id), topics.jobsAck(id), topics.cmdReq(id)], { qos: 1 }, (err) => {
            if (err) return resolve()
            const now = Date.now() - t0
            late.push(now - slot)
            lastOnline = Math.max(lastOnline, now)
            client.publish(topics.state(id), JSON.stringify({ type: 'birth', v: 1, epoch: 1, bootId: 'bare', agentVersion: 'bare', storeId: '7e57da7a-0000-4000-8000-000000000001', capabilities: [] }), { qos: 1, retain: true })
            resolve()
          })
        })
      }, slot)
    }))
    // Bounded: every client has its slot within staggerMs, and a minute more to be online.
    await Promise.race([Promise.all(all), new Promise((r) => setTimeout(r, staggerMs + 60_000))])
    loop.disable()
    const cpu = process.cpuUsage(cpu0)
    const ms = (ns: number) => ns / 1e6
    return {
      name, online: late.length, late: percentiles(late), lastOnlineMs: late.length === devices ? lastOnline : null,
      loopDelay: { p50: ms(loop.percentile(50)), p99: ms(loop.percentile(99)), max: ms(loop.max) }, cpuMs: (cpu.user + cpu.system) / 1000,
    }
  } finally {
    loop.disable()
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})))
    await stop()
  }
}
