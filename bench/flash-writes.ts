import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { sampleBody } from '../agent/outbox.js'
import { CLI_PATH, startHubProcess, type HubProcess } from './hub-process.js'
import { stopChild } from './idle-agent.js'

/**
 * `npm run bench -- flash-writes`: what a device agent costs its SD card.
 * Real `rollcall agent` processes, connected to a real hub process that acks,
 * each with its ledger on the real disk; the figure is the growth of
 * `write_bytes` in /proc/PID/io over the window, which is what the kernel
 * charges the process for dirtying page-cache pages of files (4 KiB per page
 * that goes clean -> dirty: WAL appends, checkpoints into the database file,
 * anything else). Pages the kernel writes back are charged when dirtied, so a
 * page written ten times before the flusher runs (~30 s,
 * vm.dirty_expire_centisecs) counts once, and once more after it.
 *
 * Beside it, the payload: the samples the hub stored from that agent in the
 * window, as the JSON items of the wire batch (`{"sensor":…,"ts":…,"value":…}`,
 * without seq). After the connected window the hub stops and a shorter
 * offline window shows what the outbox costs while it only grows.
 *
 * Scenarios: the default config (3 built-in sensors every 10 s), and 1
 * sample/s as 3 built-in sensors every 3 s and as 1 sensor every 1 s; then
 * the default and 1 sensor every 1 s again without the group commit
 * (outboxCommitMs 0: a commit every tick).
 */
export interface FlashWritesOptions {
  readonly seconds: number
  readonly warmupS: number
  readonly offlineS: number
  readonly scenarios?: readonly string[]
}

interface Scenario {
  readonly name: string
  readonly describe: string
  readonly config: Record<string, unknown>
}

const ONE_SENSOR_EVERY_SECOND = { sampleIntervalMs: 1000, builtinSensors: false, sensors: [{ name: 'temp', model: 'sine', min: 15, max: 25, periodMs: 600_000 }] }

const SCENARIOS: readonly Scenario[] = [
  { name: 'default', describe: '3 built-in sensors every 10 s (the default config)', config: {} },
  { name: '3x3s', describe: '3 built-in sensors every 3 s (1 sample/s)', config: { sampleIntervalMs: 3000 } },
  { name: '1x1s', describe: '1 sensor every 1 s (1 sample/s)', config: ONE_SENSOR_EVERY_SECOND },
  { name: 'default-0', describe: 'the default config with outboxCommitMs 0 (a commit every tick)', config: { outboxCommitMs: 0 } },
  { name: '1x1s-0', describe: '1 sensor every 1 s with outboxCommitMs 0 (a commit per sample)', config: { ...ONE_SENSOR_EVERY_SECOND, outboxCommitMs: 0 } },
]

/** Bytes the kernel charged this process for dirtying file pages (Linux). */
export function writeBytes(pid: number): number {
  const m = /^write_bytes:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))
  if (!m) throw new Error(`no write_bytes in /proc/${pid}/io`)
  return Number(m[1])
}

interface Running {
  readonly scenario: Scenario
  readonly id: string
  readonly child: ChildProcess
}

