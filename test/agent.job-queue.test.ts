import { afterEach, describe, expect, it } from 'vitest'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { JobQueue, type JobInput } from '../agent/job-queue.js'
import { LOCAL_INTERRUPTED_MESSAGE, type LocalOutcome } from '../agent/job-outcome.js'
import { Ledger, LEDGER_FILE } from '../agent/ledger.js'
import { LIMITS } from '../protocol/limits.js'
import { removeDir, tempDir } from './agent.support.js'

/** The job queue's ledger semantics, on real SQLite files. */

const dirs: string[] = []
const ledgers: Ledger[] = []

afterEach(() => {
  for (const l of ledgers.splice(0)) l.close()
  for (const d of dirs.splice(0)) removeDir(d)
})

function open(dir?: string, capacity = 100, local?: LocalOutcome[]): { dir: string; ledger: Ledger; queue: JobQueue } {
  const d = dir ?? tempDir()
  if (!dir) dirs.push(d)
  const ledger = new Ledger({ dataDir: d })
  ledgers.push(ledger)
  const queue = new JobQueue(ledger, { capacity, ...(local ? { onLocalOutcome: (o) => { local.push(...o) } } : {}) })
  return { dir: d, ledger, queue }
}

function exec(n: number, over: Partial<JobInput> = {}): JobInput {
  return { execId: `jjob${n}.dev-1`, jobId: `jjob${n}`, name: 'echo', payload: { n }, attempt: 1, version: 1, timeoutMs: 1000, priority: 0, ...over }
}

function rows(ledger: Ledger): Array<{ exec_id: string; attempt: number; state: string; outcome: string | null }> {
  return ledger.db.prepare('SELECT exec_id, attempt, state, outcome FROM jobs ORDER BY rowid').all() as never
}

function updates(queue: JobQueue): Array<Record<string, unknown>> {
  return queue.readUpdatesAfter(0, 1000).map((r) => ({ id: r.id, ...(JSON.parse(r.body) as Record<string, unknown>) }))
}

