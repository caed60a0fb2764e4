import type { SimHub } from './hub-control.js'
import { streamFor } from './random.js'

/**
 * The simulator's workload, through the hub's API while the fleet runs: a
 * job to the whole fleet every `jobEveryMs`, a ping to one device picked by
 * the seed every `commandEveryMs`. Nothing is sent while the hub is down.
 * What it did is counted for the accounting.
 */

export interface WorkloadOptions {
  readonly hub: SimHub
  readonly seed: number
  /** The fleet's group (a job targets all of it) and its device ids (a command goes to one). */
  readonly group: string
  readonly deviceIds: readonly string[]
  readonly jobEveryMs: number
  readonly commandEveryMs: number
  /** True while chaos has the hub down. */
  readonly hubDown: () => boolean
}

export interface WorkloadResults {
  readonly jobIds: Array<{ id: string; createdAt: number }>
  readonly commandOutcomes: Record<string, number>
  readonly roundTrips: number[]
  commandsSent: number
}

/** Waits `ms` (a turn of the event loop at least), or less if `signal` fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, Math.max(0, ms))
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

export function startWorkload(o: WorkloadOptions): { readonly results: WorkloadResults; stop(): void; readonly done: Promise<unknown> } {
  const results: WorkloadResults = { jobIds: [], commandOutcomes: {}, roundTrips: [], commandsSent: 0 }
  const pick = streamFor(o.seed, 'workload')
  let on = true
  // Ends the workload's waits at once when the run ends (or is stopped).
  const stopping = new AbortController()
  const loops: Array<Promise<void>> = []
  if (o.jobEveryMs > 0) {
    loops.push((async () => {
      for (let n = 1; on; n++) {
        await sleep(o.jobEveryMs, stopping.signal)
        if (!on) break
        if (o.hubDown()) continue
        const r = await o.hub.api<{ id: string; createdAt: number }>('POST', '/api/jobs', { name: 'echo', target: `group:${o.group}`, payload: { n }, timeout: '30s' })
        if (r.status === 201) results.jobIds.push({ id: r.body.id, createdAt: r.body.createdAt })
      }
    })())
  }
  if (o.commandEveryMs > 0) {
    loops.push((async () => {
      while (on) {
        await sleep(o.commandEveryMs, stopping.signal)
        if (!on || o.hubDown()) continue
        const id = o.deviceIds[Math.floor(pick() * o.deviceIds.length)]!
        results.commandsSent++
        const r = await o.hub.api<{ ok?: boolean; durationMs?: number; error?: { code: string } }>('POST', `/api/devices/${id}/commands`, { name: 'ping', timeout: '2s' })
        const outcome = r.status === 200 ? (r.body.ok ? 'succeeded' : 'failed') : r.body.error?.code ?? `HTTP_${r.status}`
        results.commandOutcomes[outcome] = (results.commandOutcomes[outcome] ?? 0) + 1
        if (r.status === 200 && r.body.ok && r.body.durationMs !== undefined) results.roundTrips.push(r.body.durationMs)
      }
    })())
  }
  return {
    results,
    stop(): void {
      on = false
      stopping.abort()
    },
    done: Promise.allSettled(loops),
  }
}