const DAY_S = 86_400
const perDay = (bytes: number, seconds: number) => (bytes / seconds) * DAY_S
const human = (bytes: number) => bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${(bytes / 1024).toFixed(0)} KB`

export async function runFlashWritesBench(o: FlashWritesOptions): Promise<void> {
  const scenarios = o.scenarios ? SCENARIOS.filter((s) => o.scenarios!.includes(s.name)) : SCENARIOS
  if (scenarios.length === 0) throw new Error(`--scenarios: pick from ${SCENARIOS.map((s) => s.name).join(',')}`)
  // Under the source tree's own tmp dir's parent file system: write_bytes is 0 on tmpfs.
  const work = mkdtempSync(join(tmpdir(), 'rollcall-flash-'))
  const TMPFS_MAGIC = 0x01021994
  if (statfsSync(work).type === TMPFS_MAGIC) throw new Error(`${tmpdir()} is tmpfs, where write_bytes stays 0; set TMPDIR to a directory on a real disk`)
  const running: Running[] = []
  let hub: HubProcess | undefined
  try {
    hub = await startHubProcess(join(work, 'hub'))
    const h = hub
    for (const s of scenarios) {
      const id = `flash-${s.name.toLowerCase()}`
      const r = await h.api<{ token: string }>('POST', '/api/devices', { id })
      if (r.status !== 201 && r.status !== 200) throw new Error(`cannot register ${id}: HTTP ${r.status}`)
      const dir = join(work, id)
      mkdirSync(dir, { recursive: true })
      const configFile = join(dir, 'agent.json')
      writeFileSync(configFile, JSON.stringify(s.config))
      const child = spawn(process.execPath, [CLI_PATH, 'agent', '--hub', `mqtt://127.0.0.1:${h.mqttPort}`, '--id', id, '--data', join(dir, 'data'), '--config', configFile, '--log-level', 'warn'],
        { stdio: 'ignore', env: { ...process.env, ROLLCALL_TOKEN: r.body.token } })
      running.push({ scenario: s, id, child })
    }
    process.stderr.write(`flash-writes bench: ${running.length} agents; ${o.warmupS}s warm-up, ${o.seconds}s connected, ${o.offlineS}s offline\n`)
    await sleep(o.warmupS * 1000)
    const alive = () => {
      for (const r of running) if (r.child.exitCode !== null) throw new Error(`agent ${r.id} exited with ${r.child.exitCode}`)
    }
    alive()
    const t0 = Date.now()
    const w0 = running.map((r) => writeBytes(r.child.pid!))
    await sleep(o.seconds * 1000)
    alive()
    const w1 = running.map((r) => writeBytes(r.child.pid!))
    const t1 = Date.now()
    const windowS = (t1 - t0) / 1000
    // The payload of the window, from what the hub stored.
    const payload: number[] = []
    const samples: number[] = []
    for (const r of running) {
      const q = await h.api<{ samples: Array<{ sensor: string; ts: number; value: number }> }>('GET',
        `/api/devices/${r.id}/telemetry?since=${t0}&until=${t1}&limit=100000`)
      if (q.status !== 200) throw new Error(`telemetry of ${r.id}: HTTP ${q.status}`)
      samples.push(q.body.samples.length)
      payload.push(q.body.samples.reduce((a, x) => a + sampleBody(x.sensor, x.ts, x.value).length, 0))
    }
    await h.stop()
    hub = undefined
    let offline: number[] | undefined
    let offlineS = 0
    if (o.offlineS > 0) {
      // Let the agents notice the hub is gone and settle into retrying.
      await sleep(5000)
      alive()
      const o0 = running.map((r) => writeBytes(r.child.pid!))
      const s0 = Date.now()
      await sleep(o.offlineS * 1000)
      alive()
      offline = running.map((r, i) => writeBytes(r.child.pid!) - o0[i]!)
      offlineS = (Date.now() - s0) / 1000
    }
    process.stdout.write(`flash writes (write_bytes of each agent process), ${windowS.toFixed(0)}s connected to a hub that acks${offline ? `, ${offlineS.toFixed(0)}s offline` : ''}:\n`)
    running.forEach((r, i) => {
      const written = w1[i]! - w0[i]!
      const ratio = payload[i]! > 0 ? (written / payload[i]!).toFixed(1) : 'n/a'
      const perSample = samples[i]! > 0 ? `${(written / samples[i]!).toFixed(0)} B/sample` : ''
      process.stdout.write(`  ${r.scenario.name.padEnd(8)} ${r.scenario.describe}\n`)
      process.stdout.write(`           connected: ${human(perDay(written, windowS))}/day written, payload ${human(perDay(payload[i]!, windowS))}/day (${samples[i]} samples): ${ratio}x payload, ${perSample}\n`)
      if (offline) process.stdout.write(`           offline:   ${human(perDay(offline[i]!, offlineS))}/day written\n`)
    })
  } finally {
    for (const r of running) await stopChild(r.child)
    await hub?.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
