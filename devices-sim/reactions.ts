import type { CommandHandler } from '../agent/command-handlers.js'
import { quantiles } from './accounting.js'
import type { SimHub } from './hub-control.js'
import type { AnomalyBurst, VibrationModel } from './models.js'
import type { Quantiles } from './sim.js'

/**
 * The reactions scenario (issue #17): the hub reacting to what the fleet
 * reports. Before the agents connect, the simulator adds a rule through the
 * hub's API, as a user would: a vibration burst (`vib.rms` above 0.08 g,
 * over when under 0.06 g) sends `sensors.sample` to the device that burst
 * and makes a job for the fleet's group. The thresholds sit between the
 * vibration model's baseline (at most 0.052 g) and its bursts (at least
 * 0.105 g), so each burst fires the rule once.
 *
 * Timing a reaction end to end needs the moment the command reached the
 * device and the sample that caused it. The command on the wire carries
 * only its id (protocol/messages.ts, cmd.req); its cause is in the hub's
 * record. So each simulated device notes when its agent ran a
 * `sensors.sample` (the agent records a command in its ledger, then runs
 * it), and the accounting asks the hub, per device, for the commands the
 * rule made (GET /api/devices/:id/commands, each with its cause), and for
 * each one's firing (GET /api/firings/:id: the trigger sample's ts and the
 * firing time). No wire or agent change is needed for it.
 *
 *   sample taken (trigger ts) -> rule fired (firing at) -> command at the device (noted here)
 *
 * All three are read on this machine's clock: the trigger's ts is the
 * agent's estimate of the hub's time, which on loopback is within a
 * fraction of a millisecond of it.
 */

export interface ReactionScenario {
  /** On average one vibration burst per device per this many readings; the models' default is 500. */
  readonly burstsEveryTicks: number
}

/** With `--scenario reactions` and no --bursts-every: a burst a minute per device at 1 reading a second. */
export const DEFAULT_BURSTS_EVERY_TICKS = 60

export interface ReactionsReport {
  readonly rule: string
  /** Bursts the devices' vibration models produced in what was read, those that touch counted as one. */
  readonly bursts: number
  readonly fired: number
  /** Firings held back by the rule's limits (stale, cooldown, rate, paused). */
  readonly suppressed: number
  /** The rule's `sensors.sample` commands that reached their device. */
  readonly delivered: number
  /** Those that did not, by how their record ended (e.g. offline). */
  readonly notDelivered: Readonly<Record<string, number>>
  /** Jobs the rule made for the group. */
  readonly jobs: number
  readonly sampledToFiredMs: Quantiles
  readonly firedToDeliveredMs: Quantiles
  readonly sampledToDeliveredMs: Quantiles
}

/** The rule the scenario adds; pure, for the docs and tests. */
export function reactionRule(name: string, group: string): Record<string, unknown> {
  return {
    name,
    for: `group:${group}`,
    when: { telemetry: { sensor: 'vib.rms', op: '>', value: 0.08, clear: { op: '<', value: 0.06 } } },
    then: [
      { command: { name: 'sensors.sample', timeoutMs: 5000 } },
      { job: { name: 'echo', to: `group:${group}`, payload: { reaction: 'vibration burst' } } },
    ],
  }
}

/**
 * Bursts a model produced in its first `ticks` readings, as the rule sees
 * them: two that touch or overlap leave no reading under the clear between
 * them, so they fire once. Pure.
 */
export function countBursts(bursts: readonly AnomalyBurst[]): number {
  let count = 0
  let end = -1
  for (const b of bursts) {
    if (b.startTick > end) count++
    end = Math.max(end, b.startTick + b.ticks)
  }
  return count
}

interface CommandRecordView { readonly id: string; readonly status: string; readonly cause: { readonly rule: string; readonly firing: string } | null }
interface FiringChainView {
  readonly at: number
  readonly trigger: { readonly ts: number }
  readonly actions: ReadonlyArray<{ readonly kind: string; readonly job?: { readonly id: string; readonly createdAt: number } }>
}
interface RuleCountersView { readonly fired: number; readonly suppressedStale: number; readonly suppressedCooldown: number; readonly suppressedRate: number; readonly suppressedPaused: number }

