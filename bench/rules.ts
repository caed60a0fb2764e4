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
    // A first round, discarded: the hub's JIT and database warm up in it.
    await measure()
    const none = await measure()
    for (let i = 0; i < o.rules; i++) {
      const r = await hub.api('POST', '/api/rules', {
        name: `bench.r${i}`, for: 'all',
        when: { telemetry: { sensor: `s${i % 50}`, op: '>', value: 99.99, clear: { op: '<', value: 10 } } },
        then: [{ event: { level: 'info', message: `rule ${i}` } }],
        maxFiringsPerMinute: 100_000,
      })
      if (r.status !== 201) throw new Error(`rule ${i}: ${r.status} ${JSON.stringify(r.body)}`)
    }
    const probe = o.reactions > 0 ? await reactionProbe(hub, url, o.reactions) : undefined
    const idle = probe ? await probe(IDLE_PROBE_BUDGET_MS) : undefined
    const stats0 = (await hub.api<{ rules: { evaluations: number; fired: number } }>('GET', '/api/stats')).body.rules
    // Under load: the probe starts once the load's warm-up is over and stops before its window closes.
    const [withRules, loaded] = await Promise.all([
      measure(),
      probe ? sleep(o.warmupS * 1000).then(() => probe(Math.max(2000, o.measureS * 1000 - 1500))) : undefined,
    ])
    const stats1 = (await hub.api<{ rules: { evaluations: number; fired: number } }>('GET', '/api/stats')).body.rules
    for (let i = 0; i < o.rules; i++) await hub.api('DELETE', `/api/rules/bench.r${i}`)
    if (probe) await hub.api('DELETE', `/api/rules/${PROBE.rule}`)
    const again = await measure()
    const pct = (x: number) => `${Math.round((x / none.samplesPerS) * 100)}%`
    console.log(table([
      ['', 'no rules', `${o.rules} rules`, 'no rules again'],
      ['samples/s stored', String(Math.round(none.samplesPerS)), `${Math.round(withRules.samplesPerS)} (${pct(withRules.samplesPerS)})`, `${Math.round(again.samplesPerS)} (${pct(again.samplesPerS)})`],
      ['hub CPU per message', `${Math.round(none.hubCpuUsPerMessage)} µs`, `${Math.round(withRules.hubCpuUsPerMessage)} µs`, `${Math.round(again.hubCpuUsPerMessage)} µs`],
      ['hub process CPU', `${Math.round(none.hubCpuPct)}%`, `${Math.round(withRules.hubCpuPct)}%`, `${Math.round(again.hubCpuPct)}%`],
    ]))
    console.log(`with rules: ${stats1.evaluations - stats0.evaluations} evaluations (rule x sample, the warm-up included), ${stats1.fired - stats0.fired} firings`)
    if (idle && loaded) printReactions(o, idle, loaded)
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
