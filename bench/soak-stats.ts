import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { rssBytes } from './proc-stats.js'

/**
 * What the soak benchmarks (bench/soak-agent.ts, bench/soak-hub.ts) share:
 * reading a process from /proc, the bare Node baseline sampled beside the
 * process under test, the least-squares slope of a series, and the table
 * they print. A soak asks "does anything grow?", so every series is
 * summarised by its slope per hour after a warm-up, with the slope's standard
 * error beside it: a slope within a few standard errors of zero is noise.
 */

/** Open file descriptors of a process: the entries of /proc/PID/fd (Linux). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** Size of a file in bytes, 0 when it does not exist (a WAL between checkpoints may not). */
export function fileBytes(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}

/** A JSON file another process rewrites (rename over), or undefined while it is not there yet. */
export function readJsonFile<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T
  } catch {
    return undefined
  }
}

/** One point of a series: hours since the start of the run, and the value. */
export interface Point {
  readonly h: number
  readonly v: number
}

export interface Fit {
  /** Units per hour. */
  readonly slope: number
  /** Standard error of the slope (same unit). */
  readonly slopeSe: number
}

/** Ordinary least squares of v against h; NaN with fewer than 3 points (no slope worth printing). */
export function leastSquares(points: readonly Point[]): Fit {
  const n = points.length
  if (n < 3) return { slope: NaN, slopeSe: NaN }
  const mh = points.reduce((s, p) => s + p.h, 0) / n
  const mv = points.reduce((s, p) => s + p.v, 0) / n
  let sxx = 0, sxy = 0
  for (const p of points) {
    sxx += (p.h - mh) ** 2
    sxy += (p.h - mh) * (p.v - mv)
  }
  if (sxx === 0) return { slope: NaN, slopeSe: NaN }
  const slope = sxy / sxx
  const intercept = mv - slope * mh
  const ssr = points.reduce((s, p) => s + (p.v - intercept - slope * p.h) ** 2, 0)
  return { slope, slopeSe: Math.sqrt(ssr / (n - 2) / sxx) }
}

/**
 * The minimum of each window of `hours`: a heap's floor. heapUsed is a saw
 * tooth (it climbs between collections), so its raw slope is noisy; the
 * floor after each collection is what live data holds, and a leak lifts it.
 */
export function floors(points: readonly Point[], hours: number): Point[] {
  const out: Point[] = []
  const h0 = points[0]?.h ?? 0
  // Windows by index, with a little slack: 24/60 − 18/60 is a hair under 0.1 in floating point.
  const windowOf = (p: Point) => Math.floor((p.h - h0) / hours + 1e-9)
  let window: Point[] = []
  for (const p of points) {
    if (window.length > 0 && windowOf(p) !== windowOf(window[0]!)) {
      out.push(window.reduce((a, b) => (b.v < a.v ? b : a)))
      window = []
    }
    window.push(p)
  }
  // The last window may be partial: left out, as its floor may not have been reached yet.
  return out
}

export type Unit = 'bytes' | 'count'

export interface SeriesSummary {
  readonly name: string
  readonly unit: Unit
  readonly first: number
  readonly min: number
  readonly max: number
  readonly last: number
  readonly fit: Fit
  readonly points: number
}

/** Min/max/last over the whole run, the slope over the points after `warmupH`. */
export function summarize(name: string, unit: Unit, points: readonly Point[], warmupH: number): SeriesSummary {
  const vs = points.map((p) => p.v)
  const after = points.filter((p) => p.h >= warmupH)
  return {
    name, unit, points: after.length,
    first: vs[0] ?? NaN, min: Math.min(...vs), max: Math.max(...vs), last: vs[vs.length - 1] ?? NaN,
    fit: leastSquares(after),
  }
}

const MB = 1024 * 1024
const fmt = (v: number, unit: Unit) => !Number.isFinite(v) ? '–' : unit === 'bytes' ? `${(v / MB).toFixed(1)} MB` : String(Math.round(v * 10) / 10)
const fmtSlope = (f: Fit, unit: Unit) => {
  if (!Number.isFinite(f.slope)) return '–'
  const sign = (x: number) => (x >= 0 ? '+' : '−')
  const v = (x: number) => (unit === 'bytes' ? `${(Math.abs(x) / MB).toFixed(2)} MB` : `${(Math.round(Math.abs(x) * 100) / 100)}`)
  return `${sign(f.slope)}${v(f.slope)}/h ± ${v(f.slopeSe)}`
}

