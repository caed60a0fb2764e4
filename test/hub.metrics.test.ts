import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { encode, topics, type Sample, type TelemetryAck } from '../protocol/index.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { startAgents, waitOnline } from './support/agents.js'

/**
 * GET /metrics (issue #6): the text is checked as the Prometheus exposition
 * format by a strict parser, and its counters match the traffic the test sent.
 */

interface Sample_ { readonly name: string; readonly labels: Readonly<Record<string, string>>; readonly value: number }
interface Family { readonly name: string; type: string | undefined; help: string | undefined; readonly samples: Sample_[] }

const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/

/** The sample names a family of this type may hold [Prometheus text format 0.0.4]. */
function belongs(family: Family, name: string): boolean {
  if (name === family.name) return family.type !== 'histogram'
  const suffix = name.slice(family.name.length)
  if (!name.startsWith(family.name)) return false
  if (family.type === 'histogram') return ['_bucket', '_sum', '_count'].includes(suffix)
  if (family.type === 'summary') return ['_sum', '_count'].includes(suffix)
  return false
}

// Prometheus reads values with Go's ParseFloat, which takes NaN and Inf in any case (prom-client writes "Nan").
function parseValue(text: string, line: string): number {
  const word = text.toLowerCase()
  if (word === '+inf' || word === 'inf') return Infinity
  if (word === '-inf') return -Infinity
  if (word === 'nan') return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value "${text}" in: ${line}`)
  return Number(text)
}

/** Reads `{a="x",b="y"}` from `text` at `i` (the "{"); returns the labels and the index after "}". */
function parseLabels(text: string, i: number, line: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {}
  i++
  while (text[i] !== '}') {
    const eq = text.indexOf('=', i)
    const key = text.slice(i, eq)
    if (eq < 0 || !LABEL.test(key) || text[eq + 1] !== '"') throw new Error(`bad label at ${i} in: ${line}`)
    if (key in labels) throw new Error(`label "${key}" repeated in: ${line}`)
    let value = ''
    let j = eq + 2
    for (;; j++) {
      const c = text[j]
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`)
      if (c === '"') break
      if (c === '\\') {
        const e = text[++j]
        if (e === 'n') value += '\n'
        else if (e === '\\' || e === '"') value += e
        else throw new Error(`bad escape in: ${line}`)
      } else value += c
    }
    labels[key] = value
    i = j + 1
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new Error(`expected "," or "}" at ${i} in: ${line}`)
  }
  return [labels, i + 1]
}

/**
 * A strict parser of the Prometheus text format: every line is a HELP, a TYPE,
 * a comment or `name{labels} value [timestamp]`; HELP and TYPE come once per
 * family and before its samples; a family's samples are contiguous; no series
 * appears twice; the text ends with a newline.
 */
export function parsePrometheusText(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline')
  const families = new Map<string, Family>()
  const series = new Set<string>()
  let current: Family | undefined
  const family = (name: string): Family => {
    if (current?.name === name) return current
    if (families.has(name)) throw new Error(`family ${name} is not contiguous`)
    current = { name, type: undefined, help: undefined, samples: [] }
    families.set(name, current)
    return current
  }
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (!m) continue // a plain comment
      const [, kind, name, rest] = m as unknown as [string, 'HELP' | 'TYPE', string, string]
      if (!NAME.test(name)) throw new Error(`bad metric name in: ${line}`)
      const f = family(name)
      if (f.samples.length > 0) throw new Error(`${kind} after the samples of ${name}`)
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new Error(`second HELP for ${name}`)
        f.help = rest
      } else {
        if (f.type !== undefined) throw new Error(`second TYPE for ${name}`)
        if (!TYPES.has(rest)) throw new Error(`bad type in: ${line}`)
        f.type = rest
      }
      continue
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)
    if (!m) throw new Error(`not a sample line: ${line}`)
    const name = m[1]!
    let i = name.length
    let labels: Record<string, string> = {}
    if (line[i] === '{') [labels, i] = parseLabels(line, i, line)
    const rest = line.slice(i)
    const parts = /^ (\S+)( -?\d+)?$/.exec(rest)
    if (!parts) throw new Error(`expected " value [timestamp]" in: ${line}`)
    const value = parseValue(parts[1]!, line)
    if (!current || !belongs(current, name)) throw new Error(`sample ${name} outside its family (no HELP/TYPE before it)`)
    if (current.type === undefined) throw new Error(`sample ${name} before its TYPE`)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (series.has(key)) throw new Error(`series repeated: ${line}`)
    series.add(key)
    current.samples.push({ name, labels, value })
  }
  return families
}

