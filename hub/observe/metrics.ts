import type { CheckpointStats } from '../storage/checkpointer.js'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import type { BrokerStats } from '../../broker/types.js'
import { LIMITS } from '../../protocol/limits.js'
import type { IngestCounters } from '../telemetry/store.js'
import type { SaturationStats } from './saturation.js'
import type { WriterStats } from '../storage/group-commit.js'
import type { CommandOutcome, CommandStats } from '../commands/commands.js'
import type { JobStats } from '../jobs/jobs.js'
import type { RulesStats, RuleView } from '../rules/rules.js'

/**
 * The hub's Prometheus metrics (issue #6). The counters and gauges cost
 * nothing on the hot paths: each reads the counters its owner already keeps
 * (the same ones /api/stats shows) in a `collect()` callback, at scrape time.
 * The histograms are the exception (a distribution cannot be read back from a
 * counter): the writer, ingress and commands call an observer once per
 * commit, telemetry batch and command, which walks a short fixed list of
 * bucket bounds (createHubHistograms). Names follow the /api/stats fields,
 * snake_cased under `rollcall_<part>_`, so a log line, a stats field and a
 * metric read alike; counters end in `_total` and durations are in seconds.
 * docs/metrics.md lists every metric.
 *
 * Each hub has its own registry, never prom-client's global one, so several
 * hubs in one process (the tests, the simulator) do not clash.
 */

export interface MetricSources {
  readonly ingest: () => Readonly<IngestCounters>
  readonly writer: () => WriterStats
  /** The SQLite file's WAL checkpoints; absent on PostgreSQL, which keeps its own. */
  readonly checkpoints: (() => CheckpointStats) | undefined
  readonly broker: () => BrokerStats
  readonly devices: () => { readonly online: number; readonly offline: number }
  readonly deadLetters: () => Readonly<Record<string, number>>
  readonly commands: () => CommandStats
  readonly jobs: () => JobStats
  /** Executions of the jobs still active, by state. */
  /** Read from the database at scrape time (a promise: on PostgreSQL it is a query). */
  readonly executions: () => Promise<Readonly<Record<string, number>>>
  /** Agents' outbox backlogs as last reported: devices above 0, their sum, the largest. */
  readonly backlog: () => { readonly devices: number; readonly rows: number; readonly max: number }
  /** Devices' clock skews from their last births: how many exceed 1 s, how many reported one, the largest |skew| in ms. */
  readonly clockSkew: () => { readonly skewed: number; readonly reported: number; readonly maxAbsMs: number }
  /** Live streams open now (dashboard pages). */
  readonly liveStreams: () => number
  /** How close the hub is to its limit (hub/observe/saturation.ts). */
  readonly saturation: () => SaturationStats
  /** The rules engine's totals since the hub started (the same as /api/stats `rules`). */
  readonly rules: () => RulesStats
  /** Each rule with its counters, kept in the database since it was added: read once per scrape. */
  readonly ruleViews: () => readonly RuleView[]
}

export interface HubMetrics {
  /** The `Content-Type` of `scrape()`'s text. */
  readonly contentType: string
  /** The Prometheus text exposition of every metric, read now. */
  scrape(): Promise<string>
  /** Unregisters everything; the hub calls it on stop. */
  close(): void
}

export const METRIC_PREFIX = 'rollcall_'

