import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { table } from '../cli/output.js'
import { driveTelemetry, type DrivenDevice, type TransportFigures } from './ingest-tls.js'
import { startHubProcess } from './hub-process.js'

/**
 * `npm run bench -- rules`: what rules cost ingest (issue #17: with 100 rules
 * the hub stores at least 90% of what it stores with none). One hub process;
 * the same MQTT.js devices send telemetry batches as fast as it takes them
 * (bench/ingest-tls.ts, driveTelemetry), first with no rule, then with
 * `rules` rules on the batches' sensors, then with none again (removed), so
 * the machine's drift shows beside the difference. The rules watch every
 * device; a few fire (a threshold the random values cross now and then,
 * with a clear far below it), each publishing an event.
 */
export interface RulesBenchOptions {
  readonly devices: number
  readonly rules: number
  readonly samplesPerMessage: number
  readonly warmupS: number
  readonly measureS: number
}

export async function runRulesBench(o: RulesBenchOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-rules-'))
  const hub = await startHubProcess(join(work, 'hub'))
  try {
    console.log(`rules bench: ${o.devices} devices, ${o.samplesPerMessage} samples per message as fast as the hub takes them; ${o.rules} rules against none; warmup ${o.warmupS}s, measure ${o.measureS}s`)
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
    const stats0 = (await hub.api<{ rules: { evaluations: number; fired: number } }>('GET', '/api/stats')).body.rules
    const withRules = await measure()
    const stats1 = (await hub.api<{ rules: { evaluations: number; fired: number } }>('GET', '/api/stats')).body.rules
    for (let i = 0; i < o.rules; i++) await hub.api('DELETE', `/api/rules/bench.r${i}`)
    const again = await measure()
    const pct = (x: number) => `${Math.round((x / none.samplesPerS) * 100)}%`
    console.log(table([
      ['', 'no rules', `${o.rules} rules`, 'no rules again'],
      ['samples/s stored', String(Math.round(none.samplesPerS)), `${Math.round(withRules.samplesPerS)} (${pct(withRules.samplesPerS)})`, `${Math.round(again.samplesPerS)} (${pct(again.samplesPerS)})`],
      ['hub CPU per message', `${Math.round(none.hubCpuUsPerMessage)} µs`, `${Math.round(withRules.hubCpuUsPerMessage)} µs`, `${Math.round(again.hubCpuUsPerMessage)} µs`],
      ['hub process CPU', `${Math.round(none.hubCpuPct)}%`, `${Math.round(withRules.hubCpuPct)}%`, `${Math.round(again.hubCpuPct)}%`],
    ]))
    console.log(`with rules: ${stats1.evaluations - stats0.evaluations} evaluations (rule x sample, the warm-up included), ${stats1.fired - stats0.fired} firings`)
  } finally {
    await hub.stop()
    rmSync(work, { recursive: true, force: true })
  }
}