/** The one sample of `name` (a histogram's `_bucket`, `_sum` or `_count` too) whose labels include `labels`. */
function valueOf(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''))
  const matches = family?.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? []
  if (matches.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${matches.length} series`)
  return matches[0]?.value
}

describe('hub /metrics', () => {
  const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000e1'
  let hub: TestHub
  let dev: MqttClient
  beforeAll(async () => {
    hub = await startTestHub()
    const token = await hub.addDevice('met-1')
    await hub.addDevice('met-2') // never connects
    dev = await connectDevice(hub.mqttUrl, 'met-1', token)
    // Online takes a birth on the connection (docs/protocol.md).
    await dev.publishAsync(topics.state('met-1'), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: 't', storeId, capabilities: ['commands'] }), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.isReachable('met-1'), 'met-1 online')
  })
  afterAll(async () => {
    await dev.endAsync()
    await hub.stop()
  })

  const url = () => `http://127.0.0.1:${hub.running.httpPort}/metrics`
  const scrape = async () => {
    const res = await fetch(url(), { headers: { authorization: `Bearer ${hub.running.adminToken}` } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    return parsePrometheusText(await res.text())
  }

  it('needs the admin token', async () => {
    const none = await fetch(url())
    expect(none.status).toBe(401)
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED')
    expect((await fetch(url(), { headers: { authorization: 'Bearer nope' } })).status).toBe(401)
  })

  it('parses as the Prometheus text format and counts what the test sent', async () => {
    const acks: TelemetryAck[] = []
    dev.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
    await dev.subscribeAsync(topics.telemetryAck('met-1'), { qos: 1 })
    const samples = (from: number, to: number): Sample[] =>
      Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, ts: 1_700_000_000_000 + (from + i) * 1000, sensor: 'temp', value: from + i }))
    // 15 samples stored; the second batch repeats 5..10, so 6 are duplicates. 21 samples
    // arrived in 2 batches, each saying how many rows its outbox held: the last says 11.
    await dev.publishAsync(topics.telemetry('met-1'), encode({ type: 'telemetry', v: 1, storeId, backlog: 40, samples: samples(1, 10) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 10), 'ack up to 10')
    await dev.publishAsync(topics.telemetry('met-1'), encode({ type: 'telemetry', v: 1, storeId, backlog: 11, samples: samples(5, 15) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 15), 'ack up to 15')
    // Two payloads that do not decode: dead letters.
    await dev.publishAsync(topics.telemetry('met-1'), Buffer.from('not json'), { qos: 1 })
    await dev.publishAsync(topics.telemetry('met-1'), Buffer.from('{"type":"telemetry"}'), { qos: 1 })
    const dead = await waitFor(async () => {
      const r = await hub.api<{ countsByReason: Record<string, number> }>('GET', '/api/dead-letters')
      return Object.values(r.body.countsByReason).reduce((a, b) => a + b, 0) === 2 ? r.body.countsByReason : undefined
    }, 'two dead letters')
    // A command to a device that is not connected is refused as offline.
    const cmd = await hub.api<{ error: { code: string } }>('POST', '/api/devices/met-2/commands', { name: 'ping' })
    expect(cmd.body.error.code).toBe('DEVICE_OFFLINE')
    // Two jobs, one of them canceled at once.
    const waiting = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'device:met-2' })
    const canceled = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'device:met-1,met-2' })
    expect((await hub.api('POST', `/api/jobs/${canceled.body.id}/cancel`)).status).toBe(200)
    expect(waiting.status).toBe(201)

    const m = await scrape()
    for (const f of m.values()) {
      expect(f.name.startsWith('rollcall_'), f.name).toBe(true)
      expect(f.help, `HELP of ${f.name}`).toBeTruthy()
      if (f.type === 'counter') expect(f.name.endsWith('_total'), f.name).toBe(true)
    }
    expect(valueOf(m, 'rollcall_ingest_samples_stored_total')).toBe(15)
    expect(valueOf(m, 'rollcall_ingest_samples_duplicate_total')).toBe(6)
    expect(valueOf(m, 'rollcall_ingest_batches_total')).toBe(2)
    expect(valueOf(m, 'rollcall_ingest_gaps_refused_total')).toBe(0)
    for (const [reason, n] of Object.entries(dead)) expect(valueOf(m, 'rollcall_dead_letters_total', { reason }), reason).toBe(n)
    expect(m.get('rollcall_dead_letters_total')!.samples.reduce((a, s) => a + s.value, 0)).toBe(2)
    // Executions of active jobs by state: the canceled job is no longer active, so only the waiting one counts.
    expect(valueOf(m, 'rollcall_executions', { state: 'queued' })).toBe(1)
    expect(valueOf(m, 'rollcall_executions', { state: 'canceled' })).toBe(0)
    expect(valueOf(m, 'rollcall_commands_total', { outcome: 'offline' })).toBe(1)
    expect(valueOf(m, 'rollcall_commands_total', { outcome: 'succeeded' })).toBe(0)
    expect(valueOf(m, 'rollcall_commands_sent_total')).toBe(0)
    expect(valueOf(m, 'rollcall_commands_pending')).toBe(0)
    expect(m.get('rollcall_devices')!.samples.map((x) => x.labels.status).sort()).toEqual(['offline', 'online'])
    expect(valueOf(m, 'rollcall_devices', { status: 'online' })).toBe(1)
    expect(valueOf(m, 'rollcall_devices', { status: 'offline' })).toBe(1)
    expect(valueOf(m, 'rollcall_broker_connections')).toBe(1)
    expect(valueOf(m, 'rollcall_broker_connects_accepted_total')).toBe(1)
    // The routing backlog: nothing waits once the test's messages are through.
    expect(m.get('rollcall_broker_queued_messages')?.type).toBe('gauge')
    expect(valueOf(m, 'rollcall_broker_queued_messages')).toBe(0)
    expect(valueOf(m, 'rollcall_writer_commits_total')).toBeGreaterThan(0)
    expect(m.get('rollcall_writer_last_commit_seconds')?.type).toBe('gauge')
    // Histograms: one observation per commit that succeeded, per telemetry batch received.
    for (const name of ['rollcall_writer_commit_seconds', 'rollcall_writer_commit_rows', 'rollcall_ingest_batch_samples', 'rollcall_command_duration_seconds']) {
      expect(m.get(name)?.type, name).toBe('histogram')
    }
    expect(valueOf(m, 'rollcall_writer_commit_seconds_count')).toBe(valueOf(m, 'rollcall_writer_commits_total'))
    expect(valueOf(m, 'rollcall_writer_commit_rows_count')).toBe(valueOf(m, 'rollcall_writer_commits_total'))
    expect(valueOf(m, 'rollcall_writer_commit_rows_sum')).toBeGreaterThanOrEqual(21)
    expect(valueOf(m, 'rollcall_writer_commit_seconds_bucket', { le: '+Inf' })).toBe(valueOf(m, 'rollcall_writer_commit_seconds_count'))
    expect(valueOf(m, 'rollcall_ingest_batch_samples_count')).toBe(2)
    expect(valueOf(m, 'rollcall_ingest_batch_samples_sum')).toBe(21)
    expect(valueOf(m, 'rollcall_ingest_batch_samples_bucket', { le: '5' })).toBe(0)
    expect(valueOf(m, 'rollcall_ingest_batch_samples_bucket', { le: '10' })).toBe(1)
    expect(valueOf(m, 'rollcall_ingest_batch_samples_bucket', { le: '25' })).toBe(2)
    // Commands not sent (offline) have no duration; every sent outcome has its series from the start.
    for (const outcome of ['succeeded', 'failed', 'timed_out', 'disconnected']) {
      expect(valueOf(m, 'rollcall_command_duration_seconds_count', { outcome }), outcome).toBe(0)
    }
    expect(valueOf(m, 'rollcall_command_duration_seconds_count', { outcome: 'offline' })).toBeUndefined()
    // Outbox backlog as last reported, summed over devices, no per-device series.
    expect(valueOf(m, 'rollcall_agent_outbox_backlog_rows')).toBe(11)
    expect(valueOf(m, 'rollcall_agent_outbox_backlog_max_rows')).toBe(11)
    expect(valueOf(m, 'rollcall_agents_with_backlog')).toBe(1)
    expect(hub.running.services.presence.get('met-1')?.backlog).toBe(11)
    expect(hub.running.services.presence.get('met-2')?.backlog).toBeUndefined()
    expect(valueOf(m, 'rollcall_jobs_updates_total', { outcome: 'applied' })).toBe(0)
    // Process metrics, with the prefix.
    expect(valueOf(m, 'rollcall_process_cpu_user_seconds_total')).toBeGreaterThan(0)
    expect(m.get('rollcall_nodejs_eventloop_lag_seconds')?.type).toBe('gauge')

    // The same counters as /api/stats: logs, stats and metrics read alike.
    const stats = await hub.api<{ ingest: { samplesStored: number; samplesDuplicate: number } }>('GET', '/api/stats')
    expect(stats.body.ingest).toMatchObject({ samplesStored: 15, samplesDuplicate: 6 })

    // A batch without the figure (an older agent) leaves the last one; a batch saying 0 clears it.
    await dev.publishAsync(topics.telemetry('met-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(16, 16) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 16), 'ack up to 16')
    expect(valueOf(await scrape(), 'rollcall_agent_outbox_backlog_rows')).toBe(11)
    await dev.publishAsync(topics.telemetry('met-1'), encode({ type: 'telemetry', v: 1, storeId, backlog: 0, samples: samples(17, 18) }), { qos: 1 })
    await waitFor(() => acks.find((a) => a.upTo === 18), 'ack up to 18')
    const after = await scrape()
    expect(valueOf(after, 'rollcall_agent_outbox_backlog_rows')).toBe(0)
    expect(valueOf(after, 'rollcall_agent_outbox_backlog_max_rows')).toBe(0)
    expect(valueOf(after, 'rollcall_agents_with_backlog')).toBe(0)
    expect(hub.running.services.presence.get('met-1')?.backlog).toBe(0)
    expect(valueOf(after, 'rollcall_ingest_batch_samples_count')).toBe(4)
    expect(valueOf(after, 'rollcall_ingest_batch_samples_sum')).toBe(24)
  })

  it('times the commands sent to a real agent, by outcome', async () => {
    const tmp = tempDir('metrics-agent')
    const token = await hub.addDevice('met-agent')
    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'met-agent', token }])
    try {
      await waitOnline(hub, ['met-agent'])
      const before = await scrape()
      const durations: number[] = []
      for (let i = 0; i < 3; i++) {
        const r = await hub.api<{ status: string; durationMs: number }>('POST', '/api/devices/met-agent/commands', { name: 'ping' })
        expect([r.status, r.body.status]).toEqual([200, 'succeeded'])
        durations.push(r.body.durationMs)
      }
      const m = await scrape()
      const count = (x: typeof m, outcome: string) => valueOf(x, 'rollcall_command_duration_seconds_count', { outcome })!
      expect(count(m, 'succeeded') - count(before, 'succeeded')).toBe(3)
      expect(count(m, 'succeeded')).toBe(valueOf(m, 'rollcall_commands_total', { outcome: 'succeeded' }))
      expect(count(m, 'failed') + count(m, 'timed_out') + count(m, 'disconnected')).toBe(0)
      const sum = valueOf(m, 'rollcall_command_duration_seconds_sum', { outcome: 'succeeded' })! - valueOf(before, 'rollcall_command_duration_seconds_sum', { outcome: 'succeeded' })!
      expect(sum).toBeCloseTo(durations.reduce((a, b) => a + b, 0) / 1000, 6)
      // Loopback pings end within 30 s: every one is in a finite bucket.
      expect(valueOf(m, 'rollcall_command_duration_seconds_bucket', { outcome: 'succeeded', le: '30' })).toBe(count(m, 'succeeded'))
    } finally {
      await agent!.stop()
      tmp.remove()
    }
  })

  it('counts rule firings, suppressions and failed actions, in all and per rule', async () => {
    const token = await hub.addDevice('met-rule')
    const raw = await connectDevice(hub.mqttUrl, 'met-rule', token)
    try {
      const before = await scrape()
      expect(valueOf(before, 'rollcall_rules', { state: 'enabled' })).toBe(0)
      expect(valueOf(before, 'rollcall_rules_fired_total')).toBe(0)
      expect(before.get('rollcall_rule_fired_total')?.type).toBe('counter')
      expect(before.get('rollcall_rule_fired_total')!.samples).toEqual([])
      const when = { telemetry: { sensor: 'vib', op: '>', value: 0.5, clear: { op: '<=', value: 0.2 } } }
      // An event action (done), with a cooldown; a command to the trigger, which is not online (failed).
      const added = [
        await hub.api('POST', '/api/rules', { name: 'met.event', for: 'device:met-rule', when, then: [{ event: { level: 'warn', message: 'vib' } }], cooldownMs: 600_000 }),
        await hub.api('POST', '/api/rules', { name: 'met.command', for: 'device:met-rule', when, then: [{ command: { name: 'motor.stop' } }] }),
        await hub.api('POST', '/api/rules', { name: 'met.off', for: 'all', when, then: [{ event: { level: 'info', message: 'never' } }], enabled: false }),
      ]
      expect(added.map((r) => r.status)).toEqual([201, 201, 201])

      const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000e2'
      const acks: TelemetryAck[] = []
      raw.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
      await raw.subscribeAsync(topics.telemetryAck('met-rule'), { qos: 1 })
      const send = async (prev: number, items: ReadonlyArray<readonly [number, number]>) => {
        await raw.publishAsync(topics.telemetry('met-rule'), encode({ type: 'telemetry', v: 1, storeId, prev,
          samples: items.map(([ts, value], i) => ({ seq: prev + i + 1, ts, sensor: 'vib', value })) }), { qos: 1 })
        await waitFor(() => acks.find((a) => a.upTo === prev + items.length), `ack up to ${prev + items.length}`)
      }
      // A burst ten minutes old (older than maxSampleAgeMs: stale), then two bursts now.
      const now = Date.now()
      await send(0, [[now - 600_000, 0.9], [now - 599_000, 0.1]])
      await send(2, [[now, 0.9], [now + 1, 0.1], [now + 2, 0.9], [now + 3, 0.1]])
      const rules = hub.running.services.rules
      await waitFor(() => rules.stats().actions.done + rules.stats().actions.failed === 3, 'the three actions carried out')

      const m = await scrape()
      expect(valueOf(m, 'rollcall_rules', { state: 'enabled' })).toBe(2)
      expect(valueOf(m, 'rollcall_rules', { state: 'disabled' })).toBe(1)
      expect(valueOf(m, 'rollcall_rules_paused')).toBe(0)
      // Two rules saw each of the six samples; the disabled one saw none.
      expect(valueOf(m, 'rollcall_rules_evaluations_total')).toBe(12)
      // met.event: stale, acted, cooldown. met.command: stale, acted, acted.
      expect(valueOf(m, 'rollcall_rules_fired_total')).toBe(3)
      expect(valueOf(m, 'rollcall_rules_suppressed_total', { reason: 'stale' })).toBe(2)
      expect(valueOf(m, 'rollcall_rules_suppressed_total', { reason: 'cooldown' })).toBe(1)
      expect(valueOf(m, 'rollcall_rules_suppressed_total', { reason: 'rate' })).toBe(0)
      expect(valueOf(m, 'rollcall_rules_suppressed_total', { reason: 'paused' })).toBe(0)
      expect(valueOf(m, 'rollcall_rules_evaluation_errors_total')).toBe(0)
      expect(valueOf(m, 'rollcall_rules_actions_total', { outcome: 'done' })).toBe(1)
      expect(valueOf(m, 'rollcall_rules_actions_total', { outcome: 'failed' })).toBe(2)
      expect(valueOf(m, 'rollcall_rules_actions', { status: 'pending' })).toBe(0)
      expect(valueOf(m, 'rollcall_rules_actions', { status: 'running' })).toBe(0)

      expect(valueOf(m, 'rollcall_rule_fired_total', { rule: 'met.event' })).toBe(1)
      expect(valueOf(m, 'rollcall_rule_fired_total', { rule: 'met.command' })).toBe(2)
      expect(valueOf(m, 'rollcall_rule_fired_total', { rule: 'met.off' })).toBe(0)
      expect(valueOf(m, 'rollcall_rule_suppressed_total', { rule: 'met.event', reason: 'stale' })).toBe(1)
      expect(valueOf(m, 'rollcall_rule_suppressed_total', { rule: 'met.event', reason: 'cooldown' })).toBe(1)
      expect(valueOf(m, 'rollcall_rule_suppressed_total', { rule: 'met.command', reason: 'stale' })).toBe(1)
      expect(valueOf(m, 'rollcall_rule_suppressed_total', { rule: 'met.command', reason: 'cooldown' })).toBe(0)
      expect(valueOf(m, 'rollcall_rule_actions_failed_total', { rule: 'met.event' })).toBe(0)
      expect(valueOf(m, 'rollcall_rule_actions_failed_total', { rule: 'met.command' })).toBe(2)
      expect(valueOf(m, 'rollcall_rule_paused', { rule: 'met.command' })).toBe(0)
      // The per-rule counters are the ones rule list shows.
      const listed = await hub.api<{ rules: Array<{ name: string; counters: { fired: number; actionsFailed: number } }> }>('GET', '/api/rules')
      for (const r of listed.body.rules) {
        expect(valueOf(m, 'rollcall_rule_fired_total', { rule: r.name }), r.name).toBe(r.counters.fired)
        expect(valueOf(m, 'rollcall_rule_actions_failed_total', { rule: r.name }), r.name).toBe(r.counters.actionsFailed)
      }

      // A removed rule's series go; the totals since the start stay.
      expect((await hub.api('DELETE', '/api/rules/met.command')).status).toBe(204)
      const after = await scrape()
      expect(valueOf(after, 'rollcall_rule_fired_total', { rule: 'met.command' })).toBeUndefined()
      expect(valueOf(after, 'rollcall_rule_fired_total', { rule: 'met.event' })).toBe(1)
      expect(valueOf(after, 'rollcall_rules_fired_total')).toBe(3)
      expect(valueOf(after, 'rollcall_rules', { state: 'enabled' })).toBe(1)
    } finally {
      await raw.endAsync()
    }
  })

  it('answers without the token when the hub sets metricsPublic', async () => {
    const open = await startTestHub({ metricsPublic: true })
    try {
      const res = await fetch(`http://127.0.0.1:${open.running.httpPort}/metrics`)
      expect(res.status).toBe(200)
      const m = parsePrometheusText(await res.text())
      expect(valueOf(m, 'rollcall_ingest_samples_stored_total')).toBe(0)
      // Its own registry: the first hub's counters are not here.
      expect(valueOf(m, 'rollcall_devices', { status: 'offline' })).toBe(0)
      expect((await open.api('GET', '/api/stats')).status).toBe(200)
      expect((await fetch(`http://127.0.0.1:${open.running.httpPort}/api/stats`)).status).toBe(401)
    } finally {
      await open.stop()
    }
  })

  it('the parser refuses what is not the format', () => {
    expect(() => parsePrometheusText('x 1\n')).toThrow(/outside its family/)
    expect(() => parsePrometheusText('# TYPE x counter\nx 1')).toThrow(/newline/)
    expect(() => parsePrometheusText('# TYPE x counter\nx{a="1"} one\n')).toThrow(/bad value/)
    expect(() => parsePrometheusText('# TYPE x counter\nx 1\n# HELP x late\n')).toThrow(/after the samples/)
    expect(() => parsePrometheusText('# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n')).toThrow(/repeated/)
    expect(() => parsePrometheusText('# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\n# TYPE x gauge\n')).toThrow(/contiguous/)
    expect(parsePrometheusText('# HELP x a \\n b\n# TYPE x gauge\nx{a="q\\"\\\\"} +Inf 123\n').get('x')!.samples[0]).toEqual({ name: 'x', labels: { a: 'q"\\' }, value: Infinity })
  })
})