describe('job queue', () => {
  it('enqueue is idempotent per (execId, attempt), also for done rows', () => {
    const { queue } = open()
    expect(queue.enqueue([exec(1), exec(2)], 1000)).toBe(2)
    expect(queue.enqueue([exec(1), exec(2), exec(3)], 1001)).toBe(1)
    const claimed = queue.claim(10, 1002)
    expect(claimed.map((c) => c.execId)).toEqual(['jjob1.dev-1', 'jjob2.dev-1', 'jjob3.dev-1'])
    queue.complete(claimed.map((c) => ({ execId: c.execId, attempt: c.attempt, outcome: 'succeeded' as const })), 1003)
    // Re-delivered after it ran: never run twice.
    expect(queue.enqueue([exec(1)], 1004)).toBe(0)
    expect(queue.claim(10, 1005)).toEqual([])
    expect(queue.stats()).toMatchObject({ queued: 0, running: 0, done: 3 })
  })

  it('claims by priority, then arrival, up to max, and counts room', () => {
    const { queue } = open(undefined, 5)
    queue.enqueue([exec(1), exec(2, { priority: 5 }), exec(3), exec(4, { priority: 5 }), exec(5, { priority: -1 })], 1000)
    expect(queue.room()).toBe(0)
    const first = queue.claim(3, 1001)
    expect(first.map((c) => c.execId)).toEqual(['jjob2.dev-1', 'jjob4.dev-1', 'jjob1.dev-1'])
    expect(first[0]).toMatchObject({ payload: { n: 2 }, source: 'hub', startedAt: 1001, timeoutMs: 1000, version: 1 })
    expect(queue.stats()).toMatchObject({ queued: 2, running: 3 })
    expect(queue.room()).toBe(0)
    queue.complete([{ execId: 'jjob2.dev-1', attempt: 1, outcome: 'succeeded' }], 1002)
    expect(queue.room()).toBe(1)
    expect(queue.claim(5, 1003).map((c) => c.execId)).toEqual(['jjob3.dev-1', 'jjob5.dev-1'])
  })

  it('writes in_progress on claim, replaces it by the terminal update when unsent, and acks by id', () => {
    const { queue } = open()
    queue.enqueue([exec(1, { version: 7 }), exec(2, { version: 3 })], 1000)
    queue.claim(2, 1001)
    expect(updates(queue)).toEqual([
      { id: 1, execId: 'jjob1.dev-1', attempt: 1, version: 7, status: 'in_progress', startedAt: 1001 },
      { id: 2, execId: 'jjob2.dev-1', attempt: 1, version: 3, status: 'in_progress', startedAt: 1001 },
    ])
    // The hub acked job 1's in_progress; job 2's was never sent.
    expect(queue.ackUpdates([1])).toBe(1)
    queue.complete([
      { execId: 'jjob1.dev-1', attempt: 1, outcome: 'succeeded', result: { ok: true } },
      { execId: 'jjob2.dev-1', attempt: 1, outcome: 'failed', error: { code: 'lower case', message: 'x'.repeat(5000) } },
    ], 1005)
    const u = updates(queue)
    expect(u).toEqual([
      { id: 3, execId: 'jjob1.dev-1', attempt: 1, version: 7, status: 'succeeded', startedAt: 1001, finishedAt: 1005, result: { ok: true } },
      { id: 4, execId: 'jjob2.dev-1', attempt: 1, version: 3, status: 'failed', startedAt: 1001, finishedAt: 1005, error: { code: 'HANDLER_FAILED', message: 'x'.repeat(LIMITS.maxJobErrorChars) } },
    ])
    expect(queue.stats().updatesPending).toBe(2)
    expect(queue.ackUpdates([3, 4, 99])).toBe(2)
    expect(queue.stats()).toMatchObject({ updatesPending: 0, done: 2, outcomes: { succeeded: 1, failed: 1 } })
    // Ids are never reused, even after the table emptied.
    queue.enqueue([exec(3)], 1006)
    queue.claim(1, 1007)
    expect(queue.readUpdatesAfter(0, 10).map((r) => r.id)).toEqual([5])
  })

  it('replaces a result over the size limit by a note, and a non-JSON result fails the job', () => {
    const { queue } = open()
    queue.enqueue([exec(1), exec(2)], 1000)
    queue.claim(2, 1001)
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    queue.complete([
      { execId: 'jjob1.dev-1', attempt: 1, outcome: 'succeeded', result: 'y'.repeat(LIMITS.maxJobResultBytes + 10) },
      { execId: 'jjob2.dev-1', attempt: 1, outcome: 'succeeded', result: cyclic },
    ], 1002)
    const [a, b] = updates(queue)
    expect(a).toMatchObject({ status: 'succeeded', result: { truncated: true, bytes: LIMITS.maxJobResultBytes + 12 } })
    expect(b).toMatchObject({ status: 'failed', error: { code: 'BAD_RESULT' } })
  })

  it('fails a job whose result nests past the limit the hub accepts (M19b)', () => {
    const { queue } = open()
    queue.enqueue([exec(1), exec(2)], 1000)
    queue.claim(2, 1001)
    let deep: unknown = {}
    for (let i = 0; i < LIMITS.maxJsonDepth; i++) deep = { d: deep }
    queue.complete([
      { execId: 'jjob1.dev-1', attempt: 1, outcome: 'succeeded', result: deep },
      { execId: 'jjob2.dev-1', attempt: 1, outcome: 'succeeded', result: (deep as { d: unknown }).d },
    ], 1002)
    const [a, b] = updates(queue)
    expect(a).toMatchObject({ status: 'failed', error: { code: 'BAD_RESULT', message: expect.stringContaining(`${LIMITS.maxJsonDepth} levels`) as unknown } })
    expect(b).toMatchObject({ status: 'succeeded' })
  })

  it('does not run an expired attempt: it ends expired with an expired update', () => {
    const { queue } = open()
    queue.enqueue([exec(1, { expiresAt: 1500 }), exec(2, { expiresAt: 5000 }), exec(3)], 1000)
    const claimed = queue.claim(2, 2000)
    // The expired one does not take a slot.
    expect(claimed.map((c) => c.execId)).toEqual(['jjob2.dev-1', 'jjob3.dev-1'])
    expect(updates(queue)[0]).toEqual({ id: 1, execId: 'jjob1.dev-1', attempt: 1, version: 1, status: 'expired', finishedAt: 2000 })
    expect(queue.stats()).toMatchObject({ queued: 0, running: 2, done: 1, outcomes: { expired: 1 } })
  })

  it('a newer attempt supersedes a queued older one, and waits while an older one runs', () => {
    const { ledger, queue } = open()
    queue.enqueue([exec(1)], 1000)
    queue.enqueue([exec(1, { attempt: 2, version: 2 })], 1001)
    expect(rows(ledger)).toEqual([
      { exec_id: 'jjob1.dev-1', attempt: 1, state: 'done', outcome: 'canceled' },
      { exec_id: 'jjob1.dev-1', attempt: 2, state: 'queued', outcome: null },
    ])
    expect(updates(queue)).toEqual([])
    const [a2] = queue.claim(5, 1002)
    expect(a2).toMatchObject({ attempt: 2 })

    queue.enqueue([exec(9)], 1003)
    expect(queue.claim(1, 1004).map((c) => c.execId)).toEqual(['jjob9.dev-1'])
    queue.enqueue([exec(9, { attempt: 2, version: 2 })], 1005)
    // Attempt 1 still runs: attempt 2 is not claimed yet.
    expect(queue.claim(5, 1006)).toEqual([])
    queue.complete([{ execId: 'jjob9.dev-1', attempt: 1, outcome: 'failed', error: { code: 'BOOM', message: 'boom' } }], 1007)
    expect(queue.claim(5, 1008).map((c) => [c.execId, c.attempt])).toEqual([['jjob9.dev-1', 2]])
    expect(queue.stats()).toMatchObject({ queued: 0, running: 2 })
  })

  it('cancel drops queued attempts without an update and reports running ones', () => {
    const { queue } = open()
    queue.enqueue([exec(1), exec(2), exec(3)], 1000)
    queue.claim(1, 1001)
    const before = queue.stats().updatesPending
    const running = queue.cancel([{ execId: 'jjob1.dev-1', attempt: 1 }, { execId: 'jjob2.dev-1', attempt: 1 }, { execId: 'jjob7.dev-1', attempt: 1 }], 1002)
    expect(running).toEqual([{ execId: 'jjob1.dev-1', attempt: 1 }])
    expect(queue.stats()).toMatchObject({ queued: 1, running: 1, updatesPending: before })
    // The runner then completes the running one as canceled: its unsent in_progress goes, and no update replaces it.
    queue.complete([{ execId: 'jjob1.dev-1', attempt: 1, outcome: 'canceled' }], 1003)
    expect(updates(queue)).toEqual([])
    expect(queue.claim(5, 1004).map((c) => c.execId)).toEqual(['jjob3.dev-1'])
    expect(queue.stats().outcomes.canceled).toBe(2)
  })

  it('reports jobs left running by a crash as failed/INTERRUPTED after reopening, without running them again', () => {
    const local: LocalOutcome[] = []
    const a = open(undefined, 100, local)
    a.queue.enqueue([exec(1, { version: 4 }), exec(2)], 1000)
    a.queue.enqueue([exec(0, { execId: 'local:tick:1000', jobId: 'tick', name: 'echo' })], 1000, 'local')
    a.queue.claim(2, 1001)
    a.queue.claim(1, 1001)
    a.ledger.close()

    const b = open(a.dir, 100, local)
    expect(b.queue.stats()).toMatchObject({ queued: 0, running: 0, done: 0 })
    expect(b.queue.recoverInterrupted(2000)).toBe(3)
    expect(b.queue.claim(10, 2001)).toEqual([])
    const failed = updates(b.queue).filter((u) => u.status === 'failed')
    expect(failed).toHaveLength(2)
    expect(failed[0]).toMatchObject({ execId: 'jjob1.dev-1', version: 4, startedAt: 1001, finishedAt: 2000, error: { code: 'INTERRUPTED' } })
    expect((failed[0]!.error as { message: string }).message).toMatch(/hub retries/)
    expect(local).toEqual([expect.objectContaining({ execId: 'local:tick:1000', schedule: 'tick', outcome: 'failed', error: expect.objectContaining({ code: 'INTERRUPTED' }) as unknown })])
    // Nothing retries a local job: its event must not promise it.
    expect(local[0]!.error!.message).toBe(LOCAL_INTERRUPTED_MESSAGE)
    expect(local[0]!.error!.message).not.toMatch(/hub retries/)
    expect(b.queue.stats()).toMatchObject({ done: 3, running: 0 })
    // A second recovery finds nothing.
    expect(b.queue.recoverInterrupted(2001)).toBe(0)
  })

  it('keeps counts in memory that match the file, across reopen', () => {
    const a = open()
    a.queue.enqueue(Array.from({ length: 20 }, (_, i) => exec(i + 1)), 1000)
    const c = a.queue.claim(8, 1001)
    a.queue.complete(c.slice(0, 5).map((j) => ({ execId: j.execId, attempt: j.attempt, outcome: 'succeeded' as const })), 1002)
    const stats = a.queue.stats()
    expect(stats).toMatchObject({ queued: 12, running: 3, done: 5, updatesPending: 8 })
    a.ledger.close()
    const db = new Database(join(a.dir, LEDGER_FILE), { readonly: true })
    const byState = Object.fromEntries((db.prepare('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all() as Array<{ state: string; n: number }>).map((r) => [r.state, r.n]))
    expect(byState).toEqual({ queued: 12, running: 3, done: 5 })
    db.close()
    const b = open(a.dir)
    expect(b.queue.stats()).toMatchObject({ queued: 12, running: 0, done: 5, updatesPending: 8 })
  })

  it('local jobs write no updates; their outcome goes to onLocalOutcome in the same transaction', () => {
    const local: LocalOutcome[] = []
    const { queue } = open(undefined, 100, local)
    const job = { execId: 'local:hourly:60000', jobId: 'hourly', name: 'echo', payload: { a: 1 }, attempt: 1, version: 1, timeoutMs: 1000, priority: 0 }
    expect(queue.enqueue([job], 1000, 'local')).toBe(1)
    expect(queue.enqueue([job], 1000, 'local')).toBe(0)
    const [c] = queue.claim(1, 1001)
    expect(c).toMatchObject({ source: 'local', payload: { a: 1 } })
    queue.complete([{ execId: job.execId, attempt: 1, outcome: 'succeeded', result: { a: 1 } }], 1002)
    expect(updates(queue)).toEqual([])
    expect(local).toEqual([{ execId: job.execId, schedule: 'hourly', task: 'echo', outcome: 'succeeded', result: { a: 1 }, error: undefined, startedAt: 1001, finishedAt: 1002 }])
  })

  it('prunes done rows once their updates are acked and they are old enough', () => {
    const { ledger, queue } = open()
    queue.enqueue([exec(1), exec(2)], 1000)
    const c = queue.claim(2, 1000)
    queue.complete(c.map((j) => ({ execId: j.execId, attempt: j.attempt, outcome: 'succeeded' as const })), 1000)
    const day = 86_400_000
    expect(queue.prune(1000 + day + 1)).toBe(0) // updates not acked yet
    const first = queue.readUpdatesAfter(0, 10).find((u) => u.execId === 'jjob1.dev-1')!
    queue.ackUpdates([first.id])
    expect(queue.prune(1000 + day - 1)).toBe(0) // not old enough
    expect(queue.prune(1000 + day + 1)).toBe(1)
    expect(rows(ledger).map((r) => r.exec_id)).toEqual(['jjob2.dev-1'])
    expect(queue.stats().done).toBe(1)
  })
})