/** Every point of every series, one `series,hours,value` line each, for a closer look than the table gives. */
export function writeCsv(path: string, series: Readonly<Record<string, readonly Point[]>>): void {
  const lines = ['series,hours,value']
  for (const [name, points] of Object.entries(series)) for (const p of points) lines.push(`${name},${p.h.toFixed(5)},${p.v}`)
  writeFileSync(path, `${lines.join('\n')}\n`)
}

/** A markdown table, ready for docs/benchmarks.md. */
export function table(rows: readonly SeriesSummary[]): string {
  const lines = ['| series | slope after warm-up (± std. error) | min | max | last | points |', '|---|---|---|---|---|---|']
  for (const r of rows) lines.push(`| ${r.name} | ${fmtSlope(r.fit, r.unit)} | ${fmt(r.min, r.unit)} | ${fmt(r.max, r.unit)} | ${fmt(r.last, r.unit)} | ${r.points} |`)
  return lines.join('\n')
}

/** The warm-up the slopes leave out, in hours: the first sixth of the run, at most 5 minutes. */
export function warmupHours(minutes: number): number {
  return Math.min(5, minutes / 6) / 60
}

/**
 * A bare Node process that does what the agent's stats file does (writes
 * process.memoryUsage() every 5 s): the baseline for RSS, heap and fd slopes,
 * sampled the same way in the same run, so the noise floor of "flat" on this
 * machine is measured, not assumed.
 */
function spawnBareNode(statsPath: string): ChildProcess {
  const script = `const fs = require('node:fs'); const p = process.argv[1];
const w = () => { fs.writeFileSync(p + '.tmp', JSON.stringify({ t: Date.now(), memory: process.memoryUsage() })); fs.renameSync(p + '.tmp', p) };
w(); setInterval(w, 5000)`
  return spawn(process.execPath, ['-e', script, statsPath], { stdio: 'ignore' })
}

/** The baseline's series, under the names the soaks' tables and CSV files give them. */
export interface BaselineSeries {
  readonly bareRss: Point[]
  readonly bareHeap: Point[]
  readonly bareFds: Point[]
}

/** The bare Node baseline of a soak: its process, and its series sampled as the process under test is. */
export interface Baseline {
  readonly child: ChildProcess
  readonly series: BaselineSeries
  /** Waits until it has written its first stats (at most 30 s). */
  started(aborted: Promise<never>): Promise<void>
  /** One point of each series at `h` hours: RSS and fds from /proc, the heap from its stats file. */
  sample(h: number): void
}

export function startBaseline(statsPath: string): Baseline {
  const child = spawnBareNode(statsPath)
  const pid = child.pid!
  const series: BaselineSeries = { bareRss: [], bareHeap: [], bareFds: [] }
  return {
    child,
    series,
    started: (aborted) => waitFor('the baseline process did not start', () => readJsonFile(statsPath) !== undefined, 30_000, aborted),
    sample(h) {
      series.bareRss.push({ h, v: rssBytes(pid) })
      series.bareFds.push({ h, v: fdCount(pid) })
      const stats = readJsonFile<{ memory: NodeJS.MemoryUsage }>(statsPath)
      if (stats) series.bareHeap.push({ h, v: stats.memory.heapUsed })
    },
  }
}

/** Waits until `ready()` holds (polled every 200 ms), at most `limitMs`; says what did not start otherwise. */
export async function waitFor(what: string, ready: () => boolean, limitMs: number, aborted: Promise<never>): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`${what} in ${limitMs / 1000} s`)
    await pause(200, aborted)
  }
}

/** Stops a child we started: SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await Promise.race([exited, sleep(graceMs)])
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL')
    await Promise.race([exited, sleep(graceMs)])
  }
}

/**
 * Runs `body` with SIGINT/SIGTERM turned into a rejection of `aborted`, so a
 * Ctrl-C still reaches the benchmark's `finally` and every child is stopped
 * by its PID.
 */
export async function withInterrupts<T>(body: (aborted: Promise<never>) => Promise<T>): Promise<T> {
  let onSignal: ((s: NodeJS.Signals) => void) | undefined
  const aborted = new Promise<never>((_, reject) => {
    onSignal = (s) => reject(new Error(`interrupted (${s}); stopping the processes the soak started`))
  })
  aborted.catch(() => { /* observed by whoever races it */ })
  process.on('SIGINT', onSignal!)
  process.on('SIGTERM', onSignal!)
  try {
    return await body(aborted)
  } finally {
    process.off('SIGINT', onSignal!)
    process.off('SIGTERM', onSignal!)
  }
}

/** Sleeps `ms`, or rejects at once when `aborted` does. */
export function pause(ms: number, aborted: Promise<never>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([new Promise<void>((r) => { timer = setTimeout(r, ms) }), aborted]).finally(() => clearTimeout(timer))
}