export interface Reactions {
  readonly rule: string
  /** The `sensors.sample` handler of one simulated device: notes when it ran, then samples as the built-in does. */
  sensorsSample(sampleNow: () => number): CommandHandler
  /** The hub's rule actions not carried out yet, and this rule's jobs still open: the drain waits for both. */
  unfinished(): Promise<number>
  /** The reactions, and the jobs the rule made (for the jobs' accounting). */
  account(devices: ReadonlyArray<{ readonly id: string; readonly vibration: VibrationModel | undefined }>): Promise<{ report: ReactionsReport; jobIds: Array<{ id: string; createdAt: number }> }>
}

/** Adds the scenario's rule on the hub (refused: an error that says why) and returns its bookkeeping. */
export async function startReactions(hub: SimHub, prefix: string, group: string): Promise<Reactions> {
  const rule = `${prefix}.vibration-burst`
  // A rule of the same name from an earlier run against this hub would not be this run's.
  await hub.api('DELETE', `/api/rules/${rule}`)
  const r = await hub.api<{ error?: { message: string } }>('POST', '/api/rules', reactionRule(rule, group))
  if (r.status !== 201) throw new Error(`adding the reactions scenario's rule failed: ${r.status} ${r.body.error?.message ?? JSON.stringify(r.body)}`)
  /** Command id -> when a device's agent ran it (ms, this machine's clock). */
  const arrivals = new Map<string, number>()

  return {
    rule,
    sensorsSample: (sampleNow) => (ctx) => {
      arrivals.set(ctx.id, Date.now())
      return { stored: sampleNow() }
    },
    async unfinished() {
      // The hub's count is of every rule's actions: on a hub of yours, another rule's (a webhook retrying) is waited for too; each ends in bounded time.
      const s = await hub.api<{ rules?: { actions: { pending: number; running: number } } }>('GET', '/api/stats')
      const actions = s.body.rules ? s.body.rules.actions.pending + s.body.rules.actions.running : 0
      const j = await hub.api<{ jobs?: Array<{ cause: { rule: string } | null }> }>('GET', '/api/jobs?status=active&limit=1000')
      return actions + (j.body.jobs ?? []).filter((x) => x.cause?.rule === rule).length
    },
    async account(devices) {
      const c = await hub.api<{ counters: RuleCountersView }>('GET', `/api/rules/${rule}`)
      const k = c.body.counters
      let bursts = 0
      let delivered = 0
      const notDelivered: Record<string, number> = {}
      const toFired: number[] = [], toDelivered: number[] = [], firedToDelivered: number[] = []
      const jobIds: Array<{ id: string; createdAt: number }> = []
      for (const d of devices) {
        if (d.vibration) bursts += countBursts(d.vibration.anomalies(0, d.vibration.nextTick))
        // A device's last 1000 commands: the scenario's runs make far fewer per device.
        const list = await hub.api<{ commands?: CommandRecordView[] }>('GET', `/api/devices/${d.id}/commands?limit=1000`)
        for (const cmd of list.body.commands ?? []) {
          if (cmd.cause?.rule !== rule) continue
          const f = await hub.api<FiringChainView>('GET', `/api/firings/${cmd.cause.firing}`)
          if (f.status !== 200) continue
          toFired.push(f.body.at - f.body.trigger.ts)
          for (const a of f.body.actions) if (a.job) jobIds.push({ id: a.job.id, createdAt: a.job.createdAt })
          const at = arrivals.get(cmd.id)
          if (at === undefined) {
            notDelivered[cmd.status] = (notDelivered[cmd.status] ?? 0) + 1
            continue
          }
          delivered++
          toDelivered.push(at - f.body.trigger.ts)
          firedToDelivered.push(at - f.body.at)
        }
      }
      return {
        jobIds,
        report: {
          rule, bursts, fired: k.fired, suppressed: k.suppressedStale + k.suppressedCooldown + k.suppressedRate + k.suppressedPaused,
          delivered, notDelivered, jobs: jobIds.length,
          sampledToFiredMs: quantiles(toFired), firedToDeliveredMs: quantiles(firedToDelivered), sampledToDeliveredMs: quantiles(toDelivered),
        },
      }
    },
  }
}