export function createHubMetrics(sources: MetricSources, histograms: HubHistograms): HubMetrics {
  // Made now, not at the first scrape: prom-client counts CPU from when the
  // process metrics were made, so the first scrape already shows the start-up.
  processRegistry()
  const register = new Registry()
  const m = metricsOn(register)
  for (const h of histograms.metrics) register.registerMetric(h)

  // Only online and offline: a "total" series would double any sum over the label.
  m.gaugeBy('devices', 'Registered devices by presence.', 'status', () => {
    const d = sources.devices()
    return { online: d.online, offline: d.offline }
  })

  const broker = sources.broker
  m.gauge('broker_connections', 'Authenticated MQTT clients connected now.', () => broker().connections)
  m.gauge('broker_sockets', 'TCP connections open now, authenticated or not.', () => broker().sockets)
  m.gauge('broker_pending_sockets', 'Sockets open now whose CONNECT is not decided yet.', () => broker().pending)
  m.gauge('broker_oldest_queued_seconds', 'How long the oldest message waiting for a routing slot has waited (0: none waits).', () => broker().oldestQueuedMs / 1000)
  m.gauge('broker_queued_messages', 'Messages received and waiting for a routing slot: the broker\'s backlog, near 0 while the hub keeps up.', () => broker().queuedMessages)
  m.counter('broker_accepts_refused_total', 'Sockets destroyed at accept (banned source, maxPendingPerAddress, maxConnections).', () => broker().acceptsRefused)
  // One series per limit, so an operator sees which one fired (docs/security.md says how to tune each).
  m.counterBy('broker_limit_refusals_total', 'Refusals by the connection limit that fired.', 'limit', () => {
    const l = broker().limits
    return {
      pending_per_address: l.pendingPerAddress, pending_evicted: l.pendingEvicted, max_connections: l.maxConnections, banned: l.banned,
      client_rate: l.clientRate, global_rate: l.globalRate, filters_per_subscribe: l.filtersPerSubscribe, subscriptions_per_client: l.subscriptionsPerClient,
    }
  })
  m.counter('broker_connects_accepted_total', 'CONNECTs accepted (CONNACK 0).', () => broker().connectsAccepted)
  m.counter('broker_connects_refused_total', 'CONNECTs refused (CONNACK 1-5: rate limit, policy, credentials, protocol version).', () => broker().connectsRefused)
  m.counter('broker_violations_total', 'Rule breaks: refused CONNECTs, publishes, subscriptions and packets.', () => broker().violations)
  m.counter('broker_slow_consumers_cut_total', 'Clients cut off because their socket did not drain within drainTimeoutMs.', () => broker().slowConsumersCut)
  m.counter('broker_forwards_dropped_total', 'Live messages not sent to a lagging observer or anonymous client.', () => broker().forwardsDropped)
  m.counterBy('broker_write_releases_total', 'Connections whose held writes were sent, by what sent them: commit (with its acks), timer (no commit came in time), single (a command, a CONNACK), flush.', 'by', () => ({ ...broker().writeReleases }))
  m.counter('broker_tls_handshakes_failed_total', 'TLS handshakes on the MQTT TLS listener that failed or timed out (untrusted certificate, scanner, stalled socket).', () => broker().tlsHandshakesFailed)

  const ingest = sources.ingest
  m.counter('ingest_samples_stored_total', 'Telemetry samples stored.', () => ingest().samplesStored)
  m.counter('ingest_samples_duplicate_total', 'Telemetry samples dropped as duplicates of stored ones (agent resends).', () => ingest().samplesDuplicate)
  m.counter('ingest_events_stored_total', 'Device events stored.', () => ingest().eventsStored)
  m.counter('ingest_events_duplicate_total', 'Device events dropped as duplicates of stored ones.', () => ingest().eventsDuplicate)
  m.counter('ingest_batches_total', 'Telemetry and event batches written.', () => ingest().batches)
  m.counter('ingest_gaps_refused_total', 'Batches refused because an earlier batch of their stream was lost on the way.', () => ingest().gapsRefused)

  const writer = sources.writer
  m.counter('writer_commits_total', 'Group commits of the hub database.', () => writer().commits)
  m.counter('writer_failed_commits_total', 'Group commits that failed (their writes were dropped, the senders retry).', () => writer().failedCommits)
  m.counter('writer_failed_ops_total', 'Single writes rolled back alone inside a group commit.', () => writer().failedOps)
  m.gauge('writer_queued_rows', 'Rows queued for the next group commit.', () => writer().queuedWeight)
  m.gauge('writer_last_commit_seconds', 'Duration of the last group commit.', () => writer().lastCommitMs / 1000)
  m.gauge('writer_oldest_queued_seconds', 'How long the oldest row queued for the next commit has waited (0: nothing queued).', () => writer().oldestQueuedMs / 1000)
  m.gauge('writer_last_commit_rows', 'Rows written by the last group commit.', () => writer().lastCommitWeight)
  m.gauge('writer_awaiting_sync', 'Group commits written and waiting for their fsync in the thread pool (their acks wait with them).', () => writer().awaitingSync)
  const checkpoints = sources.checkpoints
  if (checkpoints !== undefined) {
    m.counter('writer_checkpoints_total', 'WAL checkpoints run on the checkpoint thread.', () => checkpoints().checkpoints)
    m.counter('writer_failed_checkpoints_total', 'WAL checkpoints the checkpoint thread could not run (the writer\'s own checkpoint bounds the WAL).', () => checkpoints().failed)
    m.gauge('writer_checkpoint_wal_pages', 'Pages in the WAL when the last checkpoint ran: it starts over from 0 after each one that copied them all.', () => checkpoints().lastWalPages)
  }
  m.counter('writer_failed_syncs_total', 'Fsyncs of the WAL that failed; their commits were treated as failed and nothing in them was acknowledged.', () => writer().failedSyncs)

  // Sums over devices, never one series per device: a fleet of thousands would be thousands of series.
  const backlog = sources.backlog
  m.gauge('agent_outbox_backlog_rows', 'Outbox rows waiting to be sent, summed over agents, as each last reported.', () => backlog().rows)
  m.gauge('agent_outbox_backlog_max_rows', 'The largest outbox backlog an agent last reported, in rows.', () => backlog().max)
  m.gauge('agents_with_backlog', 'Agents whose last reported outbox backlog was above 0.', () => backlog().devices)

  // Clock skew (issue #13), also without a per-device label: how many are off, and by how much at worst.
  const skew = sources.clockSkew
  m.gauge('agents_clock_skewed', 'Agents whose wall clock was more than 1 s off the hub\'s at their last birth (rollcall device show ID says which way).', () => skew().skewed)
  m.gauge('agents_clock_skew_reported', 'Agents whose last birth carried their clock (agents that can report a skew).', () => skew().reported)
  m.gauge('agent_clock_skew_max_abs_seconds', 'The largest |device clock - hub clock| at the agents\' last births, in seconds.', () => skew().maxAbsMs / 1000)

  // Overload coming (issue #14): what rises before samples wait. Also in /api/stats as `saturation`.
  const saturation = sources.saturation
  m.gauge('saturation_event_loop_delay_p99_seconds', 'Event-loop delay p99 over the last 10 s window: how late every socket, commit and timer is.', () => saturation().eventLoopDelayP99Ms / 1000)
  m.gauge('saturation_event_loop_delay_max_seconds', 'The largest event-loop delay in the last 10 s window.', () => saturation().eventLoopDelayMaxMs / 1000)
  m.gauge('saturation_oldest_unacked_seconds', 'The longest a message received now has waited at the hub without its ack (routing, then commit); about the commit delay while the hub keeps up.', () => saturation().oldestUnackedMs / 1000)

  m.gauge('live_streams', 'Live update streams open now (GET /api/live: dashboard pages).', () => sources.liveStreams())

  m.counterBy('dead_letters_total', 'Payloads the hub could not accept, by reason (counted since the hub started, even when rows are pruned).', 'reason', () => sources.deadLetters())

  const commands = sources.commands
  m.counter('commands_sent_total', 'Commands sent to a connected device.', () => commands().sent)
  m.counterBy('commands_total', 'Commands by outcome: the sent ones by how they ended, and those not sent (offline: refused, queued: left as a job).', 'outcome', () => {
    const c = commands()
    return { succeeded: c.succeeded, failed: c.failed, timed_out: c.timedOut, disconnected: c.disconnected, offline: c.offline, queued: c.queued }
  })
  m.gauge('commands_pending', 'Commands sent and not answered yet.', () => commands().pending)
  m.counter('commands_late_replies_total', 'Replies kept as late: the first that came after its command ended unanswered (timed out or disconnected).', () => commands().lateReplies)
  m.counter('commands_unknown_replies_total', 'Replies naming another device\'s command (ignored).', () => commands().unknownReplies)

  const jobs = sources.jobs
  m.gaugeBy('executions', 'Executions of active jobs by state (queued, in_progress, and the final states of executions whose job is still active).', 'state',
    () => sources.executions())
  m.counter('jobs_pulls_total', 'Job pulls by devices.', () => jobs().pulls)
  m.counter('jobs_batches_total', 'Job batches sent to devices.', () => jobs().batches)
  m.counter('jobs_delivered_total', 'Job executions delivered to devices (redeliveries included).', () => jobs().delivered)
  m.counterBy('jobs_updates_total', 'Execution updates from devices by outcome.', 'outcome', () => {
    const j = jobs()
    return { applied: j.updatesApplied, duplicate: j.updatesDuplicate, refused: j.updatesRefused }
  })
  m.counter('jobs_retries_total', 'Executions queued again for another attempt.', () => jobs().retries)
  m.counter('jobs_timed_out_total', 'Executions timed out by the sweeper.', () => jobs().timedOut)
  m.counter('jobs_expired_total', 'Executions expired: not started by their job\'s expiresAt.', () => jobs().expired)
  m.counter('jobs_aborted_total', 'Jobs aborted by their rollout failure threshold.', () => jobs().aborted)

  // Rules (issue #17): the engine's totals since the hub started, under `rules_` as in /api/stats ...
  const rules = sources.rules
  // Enabled and disabled only: a "total" series would double any sum over the label.
  m.gaugeBy('rules', 'Rules by state.', 'state', () => {
    const r = rules()
    return { enabled: r.enabled, disabled: r.rules - r.enabled }
  })
  m.counter('rules_evaluations_total', 'Samples and events evaluated by a rule that watches them.', () => rules().evaluations)
  m.counter('rules_fired_total', 'Rule firings that acted (their actions were recorded to be carried out).', () => rules().fired)
  m.counterBy('rules_suppressed_total', 'Rule firings whose actions were suppressed, by the limit that held them.', 'reason', () => rules().suppressed)
  m.counter('rules_evaluation_errors_total', 'Rule evaluations that failed and were rolled back (the batch was stored without them).', () => rules().errors)
  m.gaugeBy('rules_actions', 'Rule actions waiting to be carried out and being carried out now.', 'status', () => {
    const a = rules().actions
    return { pending: a.pending, running: a.running }
  })
  m.counterBy('rules_actions_total', 'Rule actions carried out, by how they ended.', 'outcome', () => {
    const a = rules().actions
    return { done: a.done, failed: a.failed }
  })
  // ... and each rule's own counters, kept with the rule since it was added (they survive a restart),
  // one series per rule: rules are few and named by the operator, unlike devices. Read once per scrape.
  let views: readonly RuleView[] | undefined
  const ruleViews = () => (views ??= sources.ruleViews())
  m.gauge('rules_paused', 'Rules paused by their circuit breaker now (their actions kept failing).', () => ruleViews().filter((r) => r.paused !== null).length)
  m.counterSeries('rule_fired_total', 'Firings of each rule that acted, since the rule was added.', ['rule'],
    () => ruleViews().map((r) => [{ rule: r.name }, r.counters.fired]))
  m.counterSeries('rule_suppressed_total', 'Firings of each rule whose actions were suppressed, by the limit that held them, since the rule was added.', ['rule', 'reason'],
    () => ruleViews().flatMap((r) => {
      const c = r.counters
      return [
        [{ rule: r.name, reason: 'stale' }, c.suppressedStale], [{ rule: r.name, reason: 'paused' }, c.suppressedPaused],
        [{ rule: r.name, reason: 'cooldown' }, c.suppressedCooldown], [{ rule: r.name, reason: 'rate' }, c.suppressedRate],
      ] as const
    }))
  m.counterSeries('rule_actions_failed_total', 'Actions of each rule that failed, since the rule was added.', ['rule'],
    () => ruleViews().map((r) => [{ rule: r.name }, r.counters.actionsFailed]))
  m.gaugeSeries('rule_paused', '1 while the rule\'s circuit breaker holds it (its actions kept failing), else 0.', ['rule'],
    () => ruleViews().map((r) => [{ rule: r.name }, r.paused !== null ? 1 : 0]))

  return {
    contentType: register.contentType,
    // The process's metrics are the process's, whatever hub asks: one set, merged into each scrape.
    scrape: () => {
      views = undefined
      return Registry.merge([processRegistry(), register]).metrics()
    },
    close: () => { register.clear() },
  }
}

