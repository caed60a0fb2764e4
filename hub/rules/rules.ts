import type { Clock } from '../../common/clock.js'
import { RollcallError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import { randomId } from '../../common/random-id.js'
import type { Db } from '../../common/sqlite.js'
import { targetIncludes } from '../fleet/targets.js'
import { blameOf, type AfterCommit, type Writer } from '../storage/group-commit.js'
import { createActionRunner, type PendingAction, type RuleActionPorts } from './actions.js'
import { admit, MinuteWindow, tripBreaker, type Admission } from './limits.js'
import { compare, sameState, step, type ConditionState, type JobFailure, type TelemetryCondition } from './machine.js'
import { createPresenceRules, type PresenceChangeSeen, type PresenceNow } from './presence.js'
import { checkRuleSpec, redactedActions, type Action, type CheckedRule, type RuleSpec } from './spec.js'
import { RuleStates, type Entry } from './states.js'
import { createRuleStore, type ActionRow, type CounterName, type FiringRow, type RuleCounters, type Trigger } from './store.js'

/**
 * The rules engine: rules evaluated on what the hub stored, firing once per
 * transition, their actions recorded with the firing and carried out after
 * the commit (docs/rules.md).
 *
 * Where it runs: inside the group commit's write that stores a telemetry or
 * events batch (hub/telemetry/store.ts calls onSamples/onEvents there, with
 * the items above the stream's mark, in seq order). A replayed sample is
 * below the mark and never reaches a rule, so no sample is seen twice; the
 * new condition states, the firing and its actions (the transactional
 * outbox, rules/store.ts) commit with the samples, or not at all. The
 * evaluation runs in memory first and writes, in a savepoint of its own,
 * only what changed: a rule that fails is logged and rolled back, and the
 * samples still commit and are acked.
 *
 * What it keeps in memory: the rules, indexed by sensor and event kind, and
 * the states of (rule, device) pairs (states.ts: committed, this group
 * commit's, this batch's).
 */

export interface RulesDeps {
  readonly db: Db
  readonly writer: Writer
  readonly clock: Clock
  readonly logger: Logger
  /** A registered device's group (null: none); undefined when it is not registered. */
  readonly groupOf: (deviceId: string) => string | null | undefined
  readonly ports: RuleActionPorts
  /** How many actions run at once. */
  readonly actionConcurrency?: number
  /** Every device's presence now (presence/store.ts): what a presence rule starts from. */
  readonly presence: () => Iterable<readonly [string, PresenceNow]>
  /** How often presence rules with forMs look for devices whose status has held long enough. */
  readonly presenceTickMs?: number
}

export type { PresenceChangeSeen, PresenceNow } from './presence.js'

/** An execution that ended in failure with no retry left, as jobs/ just wrote it. */
export interface EndedExecution {
  readonly deviceId: string
  readonly jobId: string
  readonly name: string
  readonly outcome: JobFailure
  readonly attempt: number
  readonly error: string | null
  /** The rule whose firing made the job: a rule never reacts to its own jobs (no loop). */
  readonly causeRule: string | null
}


/** A sample or event as the telemetry store just stored it. */
/** `unsynced`: ts is the device's own clock, unchecked against the hub's: not trusted to be fresh. */
export interface StoredSample { readonly seq: number; readonly ts: number; readonly sensor: string; readonly value: number; readonly unsynced?: true }
export interface StoredEvent { readonly seq: number; readonly ts: number; readonly kind: string; readonly level: string; readonly message: string }

export interface RuleView {
  readonly id: number
  readonly name: string
  readonly for: string
  readonly when: CheckedRule['when']
  readonly then: readonly Action[]
  readonly enabled: boolean
  readonly maxSampleAgeMs: number
  readonly cooldownMs: number
  readonly maxFiringsPerMinute: number
  readonly createdAt: number
  readonly updatedAt: number
  readonly counters: RuleCounters
  /** Set while the circuit breaker holds the rule. */
  readonly paused: { readonly until: number; readonly reason: string } | null
}

export interface RuleDetail extends RuleView {
  /** Devices whose condition is pending or active, or that the rule acted for. */
  readonly devices: ReadonlyArray<{ readonly deviceId: string; readonly state: ConditionState; readonly lastFiredAt: number | null }>
  readonly recentFirings: readonly FiringRow[]
}

export interface FiringView extends FiringRow {
  readonly actions: readonly ActionRow[]
}

export interface RulesStats {
  readonly rules: number
  readonly enabled: number
  readonly evaluations: number
  readonly fired: number
  readonly suppressed: Readonly<Record<Exclude<Admission, 'fire'>, number>>
  readonly errors: number
  readonly actions: { readonly pending: number; readonly running: number; readonly done: number; readonly failed: number }
}

/** A rule as the engine holds it in memory. */
export interface Live {
  readonly id: number
  readonly rule: CheckedRule
  /** The rule's telemetry condition, if it has one (read on the hot path). */
  readonly telemetry: TelemetryCondition | undefined
  /** When the rule last began watching (added or enabled): a presence rule counts no earlier. */
  readonly watchingSince: number
  /** Firings that acted in the last minute (the rate limit). */
  readonly window: MinuteWindow
  /** Actions that failed in the last minute (the circuit breaker). */
  readonly failures: MinuteWindow
  pausedUntil: number | null
}

/** A firing made inside an evaluation, carried out after the commit. */
interface Fired { readonly id: string; readonly live: Live; readonly deviceId: string; readonly trigger: Trigger }

/**
 * One device's evaluation in one write, first in memory: the states it
 * changes (by rule), the writes they and its firings need, the firings and
 * refusals. Most change nothing and write nothing; those that do write in a
 * savepoint of their own (runPass).
 */
export interface Pass {
  readonly deviceId: string
  readonly overlay: Map<number, Entry>
  readonly writes: Array<() => void>
  readonly out: Fired[]
  readonly fired: Map<number, number>
  /** Firings by rule of the same write's earlier passes (the rate limit counts them). */
  readonly earlier: ReadonlyMap<number, number>
  readonly refused: Array<Exclude<Admission, 'fire'>>
}

/** What a kind of condition evaluated outside this file (presence.ts) needs of the engine. */
export interface Engine {
  /** One pass per device in the calling write; what it returns runs after the commit. */
  readonly evaluateMany: (list: ReadonlyArray<readonly [string, (pass: Pass) => void]>) => AfterCommit | void
  /** The rules of `lives` that watch the device (registered, in the rule's target). */
  readonly forEachWatching: (deviceId: string, lives: readonly Live[], visit: (live: Live) => void) => void
  readonly entryOf: (pass: Pass, live: Live) => Entry
  readonly fire: (pass: Pass, live: Live, entry: Entry, trigger: Trigger, now: number) => boolean
  readonly noteChange: (pass: Pass, live: Live, entry: Entry) => void
  /** Each device's state for the rule, as a pass would read it. */
  readonly eachState: (ruleId: number, visit: (deviceId: string, e: Entry) => void) => void
  /** Whether `live` is still the enabled rule in memory (not removed, disabled or reloaded since). */
  readonly isCurrent: (live: Live) => boolean
  /** Counts one evaluation (rule x item). */
  readonly counted: () => void
}

const COUNTER_OF: Readonly<Record<Exclude<Admission, 'fire'>, CounterName>> = {
  stale: 'suppressed_stale', paused: 'suppressed_paused', cooldown: 'suppressed_cooldown', rate: 'suppressed_rate',
}

export function createRules(deps: RulesDeps) {
  const { db, writer, clock, logger } = deps
  const store = createRuleStore(db, checkRuleSpec)
  const runner = createActionRunner({ store, writer, clock, logger, ports: deps.ports, concurrency: deps.actionConcurrency ?? 16, onFailed: (ruleId) => { failed(ruleId) } })

  /** An action of the rule failed: the circuit breaker (limits.ts) may pause it. */
  function failed(ruleId: number): void {
    const live = rules.get(ruleId)
    const pause = live && tripBreaker(live.failures, live.pausedUntil, clock.now())
    if (!live || !pause) return
    live.pausedUntil = pause.until
    writer.enqueue(() => { store.pause(ruleId, pause.until, pause.reason) })
    logger.warn({ rule: live.rule.name, until: pause.until }, 'rule paused: its actions keep failing')
  }
  let rules = new Map<number, Live>()
  let bySensor = new Map<string, Live[]>()
  let byEvent = new Map<string, Live[]>()
  let onPresence: Live[] = []
  let onJobs: Live[] = []
  /** Names of the rules with a job condition: a job one of them made never fires a job rule (no loop between them). */
  let jobRuleNames = new Set<string>()
  const states = new RuleStates(writer)
  const stats = { evaluations: 0, fired: 0, errors: 0, suppressed: { stale: 0, paused: 0, cooldown: 0, rate: 0 } }

  function index(): void {
    bySensor = new Map()
    byEvent = new Map()
    onPresence = []
    onJobs = []
    jobRuleNames = new Set([...rules.values()].filter((l) => 'job' in l.rule.when).map((l) => l.rule.name))
    for (const live of rules.values()) {
      if (!live.rule.enabled) continue
      const when = live.rule.when
      if ('presence' in when) onPresence.push(live)
      else if ('job' in when) onJobs.push(live)
      else {
        const [map, k] = 'telemetry' in when ? [bySensor, when.telemetry.sensor] : [byEvent, when.event.kind]
        const list = map.get(k)
        if (list) list.push(live)
        else map.set(k, [live])
      }
    }
  }

  function loadRules(): void {
    const previous = rules
    rules = new Map(store.all().map((r) => {
      const before = previous.get(r.id)
      return [r.id, { id: r.id, rule: r.rule, telemetry: 'telemetry' in r.rule.when ? r.rule.when.telemetry : undefined, watchingSince: r.updatedAt, window: before?.window ?? new MinuteWindow(), failures: before?.failures ?? new MinuteWindow(), pausedUntil: r.paused?.until ?? null }]
    }))
    index()
  }

  /**
   * One trigger of `live` on the pass's device: admitted, it becomes a
   * firing and its actions (pending), written with the pass; refused, a
   * counter. Returns whether it acted.
   */
  function fire(pass: Pass, live: Live, entry: Entry, trigger: Trigger, now: number, unsynced = false): boolean {
    // A sample on the device's unchecked clock may be from any time: it never acts (as a stale one).
    const verdict = unsynced ? 'stale' : admit({
      now, triggerTs: trigger.ts, maxSampleAgeMs: live.rule.maxSampleAgeMs, cooldownMs: live.rule.cooldownMs, lastFiredAt: entry.lastFiredAt,
      firedLastMinute: live.window.count(now) + states.firedInGroup(live.id) + (pass.earlier.get(live.id) ?? 0) + (pass.fired.get(live.id) ?? 0), maxFiringsPerMinute: live.rule.maxFiringsPerMinute,
      pausedUntil: live.pausedUntil,
    })
    if (verdict !== 'fire') {
      pass.refused.push(verdict)
      pass.writes.push(() => { store.count(live.id, COUNTER_OF[verdict]) })
      return false
    }
    const id = randomId('f')
    const deviceId = pass.deviceId
    pass.writes.push(() => {
      store.addFiring({ id, ruleId: live.id, rule: live.rule.name, deviceId, at: now, trigger }, live.rule.then.map((a) => ({ kind: actionKind(a), spec: a, status: 'pending' as const })))
      store.fired(live.id, 1, now)
    })
    pass.fired.set(live.id, (pass.fired.get(live.id) ?? 0) + 1)
    pass.out.push({ id, live, deviceId, trigger })
    return true
  }

  /**
   * Calls `visit` for each item and each enabled rule that watches it (by
   * `rulesOf`) and watches this device. The device's registration and group
   * are read once per batch, when some rule watches one of its items: a
   * device removed while its last batches were on the way reaches no rule.
   */
  function forWatching<T>(deviceId: string, items: readonly T[], rulesOf: (item: T) => Live[] | undefined, visit: (live: Live, item: T) => void): void {
    let group: string | null | undefined
    let groupRead = false
    for (const item of items) {
      const list = rulesOf(item)
      if (!list) continue
      if (!groupRead) {
        group = deps.groupOf(deviceId)
        groupRead = true
      }
      if (group === undefined) return
      for (const live of list) if (live.rule.target.kind === 'all' || targetIncludes(live.rule.target, deviceId, group)) visit(live, item)
    }
  }

  /** Records a changed state in the pass, and its write. */
  function noteChange(pass: Pass, live: Live, entry: Entry): void {
    pass.overlay.set(live.id, entry)
    const deviceId = pass.deviceId
    pass.writes.push(() => { store.putState(live.id, deviceId, entry.state, entry.lastFiredAt) })
  }

  /**
   * The hot path: every stored sample of a watched sensor, for each rule on
   * it. Written as plain loops (forWatching's shape, without its closures),
   * and the common case, a rule idle on a value that does not cross,
   * leaves after one comparison.
   */
  function evaluateSamples(pass: Pass, storeId: string, samples: readonly StoredSample[], now: number): void {
    const deviceId = pass.deviceId
    const entryOf = states.reader(deviceId)
    let group: string | null | undefined
    let groupRead = false
    for (const s of samples) {
      const list = bySensor.get(s.sensor)
      if (list === undefined) continue
      if (!groupRead) {
        group = deps.groupOf(deviceId)
        groupRead = true
      }
      if (group === undefined) return
      for (const live of list) {
        const c = live.telemetry
        if (c === undefined || (live.rule.target.kind !== 'all' && !targetIncludes(live.rule.target, deviceId, group))) continue
        stats.evaluations++
        const entry = entryOf(pass.overlay, live.id)
        if (entry.state.phase === 'idle' && !compare(s.value, c)) continue
        evaluateSample(pass, live, c, entry, storeId, s, now)
      }
    }
  }

  /** One sample that crosses, or a rule not idle: its machine's step, and what it fires or changes. */
  function evaluateSample(pass: Pass, live: Live, c: TelemetryCondition, entry: Entry, storeId: string, s: StoredSample, now: number): void {
    const next = step(c, entry.state, s.ts, s.value)
    let lastFiredAt = entry.lastFiredAt
    if (next.fired) {
      const trigger: Trigger = { kind: 'sample', storeId, seq: s.seq, ts: s.ts, sensor: s.sensor, value: s.value }
      if (fire(pass, live, entry, trigger, now, s.unsynced === true)) lastFiredAt = now
    }
    if (next.state === entry.state || (sameState(next.state, entry.state) && lastFiredAt === entry.lastFiredAt)) return
    noteChange(pass, live, { state: next.state, lastFiredAt })
  }

  function evaluateEvents(pass: Pass, storeId: string, events: readonly StoredEvent[], now: number): void {
    const entryOf = states.reader(pass.deviceId)
    forWatching(pass.deviceId, events, (e) => byEvent.get(e.kind), (live, e) => {
      const when = live.rule.when
      if (!('event' in when) || (when.event.level !== undefined && when.event.level !== e.level)) return
      stats.evaluations++
      // An event is a transition of its own: each one that matches fires (within the limits).
      const entry = entryOf(pass.overlay, live.id)
      const trigger: Trigger = { kind: 'event', storeId, seq: e.seq, ts: e.ts, event: e.kind, level: e.level, message: e.message }
      if (fire(pass, live, entry, trigger, now)) noteChange(pass, live, { state: entry.state, lastFiredAt: now })
    })
  }

  /** Executions that failed for good: each one a job rule matches fires (within the limits), as an event does. */
  function evaluateJobs(pass: Pass, ended: readonly EndedExecution[], now: number): void {
    const entryOf = states.reader(pass.deviceId)
    forWatching(pass.deviceId, ended, () => onJobs, (live, e) => {
      const when = live.rule.when
      if (!('job' in when) || (e.causeRule !== null && jobRuleNames.has(e.causeRule))) return
      if ((when.job.outcome !== undefined && when.job.outcome !== e.outcome) || (when.job.name !== undefined && when.job.name !== e.name)) return
      stats.evaluations++
      const entry = entryOf(pass.overlay, live.id)
      const trigger: Trigger = { kind: 'job', ts: now, jobId: e.jobId, name: e.name, outcome: e.outcome, attempt: e.attempt, error: e.error }
      if (fire(pass, live, entry, trigger, now)) noteChange(pass, live, { state: entry.state, lastFiredAt: now })
    })
  }

  const applyWrites = db.transaction((writes: ReadonlyArray<() => void>) => { for (const w of writes) w() })

  /**
   * Runs one device's pass; what it writes goes in a savepoint of its own.
   * Returns it, or undefined when a rule failed (rolled back, logged); the
   * database's own failure (full, I/O) is thrown: it fails the write, and its
   * sender tries again, so no firing is lost.
   */
  function runPass(deviceId: string, earlier: ReadonlyMap<number, number>, run: (pass: Pass) => void): Pass | undefined {
    const pass: Pass = { deviceId, overlay: new Map(), writes: [], out: [], fired: new Map(), earlier, refused: [] }
    try {
      run(pass)
      if (pass.writes.length > 0) applyWrites(pass.writes)
      return pass
    } catch (err) {
      if (blameOf(err) === 'database') throw err
      stats.errors++
      logger.error({ err, deviceId }, 'rule evaluation failed and was rolled back; what triggered it is stored without it')
      return undefined
    }
  }

  /**
   * The passes of one write, one per device, each run in turn; only once all
   * have run do their changes join the group commit's (a later one's
   * database failure rolls the whole write back, and the earlier ones with
   * it), and their firings act after the commit.
   */
  function evaluateMany(list: ReadonlyArray<readonly [string, (pass: Pass) => void]>): AfterCommit | void {
    // The firings of this write's earlier passes, for the rate limit of the later ones.
    const earlier = new Map<number, number>()
    const passes: Pass[] = []
    for (const [deviceId, run] of list) {
      const pass = runPass(deviceId, earlier, run)
      if (!pass) continue
      passes.push(pass)
      for (const [ruleId, n] of pass.fired) earlier.set(ruleId, (earlier.get(ruleId) ?? 0) + n)
    }
    const out: Fired[] = []
    for (const pass of passes) {
      states.join(pass.deviceId, pass.overlay, pass.fired)
      for (const verdict of pass.refused) stats.suppressed[verdict]++
      out.push(...pass.out)
    }
    if (out.length === 0) return
    return () => {
      stats.fired += out.length
      const now = clock.now()
      for (const f of out) f.live.window.add(now)
      for (const f of out) logger.info({ firing: f.id, rule: f.live.rule.name, deviceId: f.deviceId }, 'rule fired')
      runner.enqueue(out.flatMap((f) => f.live.rule.then.map((a, idx): PendingAction => ({ firingId: f.id, idx, ruleId: f.live.id, rule: f.live.rule.name, deviceId: f.deviceId, action: a, trigger: f.trigger }))))
    }
  }

  const engine: Engine = {
    evaluateMany,
    forEachWatching: (deviceId, lives, visit) => { forWatching(deviceId, [null], () => (lives.length > 0 ? lives as Live[] : undefined), (live) => { visit(live) }) },
    entryOf: (pass, live) => states.reader(pass.deviceId)(pass.overlay, live.id),
    fire: (pass, live, entry, trigger, now) => fire(pass, live, entry, trigger, now),
    noteChange,
    eachState: (ruleId, visit) => { states.each(ruleId, visit) },
    isCurrent: (live) => live.rule.enabled && rules.get(live.id) === live,
    counted: () => { stats.evaluations++ },
  }
  const presenceRules = createPresenceRules({ clock, writer, engine, presence: deps.presence, rules: () => onPresence, tickMs: deps.presenceTickMs ?? 1000 })

  function requireRule(name: string) {
    const r = store.byName(name)
    if (!r) throw new RollcallError('RULE_NOT_FOUND', `no rule "${name}" (rollcall rule list shows the rules)`)
    return r
  }

  function view(r: ReturnType<typeof requireRule>): RuleView {
    const { target: _target, then: actions, ...rule } = r.rule
    const paused = r.paused !== null && r.paused.until > clock.now() ? r.paused : null
    return { id: r.id, ...rule, then: redactedActions(actions), createdAt: r.createdAt, updatedAt: r.updatedAt, counters: r.counters, paused }
  }

  /** A management write: committed with the hot-path writes around it, then the rules in memory follow. */
  async function changed(op: () => void): Promise<void> {
    await writer.commit(() => { op() })
    loadRules()
    presenceRules.reconcile()
  }

  return {
    /** Loads the rules and their states: before the first batch is stored. */
    start(): void {
      loadRules()
      states.load(store.states())
      // Before any presence change of this run is evaluated: the writer keeps the order.
      presenceRules.start()
    },
    /**
     * Carries out the actions the last run left pending: once the broker
     * listens, so devices can reconnect and observers hear the events. One
     * whose firing is older than its rule's maxSampleAgeMs is suppressed
     * (a motor.stop left pending overnight must not run in the morning).
     */
    async resume(): Promise<void> {
      const now = clock.now()
      const due: PendingAction[] = []
      const old: Array<{ firingId: string; idx: number; ruleId: number }> = []
      for (const a of store.pending()) {
        const maxAge = rules.get(a.ruleId)?.rule.maxSampleAgeMs ?? 0
        if (now - a.firedAt > maxAge) old.push(a)
        else due.push({ firingId: a.firingId, idx: a.idx, ruleId: a.ruleId, rule: a.rule, deviceId: a.deviceId, action: a.spec as Action, trigger: a.trigger, attempts: a.attempts })
      }
      if (old.length > 0) {
        await writer.commit(() => {
          for (const a of old) {
            store.endAction(a.firingId, a.idx, 'suppressed', { error: { code: 'STALE', message: 'left pending by the last run, and older than the rule\'s maxSampleAgeMs when the hub started again' } }, now)
            store.count(a.ruleId, 'suppressed_stale')
          }
        })
        logger.warn({ actions: old.length }, 'rule actions left pending by the last run are too old to carry out now; suppressed')
      }
      runner.resume(due)
    },
    /** Stops carrying out actions; those not finished stay pending for the next start. */
    stop: () => {
      presenceRules.stop()
      return runner.stop()
    },
    /** Whether an enabled rule watches samples or events now. */
    watching: (kind: 'samples' | 'events'): boolean => (kind === 'samples' ? bySensor.size > 0 : byEvent.size > 0),
    /** Inside the write that stores a batch of samples (see the header). */
    onSamples: (deviceId: string, storeId: string, samples: readonly StoredSample[], now: number): AfterCommit | void => {
      if (!samples.some((s) => bySensor.has(s.sensor))) return
      return evaluateMany([[deviceId, (pass) => { evaluateSamples(pass, storeId, samples, now) }]])
    },
    /** Inside the write that records a device's presence change (presence/store.ts). */
    onPresence: (deviceId: string, change: PresenceChangeSeen): AfterCommit | void => presenceRules.onChange(deviceId, change),
    /** Inside the write that ends executions in failure for good (jobs/), at its end. */
    onJobsEnded: (ended: readonly EndedExecution[]): AfterCommit | void => {
      if (onJobs.length === 0 || ended.length === 0) return
      const now = clock.now()
      return evaluateMany([...new Set(ended.map((e) => e.deviceId))].map((deviceId) => [deviceId, (pass: Pass) => {
        evaluateJobs(pass, ended.filter((e) => e.deviceId === deviceId), now)
      }]))
    },
    /** Inside the write that stores a batch of events. */
    onEvents: (deviceId: string, storeId: string, events: readonly StoredEvent[], now: number): AfterCommit | void => {
      if (!events.some((e) => byEvent.has(e.kind))) return
      return evaluateMany([[deviceId, (pass) => { evaluateEvents(pass, storeId, events, now) }]])
    },
    async add(spec: RuleSpec): Promise<RuleView> {
      const rule = checkRuleSpec(spec)
      const exists = () => new RollcallError('RULE_EXISTS', `a rule named "${rule.name}" exists; remove it first, or pick another name`)
      if (store.byName(rule.name)) throw exists()
      try {
        await changed(() => { store.add(rule, spec, clock.now()) })
      } catch (err) {
        // Two adds of one name at once: the second meets the first's row.
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw exists()
        throw err
      }
      logger.info({ rule: rule.name, for: rule.for }, 'rule added')
      return view(requireRule(rule.name))
    },
    list: (): RuleView[] => store.all().map(view),
    get(name: string): RuleDetail {
      const r = requireRule(name)
      return {
        ...view(r),
        devices: store.statesOf(r.id).filter((s) => s.state.phase !== 'idle' || s.lastFiredAt !== null).map((s) => ({ deviceId: s.deviceId, state: s.state, lastFiredAt: s.lastFiredAt })),
        recentFirings: store.firingsOf(r.id, 20),
      }
    },
    async setEnabled(name: string, enabled: boolean): Promise<RuleView> {
      const r = requireRule(name)
      // Enabling a rule also resets its circuit breaker: the operator says its actions may run again.
      await changed(() => {
        store.setEnabled(r.id, enabled, clock.now())
        if (enabled) store.pause(r.id, null, null)
      })
      if (enabled) rules.get(r.id)?.failures.clear()
      logger.info({ rule: name }, enabled ? 'rule enabled' : 'rule disabled')
      return view(requireRule(name))
    },
    async remove(name: string): Promise<void> {
      const r = requireRule(name)
      await changed(() => { store.remove(r.id) })
      states.forget(r.id)
      logger.info({ rule: name }, 'rule removed')
    },
    firing(id: string): FiringView {
      const f = store.firing(id)
      if (!f) throw new RollcallError('FIRING_NOT_FOUND', `no firing "${id}" (rollcall rule show NAME lists a rule's recent firings)`)
      return f
    },
    /** The device's firings by any rule, newest first (its rules may since have been removed). */
    firingsOfDevice: (deviceId: string, limit: number): FiringRow[] => store.firingsOfDevice(deviceId, limit),
    stats(): RulesStats {
      let enabled = 0
      for (const l of rules.values()) if (l.rule.enabled) enabled++
      return { rules: rules.size, enabled, evaluations: stats.evaluations, fired: stats.fired, suppressed: { ...stats.suppressed }, errors: stats.errors, actions: runner.stats() }
    },
    /**
     * A device removed from the fleet: its condition states go, so a pending
     * "offline for X" is not looked at again, and a device added later under
     * the same id starts idle. Its firings stay for their trace.
     */
    deviceRemoved(deviceId: string): void {
      states.forgetDevice(deviceId)
      writer.enqueue(() => { store.forgetDevice(deviceId) })
    },
    /** Retention: firings made before `cutoff`, with their actions. */
    prune: (cutoff: number) => store.prune(cutoff),
    /** Resolves when no action is queued or running (tests, and a clean stop). */
    idle: () => runner.idle(),
    /** Resolves once what is queued to be written now is committed, and the actions it made are carried out (tests). */
    async settled(): Promise<void> {
      await writer.commit(() => undefined)
      await runner.idle()
    },
  }
}

function actionKind(a: Action): ActionRow['kind'] {
  if ('command' in a) return 'command'
  if ('job' in a) return 'job'
  if ('webhook' in a) return 'webhook'
  return 'event'
}

export type Rules = ReturnType<typeof createRules>
