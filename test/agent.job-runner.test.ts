import { existsSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { manualClock, systemClock, type Clock } from '../common/clock.js'
import { silentLogger } from '../common/logger.js'
import { builtinHandlers, HandlerRegistry, JobError, type JobHandler } from '../agent/job-handlers.js'
import { JobQueue, type JobInput } from '../agent/job-queue.js'
import { JobRunner } from '../agent/job-runner.js'
import { Ledger } from '../agent/ledger.js'
import { removeDir, sleep, tempDir, waitFor } from './agent.support.js'

/** The runner against a real ledger: concurrency, timeouts, cancellation, and the built-in handlers. */

const dirs: string[] = []
const ledgers: Ledger[] = []
const runners: JobRunner[] = []

afterEach(async () => {
  for (const r of runners.splice(0)) await r.stop(0)
  for (const l of ledgers.splice(0)) l.close()
  for (const d of dirs.splice(0)) removeDir(d)
})

interface Setup { queue: JobQueue; runner: JobRunner }

function setup(handlers: Record<string, JobHandler> = {}, options: { concurrency?: number; shellAllow?: string[]; shellMaxOutputBytes?: number; clock?: Clock } = {}): Setup {
  const dir = tempDir()
  dirs.push(dir)
  const ledger = new Ledger({ dataDir: dir })
  ledgers.push(ledger)
  const queue = new JobQueue(ledger, { capacity: 100 })
  const registry = new HandlerRegistry(
    builtinHandlers({ shellAllow: options.shellAllow ?? [], shellMaxOutputBytes: options.shellMaxOutputBytes ?? 65536 }),
    handlers,
  )
  const runner = new JobRunner(queue, registry, {
    concurrency: options.concurrency ?? 2,
    deviceId: 'dev-1',
    clock: options.clock ?? systemClock,
    logger: silentLogger(),
    sampleSensors: () => ({ 'cpu.load': 0.5 }),
  })
  runners.push(runner)
  runner.start()
  return { queue, runner }
}

let n = 0
function job(name: string, payload: unknown = null, over: Partial<JobInput> = {}): JobInput {
  n++
  return { execId: `jrun${n}.dev-1`, jobId: `jrun${n}`, name, payload, attempt: 1, version: 1, timeoutMs: 10_000, priority: 0, ...over }
}

function submit(s: Setup, jobs: JobInput[]): void {
  s.queue.enqueue(jobs, Date.now())
  s.runner.kick()
}

/** Terminal updates by execId, once every one of `jobs` has one. */
async function results(s: Setup, jobs: JobInput[]): Promise<Map<string, Record<string, unknown>>> {
  const byExec = new Map<string, Record<string, unknown>>()
  await waitFor(`${jobs.length} terminal updates`, () => {
    byExec.clear()
    for (const r of s.queue.readUpdatesAfter(0, 1000)) if (r.status !== 'in_progress') byExec.set(r.execId, JSON.parse(r.body) as Record<string, unknown>)
    return jobs.every((j) => byExec.has(j.execId))
  })
  return byExec
}

describe('job runner', () => {
  it('runs no more jobs at once than its concurrency', async () => {
    let now = 0
    let peak = 0
    const s = setup({
      slow: async () => {
        now++
        peak = Math.max(peak, now)
        await sleep(30)
        now--
        return { ok: true }
      },
    }, { concurrency: 2 })
    const jobs = Array.from({ length: 7 }, () => job('slow'))
    submit(s, jobs)
    const r = await results(s, jobs)
    expect(peak).toBe(2)
    expect([...r.values()].every((u) => u.status === 'succeeded')).toBe(true)
    expect(s.queue.stats()).toMatchObject({ running: 0, queued: 0, done: 7 })
  })

  it('times out a job: the signal fires, the outcome is timed_out, a late result is ignored', async () => {
    let aborted: unknown
    // Ignores the signal and answers only when the test says so: the outcome must not wait for it.
    let answer: (value: string) => void = () => {}
    const clock = manualClock(Date.now())
    const s = setup({
      stubborn: (ctx) => new Promise((resolve) => {
        ctx.signal.addEventListener('abort', () => { aborted = ctx.signal.reason })
        answer = resolve
      }),
    }, { clock })
    const j = job('stubborn', null, { timeoutMs: 100 })
    submit(s, [j])
    // On the manual clock the timeout fires at 100 ms of the clock's time, not a moment before.
    await waitFor('running', () => s.runner.stats().active === 1)
    clock.advance(99)
    expect(s.runner.stats().active).toBe(1)
    clock.advance(1)
    const r = await results(s, [j])
    expect(aborted).toBe('timeout')
    expect(r.get(j.execId)).toMatchObject({ status: 'timed_out', error: { code: 'TIMEOUT' } })
    expect(s.runner.stats().lateResults).toBe(0)
    answer('late')
    await waitFor('late result', () => s.runner.stats().lateResults === 1)
    expect(s.queue.stats().outcomes).toMatchObject({ timed_out: 1, succeeded: 0 })
  })

  it('cancels a running job: its signal fires, it ends canceled, and no update is sent for it', async () => {
    let signal: AbortSignal | undefined
    const s = setup({ wait: (ctx) => { signal = ctx.signal; return new Promise(() => {}) } })
    const j = job('wait')
    submit(s, [j])
    await waitFor('running', () => signal !== undefined)
    s.runner.cancel([{ execId: j.execId, attempt: 1 }])
    expect(signal!.aborted).toBe(true)
    expect(signal!.reason).toBe('canceled')
    await waitFor('recorded', () => s.queue.stats().outcomes.canceled === 1)
    // The unsent in_progress went with it.
    expect(s.queue.readUpdatesAfter(0, 10)).toEqual([])
    expect(s.queue.stats()).toMatchObject({ running: 0, done: 1 })
  })

  it('rejects an unknown task, naming the handlers there are', async () => {
    const s = setup()
    const j = job('no.such.task')
    submit(s, [j])
    const u = (await results(s, [j])).get(j.execId)!
    expect(u).toMatchObject({ status: 'rejected', error: { code: 'UNKNOWN_TASK' } })
    expect((u.error as { message: string }).message).toContain('echo, sensors.sample, shell, sleep')
  })

  it('fails a throwing handler with its code, or HANDLER_FAILED; JobError picks the outcome', async () => {
    const s = setup({
      'throws.coded': () => { throw Object.assign(new Error('disk full'), { code: 'ENOSPC' }) },
      'throws.plain': async () => { throw new Error('nope') },
      'throws.string': () => { throw 'just a string' as unknown as Error },
      'rejects': () => { throw new JobError('NOT_HERE', 'wrong device', { outcome: 'rejected' }) },
    })
    const jobs = [job('throws.coded'), job('throws.plain'), job('throws.string'), job('rejects')]
    submit(s, jobs)
    const r = await results(s, jobs)
    expect(jobs.map((j) => r.get(j.execId))).toMatchObject([
      { status: 'failed', error: { code: 'ENOSPC', message: 'disk full' } },
      { status: 'failed', error: { code: 'HANDLER_FAILED', message: 'nope' } },
      { status: 'failed', error: { code: 'HANDLER_FAILED', message: 'just a string' } },
      { status: 'rejected', error: { code: 'NOT_HERE' } },
    ])
  })

  it('runs the built-ins echo, sleep and sensors.sample; sleep stops promptly on abort', async () => {
    const s = setup()
    const jobs = [job('echo', { hello: ['world'] }), job('sleep', { ms: 20 }), job('sensors.sample'), job('sleep', { ms: -1 })]
    submit(s, jobs)
    const r = await results(s, jobs)
    expect(jobs.map((j) => r.get(j.execId))).toMatchObject([
      { status: 'succeeded', result: { hello: ['world'] } },
      { status: 'succeeded', result: { sleptMs: 20 } },
      { status: 'succeeded', result: { 'cpu.load': 0.5 } },
      { status: 'rejected', error: { code: 'BAD_PAYLOAD' } },
    ])
    const long = job('sleep', { ms: 60_000 }, { timeoutMs: 50 })
    submit(s, [long])
    expect((await results(s, [long])).get(long.execId)).toMatchObject({ status: 'timed_out' })
    // The sleep's own rejection arrives right after the abort, not a minute later.
    await waitFor('sleep ended', () => s.runner.stats().lateResults === 1, 2000)
  })

  it('shell runs an allowed command without a shell and captures its output', async () => {
    const s = setup({}, { shellAllow: ['/bin/echo', '/bin/false'] })
    const jobs = [
      job('shell', { cmd: '/bin/echo', args: ['hello', '$HOME', '; ls'] }),
      job('shell', { cmd: '/bin/false' }),
      job('shell', { cmd: '/bin/sh', args: ['-c', 'echo pwned'] }),
      job('shell', { cmd: 'echo' }),
      job('shell', { cmd: '/bin/echo', args: [1] }),
    ]
    submit(s, jobs)
    const r = await results(s, jobs)
    const [ok, nonzero, offList, bare, bad] = jobs.map((j) => r.get(j.execId)!)
    expect(ok).toMatchObject({ status: 'succeeded', result: { exitCode: 0, stdout: 'hello $HOME ; ls\n', stderr: '', truncated: false } })
    expect(nonzero).toMatchObject({ status: 'failed', error: { code: 'EXIT_NONZERO' }, result: { exitCode: 1 } })
    expect(offList).toMatchObject({ status: 'rejected', error: { code: 'COMMAND_NOT_ALLOWED' } })
    expect((offList!.error as { message: string }).message).toMatch(/shellAllow.*\/bin\/echo, \/bin\/false/)
    expect(bare).toMatchObject({ status: 'rejected', error: { code: 'COMMAND_NOT_ALLOWED' } })
    expect(bad).toMatchObject({ status: 'rejected', error: { code: 'BAD_PAYLOAD' } })
  })

  it('shell keeps the head of output over the cap and marks it truncated', async () => {
    const s = setup({}, { shellAllow: ['/usr/bin/seq'], shellMaxOutputBytes: 1000 })
    const j = job('shell', { cmd: '/usr/bin/seq', args: ['1', '200000'] })
    submit(s, [j])
    const u = (await results(s, [j])).get(j.execId)!
    const result = u.result as { exitCode: number; stdout: string; truncated: boolean }
    expect(u.status).toBe('succeeded')
    expect(result.exitCode).toBe(0)
    expect(result.truncated).toBe(true)
    expect(result.stdout).toHaveLength(1000)
    expect(result.stdout.startsWith('1\n2\n3\n')).toBe(true)
  })

  it('a shell command is killed when its job times out', async () => {
    const s = setup({}, { shellAllow: ['/usr/bin/sleep', '/bin/sleep'] })
    const cmd = ['/usr/bin/sleep', '/bin/sleep'].find((c) => existsSync(c)) ?? '/bin/sleep'
    const j = job('shell', { cmd, args: ['30'] }, { timeoutMs: 100 })
    submit(s, [j])
    expect((await results(s, [j])).get(j.execId)).toMatchObject({ status: 'timed_out' })
    await waitFor('child killed, its rejection arrives late', () => s.runner.stats().lateResults === 1, 5000)
  })
})