/**
 * The observers the hot paths call (as callbacks: the writer, ingress and
 * commands do not import prom-client). Made before those parts, which take
 * them when they are created; createHubMetrics registers the histograms on the
 * hub's registry.
 */
export interface HubHistograms {
  /** A group commit that succeeded: its duration and rows. */
  readonly commit: (ms: number, rows: number) => void
  /** A telemetry batch received: its samples. */
  readonly telemetryBatch: (samples: number) => void
  /** A command sent to a device ended: how, and its send-to-outcome time. */
  readonly command: (outcome: CommandOutcome['status'], ms: number) => void
  /** For createHubMetrics. */
  readonly metrics: readonly Metric[]
}

export function createHubHistograms(): HubHistograms {
  // Not registered here: createHubMetrics puts them on the hub's own registry.
  const registers: Registry[] = []
  const commitSeconds = new Histogram({
    name: METRIC_PREFIX + 'writer_commit_seconds', help: 'Duration of each group commit that succeeded.', registers,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  })
  const commitRows = new Histogram({
    name: METRIC_PREFIX + 'writer_commit_rows', help: 'Rows written by each group commit that succeeded (the ingest batch size as the database sees it).', registers,
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000],
  })
  const batchSamples = new Histogram({
    name: METRIC_PREFIX + 'ingest_batch_samples', help: 'Samples in each telemetry batch received (stored, duplicate or refused).', registers,
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, LIMITS.maxSamplesPerBatch],
  })
  const commandSeconds = new Histogram({
    name: METRIC_PREFIX + 'command_duration_seconds', help: 'Time from sending a command to its outcome, by outcome (sent commands only).', registers,
    labelNames: ['outcome'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  })
  // Each outcome's series exists from the start: a series that appears later hides its first increase from rate().
  const series = (outcome: CommandOutcome['status']) => {
    commandSeconds.zero({ outcome })
    return commandSeconds.labels({ outcome })
  }
  const byOutcome: Record<CommandOutcome['status'], { observe(value: number): void }> = {
    succeeded: series('succeeded'), failed: series('failed'), timed_out: series('timed_out'), disconnected: series('disconnected'),
  }
  return {
    commit: (ms, rows) => {
      commitSeconds.observe(ms / 1000)
      commitRows.observe(rows)
    },
    telemetryBatch: (samples) => { batchSamples.observe(samples) },
    command: (outcome, ms) => { byOutcome[outcome].observe(ms / 1000) },
    metrics: [commitSeconds, commitRows, batchSamples, commandSeconds],
  }
}

