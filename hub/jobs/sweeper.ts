import type { ClockTimer } from '../../common/clock.js'
import type { OutcomeCode } from '../../protocol/outcome-codes.js'
import { lapsedTo } from './decisions.js'
import type { JobRow } from './store.js'
import { tx, type Step } from './tx.js'
import { count, type FailedForGood, type JobsContext, type StepEnv, type Tally } from './context.js'
import type { Endings } from './endings.js'
import type { Dispatch } from './dispatch.js'

/**
 * The sweeper, every jobSweepIntervalMs: in-progress executions whose lease
 * lapsed become timed_out (and are retried), executions not started by their
 * job's expiresAt become expired, retries whose wait ended ring their device,
 * and paced rollouts ring the next devices.
 */

const MAX_SWEEP_ROWS = 1000

/**
 * The job transaction of one sweep at `now`: what lapsed or expired ends,
 * the jobs it touched end too if nothing is left; returns what the commit
 * must do, and the devices whose retry wait ended since `since`.
 */
export function* sweepStep({ options }: Pick<StepEnv, 'options'>, endings: Endings, now: number, since: number): Step<{ tally: Tally; failed: FailedForGood[]; notify: string[]; becameDue: string[]; paced: JobRow[] }> {
  const touched = new Set<string>()
  const jobs = new Map<string, JobRow | undefined>()
  const interrupt: string[] = []
  const tally: Tally = {}
  const failed: FailedForGood[] = []
  for (const r of yield* tx.lapsed(now, MAX_SWEEP_ROWS)) {
    const to = lapsedTo(r.state)
    if (!jobs.has(r.job_id)) jobs.set(r.job_id, yield* tx.getJob(r.job_id))
    const job = jobs.get(r.job_id)
    if (!to || !job) continue
    if (to === 'timed_out') {
      count(tally, 'timedOut')
      // The device may still be running it: tell it to stop before a retry starts there.
      yield* endings.finish(tally, r, job, 'timed_out', now, 'sweeper', `no result within the timeout (${job.timeout_ms} ms) plus ${options.leaseGraceMs} ms grace`, {
        leaseUntil: null, finishedAt: now, cancelAttempt: r.attempt, errorCode: 'TIMEOUT' satisfies OutcomeCode, errorMessage: 'the device did not report a result in time',
      }, failed)
      interrupt.push(r.device_id)
    } else {
      count(tally, 'expired')
      yield* tx.transition(r, 'expired', now, 'sweeper', 'not started by the job\'s expiresAt', { leaseUntil: null, finishedAt: now })
    }
    touched.add(r.job_id)
  }
  for (const r of yield* tx.expiredUndelivered(now, MAX_SWEEP_ROWS)) {
    count(tally, 'expired')
    yield* tx.transition(r, 'expired', now, 'sweeper', 'not started by the job\'s expiresAt', { leaseUntil: null, finishedAt: now })
    touched.add(r.job_id)
  }
  const notify: string[] = [...interrupt]
  // In job order: two hubs ending executions of the same jobs lock them in the same order.
  for (const j of [...touched].sort()) notify.push(...(yield* endings.afterFinal(j, now, tally)))
  const becameDue = yield* tx.becameDue(since, now)
  const paced = yield* tx.activePaced()
  return { tally, failed, notify, becameDue, paced }
}

export function createSweeper(ctx: JobsContext, endings: Endings, dispatch: Dispatch) {
  const { ring, reachable } = ctx
  const { clock } = ctx.deps
  let timer: ClockTimer | undefined
  let lastSweep = clock.now()

  function sweep(): void {
    // The time of the sweep is when its transaction starts (a queued one waits for its group).
    let now = 0
    ctx.backend.enqueue(() => {
      now = clock.now()
      return sweepStep(ctx, endings, now, lastSweep)
    }, {
      inside: ({ failed }) => ctx.reactToFailures(failed),
      after: ({ tally, notify, becameDue, paced }) => {
        ctx.book(tally)
        lastSweep = now
        for (const d of becameDue) if (reachable(d)) ring(d)
        for (const job of paced) void dispatch.ringPaced(job, now)
        // A job no longer paced and active has no turn to keep.
        dispatch.keepRinging(paced)
        if (notify.length > 0) dispatch.sendCancels([...new Set(notify)])
      },
      weight: 10,
      // One sweep at a time (PostgreSQL runs transactions side by side): each starts from the last one's time.
      key: 'sweep',
    })
  }

  return {
    sweep,
    start: (): void => {
      // On the injected clock: a test with a manual clock sweeps by advancing it.
      timer ??= clock.setInterval(sweep, ctx.options.sweepIntervalMs).unref()
    },
    stop: (): void => {
      clock.clearTimer(timer)
      timer = undefined
    },
  }
}
