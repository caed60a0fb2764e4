import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { table } from '../cli/output.js'
import { benchHubConfig } from './fleet.js'
import { startHubProcess, type HubProcess } from './hub-process.js'
import { startDynsecBroker, type DynsecBroker } from './mosquitto-dynsec.js'

/**
 * `npm run bench -- accounts`: how long registering devices takes when the
 * hub keeps their accounts in Mosquitto's dynamic-security plugin (issue #18),
 * step by step as the fleet grows, beside the same steps on a hub with its
 * embedded broker (which only writes its own registry), in the same run.
 * Mosquitto 2.0's plugin rewrites its whole file after every change, so the
 * cost per device grows with the fleet: the figure to plan a fleet's
 * registration by. Each step is one bulk request (POST /api/devices/bulk).
 */
export interface AccountsOptions {
  /** Devices added per step, e.g. 100,200,400: the fleet grows by each in turn. */
  readonly steps: readonly number[]
}

interface Row { readonly system: string; readonly added: number; readonly total: number; readonly ms: number; readonly fileKiB: number | undefined }

async function runSteps(system: string, hub: HubProcess, steps: readonly number[], file: string | undefined): Promise<Row[]> {
  const rows: Row[] = []
  let total = 0
  for (const n of steps) {
    const devices = Array.from({ length: n }, (_, i) => ({ id: `acct-${String(total + i).padStart(6, '0')}` }))
    const t0 = performance.now()
    const r = await hub.api('POST', '/api/devices/bulk', { devices })
    const ms = performance.now() - t0
    if (r.status !== 200) throw new Error(`${system}: bulk registration answered ${r.status}: ${JSON.stringify(r.body)}`)
    total += n
    const row = { system, added: n, total, ms, fileKiB: file === undefined ? undefined : statSync(file).size / 1024 }
    rows.push(row)
    process.stderr.write(`  ${system}: ${n} devices added (${total} in all) in ${(ms / 1000).toFixed(1)} s, ${(ms / n).toFixed(1)} ms per device\n`)
  }
  return rows
}

export async function runAccountsBench(o: AccountsOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-accounts-'))
  const rows: Row[] = []
  let broker: DynsecBroker | undefined
  const hubs: HubProcess[] = []
  try {
    process.stderr.write(`accounts bench: registering ${o.steps.join(', ')} devices in turn, one bulk request each\n`)
    mkdirSync(join(work, 'embedded'))
    const embedded = await startHubProcess(join(work, 'embedded'), ['--config', benchHubConfig(join(work, 'embedded'))])
    hubs.push(embedded)
    rows.push(...await runSteps('embedded broker', embedded, o.steps, undefined))
    await embedded.stop()

    mkdirSync(join(work, 'mosquitto'))
    broker = await startDynsecBroker(join(work, 'mosquitto'))
    mkdirSync(join(work, 'hub'))
    const config = benchHubConfig(join(work, 'hub'), { broker: broker.url, brokerUsername: broker.adminUser, brokerPasswordFile: broker.adminPasswordFile })
    const external = await startHubProcess(join(work, 'hub'), ['--config', config])
    hubs.push(external)
    rows.push(...await runSteps('mosquitto dynamic security', external, o.steps, join(work, 'mosquitto', 'dynamic-security.json')))
  } finally {
    for (const h of hubs) await h.stop()
    await broker?.stop()
    rmSync(work, { recursive: true, force: true })
  }
  const out: string[][] = [['accounts kept by', 'devices added', 'fleet after', 'time', 'per device', 'plugin file']]
  for (const r of rows) {
    out.push([r.system, String(r.added), String(r.total), `${(r.ms / 1000).toFixed(1)} s`, `${(r.ms / r.added).toFixed(1)} ms`, r.fileKiB === undefined ? '' : `${Math.round(r.fileKiB)} KiB`])
  }
  process.stdout.write(`${table(out)}\n`)
}