let processMetrics: Registry | undefined

/**
 * prom-client's process metrics start a GC observer and an event-loop
 * monitor that cannot be stopped: they are made once per process, not once
 * per hub (tests start many hubs in one process).
 */
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry()
    collectDefaultMetrics({ register: processMetrics, prefix: METRIC_PREFIX })
  }
  return processMetrics
}

/** One series: its labels and its value. */
type Series = readonly [Readonly<Record<string, string>>, number]

/** Metric makers bound to one registry; each reads its value at scrape time. */
function metricsOn(register: Registry) {
  const registers = [register]
  return {
    counterSeries(name: string, help: string, labelNames: readonly string[], read: () => readonly Series[]): void {
      new Counter({
        name: METRIC_PREFIX + name, help, labelNames, registers,
        collect() {
          this.reset()
          for (const [labels, n] of read()) this.inc(labels, n)
        },
      })
    },
    gaugeSeries(name: string, help: string, labelNames: readonly string[], read: () => readonly Series[]): void {
      new Gauge({
        name: METRIC_PREFIX + name, help, labelNames, registers,
        collect() {
          this.reset()
          for (const [labels, n] of read()) this.set(labels, n)
        },
      })
    },
    counter(name: string, help: string, read: () => number): void {
      new Counter({ name: METRIC_PREFIX + name, help, registers, collect() { this.reset(); this.inc(read()) } })
    },
    counterBy(name: string, help: string, label: string, read: () => Readonly<Record<string, number>>): void {
      new Counter({
        name: METRIC_PREFIX + name, help, labelNames: [label], registers,
        collect() {
          this.reset()
          for (const [value, n] of Object.entries(read())) this.inc({ [label]: value }, n)
        },
      })
    },
    gauge(name: string, help: string, read: () => number): void {
      new Gauge({ name: METRIC_PREFIX + name, help, registers, collect() { this.set(read()) } })
    },
    gaugeBy(name: string, help: string, label: string, read: () => Readonly<Record<string, number>> | Promise<Readonly<Record<string, number>>>): void {
      new Gauge({
        name: METRIC_PREFIX + name, help, labelNames: [label], registers,
        // prom-client waits for a collect that returns a promise.
        async collect() {
          const values = await read()
          this.reset()
          for (const [value, n] of Object.entries(values)) this.set({ [label]: value }, n)
        },
      })
    },
  }
}
