import type { Clock, ClockTimer } from '../../common/clock.js'
import type { RollcallError } from '../../common/errors.js'
import type { CommandOutcome } from './commands.js'
import type { NewCommand } from './store.js'

/**
 * The commands this hub process has sent and not yet settled, in memory: by
 * id, for the device's reply and the deadline, and by device, so that a
 * connection ending ends that device's commands at once. Taking a command
 * out stops its deadline, and only what is still in here can be settled, so
 * each command ends once, by whichever of its reply, its deadline, its
 * device's disconnect or the hub stopping comes first. The record
 * (store.ts) is what outlives the process; this is who is still waiting.
 */

/**
 * A sent command's end as soon as it is known, and the commit of its record:
 * a single command's caller waits for both; a group's next member goes out
 * at once, its record shares the commit of the one before (the group's
 * caller waits for every member's record).
 */
export interface Dispatched {
  readonly outcome: CommandOutcome
  /** Resolves once the outcome is committed, with the error for the caller if it could not be (never rejects). */
  readonly recorded: Promise<RollcallError | undefined>
}

export interface Pending {
  readonly rec: NewCommand
  readonly deviceId: string
  /** When it was published (until then, when it was made): its durationMs counts from here. */
  startedAt: number
  /** Its deadline, on the injected clock. */
  readonly timer: ClockTimer
  readonly resolve: (d: Dispatched) => void
  readonly reject: (err: RollcallError) => void
}

export function createInFlight(clock: Clock) {
  const byId = new Map<string, Pending>()
  /** Pending command ids per device, so a disconnect ends them at once. */
  const byDevice = new Map<string, Set<string>>()

  return {
    add(p: Pending): void {
      byId.set(p.rec.id, p)
      let ids = byDevice.get(p.deviceId)
      if (!ids) byDevice.set(p.deviceId, ids = new Set())
      ids.add(p.rec.id)
    },
    get: (id: string): Pending | undefined => byId.get(id),
    /** Takes a command out of the in-flight maps (and stops its deadline); undefined when it is not in flight. */
    take(id: string): Pending | undefined {
      const p = byId.get(id)
      if (!p) return undefined
      byId.delete(id)
      clock.clearTimer(p.timer)
      const ids = byDevice.get(p.deviceId)
      ids?.delete(id)
      if (ids?.size === 0) byDevice.delete(p.deviceId)
      return p
    },
    /** The ids of a device's commands in flight now (a copy: settling them does not disturb it). */
    idsOf: (deviceId: string): string[] => [...(byDevice.get(deviceId) ?? [])],
    /** Every command in flight now (a copy). */
    all: (): Pending[] => [...byId.values()],
    get size(): number {
      return byId.size
    },
  }
}

export type InFlight = ReturnType<typeof createInFlight>
