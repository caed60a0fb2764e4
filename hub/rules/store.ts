import type { Db } from '../../common/sqlite.js'
import { deleteInChunks } from '../storage/chunked-delete.js'
import { readJsonColumn } from '../storage/schema.js'
import type { ConditionState } from './machine.js'
import { redactedActions, type Action, type CheckedRule, type RuleSpec } from './spec.js'

/**
 * The rules' tables, and only SQL (migration 8 in storage/schema.ts):
 *
 *   rules          each rule's spec, whether it is enabled, its counters
 *   rule_states    each (rule, device)'s condition state and last firing,
 *                  written only when it changes (a crossing, not a sample)
 *   rule_firings   each firing: what triggered it, when
 *   rule_actions   what each firing must do, one row per action: the
 *                  transactional outbox. A firing and its actions are
 *                  inserted in the transaction that stores the sample which
 *                  fired it; each action's outcome is written when it ends,
 *                  and an action still pending at a start is carried out then.
 *
 * Statements are prepared once; the writes run inside the caller's
 * transaction (the group commit's), never in one of their own.
 */

export const ACTION_STATUSES = ['pending', 'done', 'failed', 'suppressed'] as const
export type ActionStatus = (typeof ACTION_STATUSES)[number]

export interface RuleRow {
  readonly id: number
  readonly rule: CheckedRule
  readonly createdAt: number
  readonly updatedAt: number
  readonly counters: RuleCounters
  /** Set while the circuit breaker holds the rule: until when, and why. */
  readonly paused: { readonly until: number; readonly reason: string } | null
}

export interface RuleCounters {
  readonly fired: number
  readonly suppressedStale: number
  readonly suppressedCooldown: number
  readonly suppressedRate: number
  readonly suppressedPaused: number
  readonly actionsFailed: number
  readonly lastFiredAt: number | null
}

export interface StoredState {
  readonly ruleId: number
  readonly deviceId: string
  readonly state: ConditionState
  readonly lastFiredAt: number | null
}

/** What fired a rule: a sample, or a device event. */
export type Trigger =
  | { readonly kind: 'sample'; readonly storeId: string; readonly seq: number; readonly ts: number; readonly sensor: string; readonly value: number }
  | { readonly kind: 'event'; readonly storeId: string; readonly seq: number; readonly ts: number; readonly event: string; readonly level: string; readonly message: string }
  /** `ts`: when the status changed, or, for a rule with forMs, when it had held long enough; `since`: when it changed. */
  | { readonly kind: 'presence'; readonly ts: number; readonly status: 'offline' | 'online'; readonly reason: string; readonly since: number }
  | { readonly kind: 'job'; readonly ts: number; readonly jobId: string; readonly name: string; readonly outcome: 'failed' | 'timed_out'; readonly attempt: number; readonly error: string | null }

export interface FiringRow {
  readonly id: string
  readonly ruleId: number
  readonly rule: string
  readonly deviceId: string
  readonly at: number
  readonly trigger: Trigger
}

export interface ActionRow {
  readonly firingId: string
  readonly idx: number
  readonly kind: 'command' | 'job' | 'event' | 'webhook'
  /** The action as the rule gave it. */
  readonly spec: unknown
  readonly status: ActionStatus
  readonly attempts: number
  readonly startedAt: number | null
  readonly endedAt: number | null
  readonly outcome: unknown
}

interface RuleSqlRow {
  id: number; name: string; spec: string; enabled: number; created_at: number; updated_at: number
  fired: number; suppressed_stale: number; suppressed_cooldown: number; suppressed_rate: number; suppressed_paused: number; actions_failed: number; last_fired_at: number | null
  paused_until: number | null; paused_reason: string | null
}
interface StateSqlRow { rule_id: number; device_id: string; phase: string; since: number | null; count: number | null; last_fired_at: number | null }
interface FiringSqlRow { id: string; rule_id: number; rule: string; device_id: string; at: number; trigger: string }
interface ActionSqlRow { firing_id: string; idx: number; kind: ActionRow['kind']; spec: string; status: ActionStatus; attempts: number; started_at: number | null; ended_at: number | null; outcome: string | null }

const toRule = (r: RuleSqlRow, parse: (spec: RuleSpec) => CheckedRule): RuleRow => ({
  id: r.id,
  rule: parse({ ...(JSON.parse(r.spec) as RuleSpec), enabled: r.enabled === 1 }),
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  counters: {
    fired: r.fired, suppressedStale: r.suppressed_stale, suppressedCooldown: r.suppressed_cooldown,
    suppressedRate: r.suppressed_rate, suppressedPaused: r.suppressed_paused, actionsFailed: r.actions_failed, lastFiredAt: r.last_fired_at,
  },
  paused: r.paused_until === null ? null : { until: r.paused_until, reason: r.paused_reason ?? '' },
})

function toState(r: StateSqlRow): ConditionState {
  if (r.phase === 'pending') return { phase: 'pending', since: r.since ?? 0, count: r.count ?? 1 }
  if (r.phase === 'active') return { phase: 'active', since: r.since ?? 0 }
  return { phase: 'idle' }
}

