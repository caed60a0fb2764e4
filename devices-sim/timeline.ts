import type { ChaosAction } from './chaos.js'
import { linkChanges, type ConnectivityPlan } from './profiles.js'

/**
 * A run's timeline, as data: every device's connect and the outages of its
 * connectivity plan, and the chaos schedule, in time order. Pure, so the
 * order of a run is known before it starts (and tested without one);
 * sim.ts carries each step out when its time comes.
 */

export type SimStep =
  | { readonly atMs: number; readonly kind: 'connect' | 'down' | 'up'; readonly deviceId: string }
  | { readonly atMs: number; readonly kind: 'chaos'; readonly action: ChaosAction }

/** Steps at the same time keep this order: the devices' own changes in fleet order, then the chaos schedule's. */
export function simTimeline(devices: ReadonlyArray<{ readonly id: string; readonly plan: ConnectivityPlan }>, schedule: readonly ChaosAction[]): SimStep[] {
  const steps: SimStep[] = []
  for (const d of devices) {
    for (const c of linkChanges(d.plan)) steps.push({ atMs: c.atMs, kind: c.change, deviceId: d.id })
  }
  for (const action of schedule) steps.push({ atMs: action.atMs, kind: 'chaos', action })
  // Array.prototype.sort is stable: ties keep the order above.
  return steps.sort((a, b) => a.atMs - b.atMs)
}
