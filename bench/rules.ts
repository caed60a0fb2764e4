import { randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { table } from '../cli/output.js'
import { driveTelemetry, type DrivenDevice, type TransportFigures } from './ingest-tls.js'
import { startHubProcess, type HubProcess } from './hub-process.js'
import { reactionRule, runReactionProbe, type ReactionFigures } from './reaction-probe.js'

/**
 * `npm run bench -- rules`: what rules cost ingest (issue #17: with 100 rules
 * the hub stores at least 90% of what it stores with none). One hub process;
 * the same MQTT.js devices send telemetry batches as fast as it takes them
 * (bench/ingest-tls.ts, driveTelemetry), first with no rule, then with
 * `rules` rules on the batches' sensors, then with none again (removed), so
 * the machine's drift shows beside the difference. The rules watch every
 * device; a few fire (a threshold the random values cross now and then,
 * with a clear far below it), each publishing an event.
 *
 * And the reaction time, sample ts to command at the device
 * (bench/reaction-probe.ts): one more device crosses a rule of its own
 * `reactions` times, with the 100 rules in place, first with no other load,
 * then while the devices above send as fast as the hub takes them. Printed
 * beside the hub's group-commit window (`flushDelayMs`, given to the hub in
 * its config file) and the target, p99 under 50 ms plus that window.
 */
export interface RulesBenchOptions {
  readonly devices: number
  readonly rules: number
  readonly samplesPerMessage: number
  readonly warmupS: number
  readonly measureS: number
  /** Rounds of (no rules, rules), alternated. */
  readonly rounds: number
  /** Crossings timed per reaction measurement; 0: the reaction time is not measured. */
  readonly reactions: number
  /** The hub's group-commit window (its `flushDelayMs`). */
  readonly flushDelayMs: number
}

/** The probe's device, its sensor and its rule; not one of the load's sensors (s0..s49), so the 100 rules do not watch it. */
const PROBE = { deviceId: 'rules-bench-probe', sensor: 'probe', rule: 'bench.reaction' } as const
/** The idle measurement stops after this long, whatever it counted. */
const IDLE_PROBE_BUDGET_MS = 20_000

export async function runRulesBench(o: RulesBenchOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-rules-'))
  // The window is given to the hub, so the figure printed beside the reaction time is the one it ran with.
  mkdirSync(join(work, 'hub'))
  writeFileSync(join(work, 'hub.json'), JSON.stringify({ flushDelayMs: o.flushDelayMs }))
  const hub = await startHubProcess(join(work, 'hub'), ['--config', join(work, 'hub.json')])
  try {
    console.log(`rules bench: ${o.devices} devices, ${o.samplesPerMessage} samples per message as fast as the hub takes them; ${o.rules} rules against none; warmup ${o.warmupS}s, measure ${o.measureS}s; group-commit window ${o.flushDelayMs} ms`)
    const devices: DrivenDevice[] = await Promise.all(Array.from({ length: o.devices }, async (_, i) => {
      const id = `rules-bench-${String(i).padStart(4, '0')}`
      const r = await hub.api<{ token: string }>('POST', '/api/devices', { id })
      if (r.status !== 201) throw new Error(`provisioning ${id}: ${r.status} ${JSON.stringify(r.body)}`)
      return { id, token: r.body.token, storeId: randomUUID(), seq: 0 }
    }))
    const url = `mqtt://127.0.0.1:${hub.mqttPort}`
    const measure = async (): Promise<TransportFigures> => (await driveTelemetry(hub, devices, url, {}, o)).figures
    const addRules = async (): Promise<void> => {
      for (let i = 0; i < o.rules; i++) {
        const r = await hub.api('POST', '/api/rules', {
          name: `bench.r${i}`, for: 'all',
          when: { telemetry: { sensor: `s${i % 50}`, op: '>', value: 99.99, clear: { op: '<', value: 10 } } },
          then: [{ event: { level: 'info', message: `rule ${i}` } }],
          maxFiringsPerMinute: 100_000,
        })
        if (r.status !== 201) throw new Error(`rule ${i}: ${r.status} ${JSON.stringify(r.body)}`)
      }
    }
    const removeRules = async (): Promise<void> => {
      for (let i = 0; i < o.rules; i++) await hub.api('DELETE', `/api/rules/bench.r${i}`)
    }
    const ruleStats = async () => (await hub.api<{ rules: { evaluations: number; fired: number } }>('GET', '/api/stats')).body.rules
    // A first round, discarded: the hub's JIT and database warm up in it.
    await measure()
    // Then rounds of the two side by side, in turns: none then rules, rules then none, ... The rate
    // drifts on this machine by tens of percent over a minute, and falls as the database grows, so
    // whichever went second would lose; taking turns lets the drift fall on both sides alike.
    const rounds: Array<{ none: TransportFigures; rules: TransportFigures }> = []
    let evaluations = 0
    let fired = 0
    const measureRules = async (): Promise<TransportFigures> => {
      await addRules()
      const before = await ruleStats()
      const f = await measure()
      const after = await ruleStats()
      evaluations += after.evaluations - before.evaluations
      fired += after.fired - before.fired
      await removeRules()
      return f
    }
    for (let r = 0; r < o.rounds; r++) {
      if (r % 2 === 0) {
        const none = await measure()
        rounds.push({ none, rules: await measureRules() })
      } else {
        const withRules = await measureRules()
        rounds.push({ none: await measure(), rules: withRules })
      }
    }
    const sum = (pick: (f: TransportFigures) => number, side: 'none' | 'rules') => rounds.reduce((acc, x) => acc + pick(x[side]), 0) / rounds.length
    const pct = (x: number, of: number) => `${Math.round((x / of) * 100)}%`
    console.log(table([
      ['', 'no rules', `${o.rules} rules`],
      ...rounds.map((x, i) => [`round ${i + 1} (${i % 2 === 0 ? 'none first' : 'rules first'}): samples/s`, String(Math.round(x.none.samplesPerS)), `${Math.round(x.rules.samplesPerS)} (${pct(x.rules.samplesPerS, x.none.samplesPerS)})`]),
      ['all rounds: samples/s stored', String(Math.round(sum((f) => f.samplesPerS, 'none'))), `${Math.round(sum((f) => f.samplesPerS, 'rules'))} (${pct(sum((f) => f.samplesPerS, 'rules'), sum((f) => f.samplesPerS, 'none'))})`],
      ['all rounds: hub CPU per message', `${Math.round(sum((f) => f.hubCpuUsPerMessage, 'none'))} µs`, `${Math.round(sum((f) => f.hubCpuUsPerMessage, 'rules'))} µs`],
      ['all rounds: hub process CPU', `${Math.round(sum((f) => f.hubCpuPct, 'none'))}%`, `${Math.round(sum((f) => f.hubCpuPct, 'rules'))}%`],
    ]))
    console.log(`with rules: ${evaluations} evaluations (rule x sample, the warm-ups included), ${fired} firings`)

    // The reaction time, with the 100 rules in place: idle, then under the same load (a window of its
    // own, not compared: the probe is one more process on the same two cores).
    if (o.reactions === 0) return
    await addRules()
    const probe = await reactionProbe(hub, url, o.reactions)
    const idle = await probe(IDLE_PROBE_BUDGET_MS)
    // The probe starts once the load's warm-up is over and stops before its window closes.
    const [, loaded] = await Promise.all([measure(), sleep(o.warmupS * 1000).then(() => probe(Math.max(2000, o.measureS * 1000 - 1500)))])
    printReactions(o, idle, loaded)
  } finally {
    await hub.stop()
    rmSync(work, { recursive: true, force: true })
  }
}

/** Provisions the probe's device and installs its rule; returns a function that runs one probe for up to `budgetMs`. */
async function reactionProbe(hub: HubProcess, url: string, crossings: number): Promise<(budgetMs: number) => Promise<ReactionFigures>> {
  const d = await hub.api<{ token: string }>('POST', '/api/devices', { id: PROBE.deviceId })
  if (d.status !== 201) throw new Error(`provisioning ${PROBE.deviceId}: ${d.status} ${JSON.stringify(d.body)}`)
  const r = await hub.api('POST', '/api/rules', reactionRule(PROBE.rule, PROBE.deviceId, PROBE.sensor))
  if (r.status !== 201) throw new Error(`rule ${PROBE.rule}: ${r.status} ${JSON.stringify(r.body)}`)
  return (budgetMs) => runReactionProbe({ url, deviceId: PROBE.deviceId, token: d.body.token, sensor: PROBE.sensor, crossings, warmup: 10, budgetMs, commandTimeoutMs: 2000 })
}

function printReactions(o: RulesBenchOptions, idle: ReactionFigures, loaded: ReactionFigures): void {
  const targetMs = 50 + o.flushDelayMs
  const ms = (x: number) => `${x.toFixed(1)} ms`
  const row = (label: string, f: ReactionFigures) => [label, String(f.count), String(f.missed), ms(f.p50Ms), ms(f.p99Ms), ms(f.maxMs), f.count > 0 && f.missed === 0 && f.p99Ms < targetMs ? 'yes' : 'NO']
  console.log(`\nreaction: sample ts -> the rule's command at the device (one device, a rule of its own, ${o.rules} rules beside it); group-commit window (flushDelayMs) ${o.flushDelayMs} ms, target p99 < 50 ms + window = ${targetMs} ms`)
  console.log(table([
    ['', 'crossings', 'missed', 'p50', 'p99', 'max', `p99 < ${targetMs} ms`],
    row('no other load', idle),
    row(`${o.devices} devices sending as fast as the hub takes them`, loaded),
  ]))
}