const toAction = (r: ActionSqlRow): ActionRow => ({
  firingId: r.firing_id, idx: r.idx, kind: r.kind, spec: JSON.parse(r.spec) as unknown, status: r.status,
  attempts: r.attempts, startedAt: r.started_at, endedAt: r.ended_at, outcome: readJsonColumn(r.outcome),
})

export type CounterName = 'fired' | 'suppressed_stale' | 'suppressed_cooldown' | 'suppressed_rate' | 'suppressed_paused' | 'actions_failed'

export function createRuleStore(db: Db, parse: (spec: RuleSpec) => CheckedRule) {
  const stmts = {
    insert: db.prepare<[string, string, number, number, number]>('INSERT INTO rules (name, spec, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?)'),
    all: db.prepare<[], RuleSqlRow>('SELECT * FROM rules ORDER BY name'),
    byName: db.prepare<[string], RuleSqlRow>('SELECT * FROM rules WHERE name = ?'),
    setEnabled: db.prepare<[number, number, number]>('UPDATE rules SET enabled = ?, updated_at = ? WHERE id = ?'),
    pause: db.prepare<[number | null, string | null, number]>('UPDATE rules SET paused_until = ?, paused_reason = ? WHERE id = ?'),
    remove: db.prepare<[number]>('DELETE FROM rules WHERE id = ?'),
    removeStates: db.prepare<[number]>('DELETE FROM rule_states WHERE rule_id = ?'),
    removeDeviceStates: db.prepare<[string]>('DELETE FROM rule_states WHERE device_id = ?'),
    states: db.prepare<[], StateSqlRow>('SELECT * FROM rule_states'),
    statesOf: db.prepare<[number], StateSqlRow>('SELECT * FROM rule_states WHERE rule_id = ? ORDER BY device_id'),
    // Only for a rule that exists: one removed earlier in the same group commit leaves no row behind.
    putState: db.prepare<[number, string, string, number | null, number | null, number | null, number]>(`
      INSERT INTO rule_states (rule_id, device_id, phase, since, count, last_fired_at) SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM rules WHERE id = ?)
      ON CONFLICT (rule_id, device_id) DO UPDATE SET phase = excluded.phase, since = excluded.since, count = excluded.count, last_fired_at = excluded.last_fired_at`),
    // Only for a rule that exists: one removed earlier in the same group commit fires no more.
    insertFiring: db.prepare<[string, number, string, string, number, string, number]>(
      'INSERT INTO rule_firings (id, rule_id, rule, device_id, at, trigger) SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM rules WHERE id = ?)'),
    insertAction: db.prepare<[string, number, string, string, string]>('INSERT INTO rule_actions (firing_id, idx, kind, spec, status, attempts) VALUES (?, ?, ?, ?, ?, 0)'),
    firing: db.prepare<[string], FiringSqlRow>('SELECT id, rule_id, rule, device_id, at, trigger FROM rule_firings WHERE id = ?'),
    firingsOf: db.prepare<[number, number], FiringSqlRow>('SELECT id, rule_id, rule, device_id, at, trigger FROM rule_firings WHERE rule_id = ? ORDER BY at DESC, id DESC LIMIT ?'),
    // Index rule_firings_device (migration 9).
    firingsOfDevice: db.prepare<[string, number], FiringSqlRow>('SELECT id, rule_id, rule, device_id, at, trigger FROM rule_firings WHERE device_id = ? ORDER BY at DESC, id DESC LIMIT ?'),
    pruneFirings: db.prepare<[number, number]>('DELETE FROM rule_firings WHERE rowid IN (SELECT rowid FROM rule_firings WHERE at < ? LIMIT ?)'),
    pruneActions: db.prepare<[]>('DELETE FROM rule_actions WHERE firing_id NOT IN (SELECT id FROM rule_firings)'),
    actionsOf: db.prepare<[string], ActionSqlRow>('SELECT * FROM rule_actions WHERE firing_id = ? ORDER BY idx'),
    pending: db.prepare<[], ActionSqlRow & { device_id: string; rule_id: number; rule: string; trigger: string; at: number }>(`
      SELECT a.*, f.device_id, f.rule_id, f.rule, f.trigger, f.at FROM rule_actions a JOIN rule_firings f ON f.id = a.firing_id
      WHERE a.status = 'pending' ORDER BY f.at, a.firing_id, a.idx`),
    startAction: db.prepare<[number, string, number]>('UPDATE rule_actions SET attempts = attempts + 1, started_at = coalesce(started_at, ?) WHERE firing_id = ? AND idx = ?'),
    endAction: db.prepare<[string, string | null, number, string, number]>('UPDATE rule_actions SET status = ?, outcome = ?, ended_at = ? WHERE firing_id = ? AND idx = ?'),
    bump: {
      fired: db.prepare<[number, number, number]>('UPDATE rules SET fired = fired + ?, last_fired_at = ? WHERE id = ?'),
    },
    count: (name: CounterName) => db.prepare<[number, number]>(`UPDATE rules SET ${name} = ${name} + ? WHERE id = ?`),
  }
  const counterStmts = new Map<CounterName, ReturnType<typeof stmts.count>>()
  const counter = (name: CounterName) => {
    let s = counterStmts.get(name)
    if (!s) counterStmts.set(name, s = stmts.count(name))
    return s
  }

  return {
    add(rule: CheckedRule, spec: RuleSpec, now: number): number {
      const { enabled: _enabled, ...kept } = spec
      return Number(stmts.insert.run(rule.name, JSON.stringify(kept), rule.enabled ? 1 : 0, now, now).lastInsertRowid)
    },
    all: (): RuleRow[] => stmts.all.all().map((r) => toRule(r, parse)),
    byName(name: string): RuleRow | undefined {
      const r = stmts.byName.get(name)
      return r && toRule(r, parse)
    },
    setEnabled(id: number, enabled: boolean, now: number): void { stmts.setEnabled.run(enabled ? 1 : 0, now, id) },
    /** Removes the rule and its states; its firings stay for their trace. */
    remove(id: number): void {
      stmts.removeStates.run(id)
      stmts.remove.run(id)
    },
    states: (): StoredState[] => stmts.states.all().map((r) => ({ ruleId: r.rule_id, deviceId: r.device_id, state: toState(r), lastFiredAt: r.last_fired_at })),
    /** A removed device: its condition states go (its firings stay for their trace). */
    forgetDevice(deviceId: string): void { stmts.removeDeviceStates.run(deviceId) },
    statesOf: (ruleId: number): StoredState[] => stmts.statesOf.all(ruleId).map((r) => ({ ruleId: r.rule_id, deviceId: r.device_id, state: toState(r), lastFiredAt: r.last_fired_at })),
    putState(ruleId: number, deviceId: string, s: ConditionState, lastFiredAt: number | null): void {
      stmts.putState.run(ruleId, deviceId, s.phase, s.phase === 'idle' ? null : s.since, s.phase === 'pending' ? s.count : null, lastFiredAt, ruleId)
    },
    addFiring(f: FiringRow, actions: ReadonlyArray<{ kind: ActionRow['kind']; spec: unknown; status: ActionStatus }>): void {
      if (stmts.insertFiring.run(f.id, f.ruleId, f.rule, f.deviceId, f.at, JSON.stringify(f.trigger), f.ruleId).changes === 0) return
      actions.forEach((a, idx) => stmts.insertAction.run(f.id, idx, a.kind, JSON.stringify(a.spec), a.status))
    },
    fired(ruleId: number, n: number, at: number): void { stmts.bump.fired.run(n, at, ruleId) },
    count(ruleId: number, name: CounterName, n = 1): void { counter(name).run(n, ruleId) },
    firing(id: string): (FiringRow & { actions: ActionRow[] }) | undefined {
      const f = stmts.firing.get(id)
      if (!f) return undefined
      // A webhook's secret stays in the row (a resumed call signs with it) and out of every view.
      const actions = stmts.actionsOf.all(id).map(toAction).map((a) => ({ ...a, spec: redactedActions([a.spec as Action])[0] }))
      return { id: f.id, ruleId: f.rule_id, rule: f.rule, deviceId: f.device_id, at: f.at, trigger: JSON.parse(f.trigger) as Trigger, actions }
    },
    firingsOf: (ruleId: number, limit: number): FiringRow[] => stmts.firingsOf.all(ruleId, limit).map((f) => ({ id: f.id, ruleId: f.rule_id, rule: f.rule, deviceId: f.device_id, at: f.at, trigger: JSON.parse(f.trigger) as Trigger })),
    /** A device's firings by any rule, newest first. */
    firingsOfDevice: (deviceId: string, limit: number): FiringRow[] => stmts.firingsOfDevice.all(deviceId, limit).map((f) => ({ id: f.id, ruleId: f.rule_id, rule: f.rule, deviceId: f.device_id, at: f.at, trigger: JSON.parse(f.trigger) as Trigger })),
    /** Actions not carried out yet, oldest firing first: what a start resumes. */
    pending: () => stmts.pending.all().map((r) => ({ ...toAction(r), deviceId: r.device_id, ruleId: r.rule_id, rule: r.rule, trigger: JSON.parse(r.trigger) as Trigger, firedAt: r.at })),
    pause(ruleId: number, until: number | null, reason: string | null): void { stmts.pause.run(until, reason, ruleId) },
    /** Retention: firings made before `cutoff` and their actions, `chunk` rows per statement. */
    async prune(cutoff: number, chunk = 5000): Promise<number> {
      const total = await deleteInChunks((limit) => stmts.pruneFirings.run(cutoff, limit).changes, chunk)
      if (total > 0) stmts.pruneActions.run()
      return total
    },
    startAction(firingId: string, idx: number, now: number): void { stmts.startAction.run(now, firingId, idx) },
    endAction(firingId: string, idx: number, status: Exclude<ActionStatus, 'pending'>, outcome: unknown, now: number): void {
      stmts.endAction.run(status, outcome === undefined ? null : JSON.stringify(outcome), now, firingId, idx)
    },
  }
}

export type RuleStore = ReturnType<typeof createRuleStore>
