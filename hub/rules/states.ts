import type { Writer } from '../storage/group-commit.js'
import { IDLE, type ConditionState } from './machine.js'
import type { StoredState } from './store.js'

/**
 * The condition states of (rule, device) pairs in memory, in three layers:
 *
 *   committed   what the database holds (loaded at start)
 *   group       what the group commit under way changed: evaluations later
 *               in the same group read it; its commit makes it committed, a
 *               failed commit (onCommitFailed) drops it
 *   pass        what one batch's evaluation changed: it joins the group only
 *               once its writes are in (rules.ts, evaluate)
 *
 * An operation rolled back alone leaves the group layer as it is: a rule's
 * evaluation is the last step of its operation and has a savepoint of its
 * own. The firings of the group are counted here too, for the rate limit.
 * Kept by device, then rule: one batch is one device.
 */

export interface Entry { readonly state: ConditionState; readonly lastFiredAt: number | null }

/** A pair with no state yet: idle, never acted. */
export const NEVER: Entry = { state: IDLE, lastFiredAt: null }

export class RuleStates {
  private committed = new Map<string, Map<number, Entry>>()
  private group = new Map<string, Map<number, Entry>>()
  private groupFired = new Map<number, number>()

  constructor(writer: Writer) {
    // At the transaction's end, not its fsync: the next group may be written meanwhile and reads these.
    writer.onWritten(() => {
      for (const [deviceId, byRule] of this.group) {
        const committed = this.committed.get(deviceId)
        if (committed) for (const [ruleId, e] of byRule) committed.set(ruleId, e)
        else this.committed.set(deviceId, byRule)
      }
      this.group = new Map()
      this.groupFired = new Map()
    })
    writer.onCommitFailed(() => {
      this.group = new Map()
      this.groupFired = new Map()
    })
  }

  load(rows: readonly StoredState[]): void {
    this.committed = new Map()
    for (const s of rows) {
      let byRule = this.committed.get(s.deviceId)
      if (!byRule) this.committed.set(s.deviceId, byRule = new Map<number, Entry>())
      byRule.set(s.ruleId, { state: s.state, lastFiredAt: s.lastFiredAt })
    }
  }

  /** A device's states as a pass reads them: its own changes first, then the group's, then the committed ones. */
  reader(deviceId: string): (pass: ReadonlyMap<number, Entry>, ruleId: number) => Entry {
    const group = this.group.get(deviceId)
    const committed = this.committed.get(deviceId)
    return (pass, ruleId) => pass.get(ruleId) ?? group?.get(ruleId) ?? committed?.get(ruleId) ?? NEVER
  }

  /** A pass's writes are in: its changes and firings join the group commit's. */
  join(deviceId: string, changes: ReadonlyMap<number, Entry>, fired: ReadonlyMap<number, number>): void {
    if (changes.size > 0) {
      let byRule = this.group.get(deviceId)
      if (!byRule) this.group.set(deviceId, byRule = new Map<number, Entry>())
      for (const [ruleId, e] of changes) byRule.set(ruleId, e)
    }
    for (const [ruleId, n] of fired) this.groupFired.set(ruleId, (this.groupFired.get(ruleId) ?? 0) + n)
  }

  /** Firings of the rule in the group commit under way (not in its minute window yet). */
  firedInGroup(ruleId: number): number {
    return this.groupFired.get(ruleId) ?? 0
  }

  /** Calls `visit` with each device's state for the rule, as a pass would read it (the group's over the committed). */
  each(ruleId: number, visit: (deviceId: string, e: Entry) => void): void {
    for (const [deviceId, byRule] of this.group) {
      const e = byRule.get(ruleId)
      if (e) visit(deviceId, e)
    }
    for (const [deviceId, byRule] of this.committed) {
      const e = byRule.get(ruleId)
      if (e && !this.group.get(deviceId)?.has(ruleId)) visit(deviceId, e)
    }
  }

  /** A removed device: its states go, with the rules' memory of it. */
  forgetDevice(deviceId: string): void {
    this.committed.delete(deviceId)
    this.group.delete(deviceId)
  }

  /** A removed rule: its states go. */
  forget(ruleId: number): void {
    for (const byRule of this.committed.values()) byRule.delete(ruleId)
  }
}
