import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { silentLogger } from '../common/logger.js'
import { percentiles } from '../common/latency.js'
import { createWriter } from '../hub/storage/group-commit.js'
import { openHubDb } from '../hub/storage/schema.js'
import { createWalSync } from '../hub/storage/wal-sync.js'
import { createCheckpointer } from '../hub/storage/checkpointer.js'
import { createSqliteTelemetryStore } from '../hub/telemetry/sqlite.js'
import { table } from '../cli/output.js'

/**
 * `npm run bench -- commit-sync`: where the group commit's fsync should run.
 * The hub's own database, writer and telemetry store, fed as a fleet feeds
 * them (one-sample batches from `devices` devices, `rate` a second in all),
 * with no network in the way, in alternating rounds of the two ways:
 *
 * - in COMMIT: synchronous=FULL, SQLite fsyncs the WAL inside the
 *   transaction, and the event loop waits for the disk (the hub before);
 * - in the thread pool: the transaction under synchronous=NORMAL, then
 *   fdatasync of the WAL in libuv's pool, the acks after it (wal-sync.ts).
 *
 * For each: the event loop's time in commits (the share of one core the
 * commit path holds it), the loop's delay, and the time from a batch being
 * queued to its ack (the durable point) — what a device waits on.
 */
export interface CommitSyncOptions {
  readonly devices: number
  readonly rate: number
  readonly seconds: number
  readonly rounds: number
  readonly flushDelayMs: number
}

interface Round {
  readonly way: string
  readonly commits: number
  readonly samplesPerS: number
  readonly loopBusyPct: number
  readonly commitP50Ms: number
  readonly commitP99Ms: number
  readonly ackP50Ms: number
  readonly ackP99Ms: number
  readonly delayP99Ms: number
  /** The WAL file's size at the end: how far it grew between restarts. */
  readonly walBytes: number
}

type Way = 'commit' | 'pool' | 'pool+thread'
const WAYS: Record<Way, string> = {
  'commit': 'fsync in COMMIT (FULL)',
  'pool': 'fsync in the thread pool',
  'pool+thread': '+ checkpoints on a thread',
}

async function round(way: Way, o: CommitSyncOptions): Promise<Round> {
  const dir = mkdtempSync(join(tmpdir(), 'rollcall-bench-commit-sync-'))
  const path = join(dir, 'hub.db')
  const db = openHubDb(path)
  const commitMs: number[] = []
  const writer = createWriter(db, {
    flushDelayMs: o.flushDelayMs, maxBatchWeight: 10_000,
    ...(way !== 'commit' ? { walSync: createWalSync(db, path) } : {}),
  }, silentLogger())
  const checkpointer = way === 'pool+thread' ? createCheckpointer(db, path, { intervalMs: 100, fallbackPages: 10_000 }, silentLogger()) : undefined
  if (checkpointer) writer.onCommit(() => { checkpointer.committed() })
  const telemetry = createSqliteTelemetryStore(db, writer, silentLogger())
  try {
    const ids = Array.from({ length: o.devices }, (_, i) => `dev-${String(i).padStart(5, '0')}`)
    const seqs = new Array<number>(o.devices).fill(0)
    // Each stream's first batch creates its rows: done before the clock starts.
    for (let i = 0; i < o.devices; i++) telemetry.storeSamples(ids[i]!, 'bench', 0, Date.now(), [{ sensor: 'temp', ts: Date.now(), seq: ++seqs[i]!, value: 1 }])
    writer.flush()
    while (writer.stats().awaitingSync > 0) await sleep(5)

    // A device's ack: the first batch it queued since its last ack, to the ack that covers it.
    const acked: number[] = []
    const sentAt = new Map<string, number>()
    telemetry.onAcks((acks) => {
      const now = performance.now()
      for (const a of acks) {
        const t = sentAt.get(a.deviceId)
        if (t !== undefined) { acked.push(now - t); sentAt.delete(a.deviceId) }
      }
    })
    const delay = monitorEventLoopDelay({ resolution: 5 })
    delay.enable()
    const c0 = writer.stats().commits
    const stored0 = telemetry.counters().samplesStored
    let loopMs = 0
    const tickMs = 5
    const perTick = (o.rate * tickMs) / 1000
    let owed = 0
    let next = 0
    const t0 = performance.now()
    const end = t0 + o.seconds * 1000
    while (performance.now() < end) {
      owed += perTick
      for (; owed >= 1; owed--) {
        const i = next
        next = (next + 1) % o.devices
        const id = ids[i]!
        if (!sentAt.has(id)) sentAt.set(id, performance.now())
        telemetry.storeSamples(id, 'bench', seqs[i]!, Date.now(), [{ sensor: 'temp', ts: Date.now(), seq: ++seqs[i]!, value: Math.random() }])
      }
      // The writer flushes on its own timer (every flushDelayMs, four ticks): the commit
      // it made meanwhile held the loop for lastCommitMs.
      const before = writer.stats().commits
      await sleep(tickMs)
      if (writer.stats().commits > before) {
        const held = writer.stats().lastCommitMs
        commitMs.push(held)
        loopMs += held
      }
    }
    const wall = performance.now() - t0
    writer.flush()
    while (writer.stats().awaitingSync > 0) await sleep(5)
    delay.disable()
    const c = percentiles(commitMs)
    const a = percentiles(acked)
    return {
      way: WAYS[way],
      commits: writer.stats().commits - c0,
      samplesPerS: ((telemetry.counters().samplesStored - stored0) / wall) * 1000,
      loopBusyPct: (loopMs / wall) * 100,
      commitP50Ms: c.p50, commitP99Ms: c.p99, ackP50Ms: a.p50, ackP99Ms: a.p99,
      delayP99Ms: delay.percentile(99) / 1e6,
      walBytes: statSync(`${path}-wal`).size,
    }
  } finally {
    await checkpointer?.close()
    writer.close()
    db.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function runCommitSyncBench(o: CommitSyncOptions): Promise<void> {
  process.stderr.write(`commit-sync bench: ${o.devices} devices, ${o.rate} one-sample batches/s in all, ${o.seconds}s per round, ${o.rounds} rounds of each way, alternating; flushDelayMs ${o.flushDelayMs}\n`)
  const rounds: Round[] = []
  for (let r = 0; r < o.rounds; r++) {
    for (const way of ['commit', 'pool', 'pool+thread'] as const) {
      const x = await round(way, o)
      process.stderr.write(`  round ${r + 1}, ${x.way}: loop in commits ${x.loopBusyPct.toFixed(1)}%, ack p50/p99 ${x.ackP50Ms.toFixed(1)}/${x.ackP99Ms.toFixed(1)} ms, WAL ${(x.walBytes / 1e6).toFixed(1)} MB\n`)
      rounds.push(x)
    }
  }
  const f = (n: number) => n.toFixed(1)
  process.stdout.write(table([
    ['way', 'commits', 'samples/s', 'loop in commits', 'commit on loop p50 / p99 ms', 'queued → ack p50 / p99 ms', 'loop delay p99 ms', 'WAL'],
    ...rounds.map((x) => [x.way, String(x.commits), x.samplesPerS.toFixed(0), `${f(x.loopBusyPct)}%`, `${f(x.commitP50Ms)} / ${f(x.commitP99Ms)}`, `${f(x.ackP50Ms)} / ${f(x.ackP99Ms)}`, f(x.delayP99Ms), `${f(x.walBytes / 1e6)} MB`]),
  ]) + '\n')
}
