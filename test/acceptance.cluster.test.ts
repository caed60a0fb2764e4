import { afterAll, describe, expect, it } from 'vitest'
import type { ChildProcess } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { SimReport } from '../devices-sim/sim.js'
import { tempDir, waitFor } from './support/hub.js'
import { killProc, runCli, startHubProc, type HubProc, type Proc } from './support/procs.js'
import { SKIP_WITHOUT_DYNSEC, startDynsecBroker, type DynsecBroker } from './support/mosquitto-broker.js'
import { SKIP_WITHOUT_POSTGRES, startPostgres, type PostgresCluster } from './support/postgres.js'

/**
 * Issue #18, the cluster's acceptance: two hub processes share one Mosquitto
 * (dynamic security) and one PostgreSQL. The simulator's fleet (50 devices,
 * mixed profile: steady, flaky and intermittent links) streams through them
 * while jobs and commands go through hub A's API; hub B, once it has taken
 * its share of the fleet's messages, is SIGKILLed and started again.
 * Afterwards, counted per seq: lost 0, duplicates 0; every job of the run
 * finished, each execution once; commands through the surviving hub
 * succeeded for reachable devices and were refused at once (DEVICE_OFFLINE)
 * for the others, and none was lost to the kill.
 */

interface Stats { ingest: { samplesStored: number }; store: string }

describe.skipIf(SKIP_WITHOUT_DYNSEC || SKIP_WITHOUT_POSTGRES)('two hub processes on one broker and one database, one SIGKILLed mid-run', () => {
  const tmp = tempDir('cluster-accept')
  // Its own temp dir: startPostgres hands it to the postgres user, who cannot enter tmp's.
  const pgDir = tempDir('cluster-accept-pg')
  const procs: Proc[] = []
  let sim: ChildProcess | undefined
  let broker: DynsecBroker | undefined
  let pg: PostgresCluster | undefined
  afterAll(async () => {
    if (sim !== undefined && sim.exitCode === null && sim.signalCode === null) sim.kill('SIGKILL')
    for (const p of procs.splice(0)) await killProc(p)
    await broker?.stop()
    await pg?.stop()
    tmp.remove()
    pgDir.remove()
  }, 60_000)

  it('loses and duplicates nothing, finishes every job, and commands through the surviving hub succeed or fail fast', async () => {
    mkdirSync(join(tmp.dir, 'broker'))
    broker = await startDynsecBroker(join(tmp.dir, 'broker'))
    pg = await startPostgres(pgDir.dir)
    // The flags a user gives each hub: the broker, the hub's account on it, the database.
    const flags = ['--broker', broker.url, '--broker-username', broker.adminUser, '--broker-password-file', broker.adminPasswordFile, '--database', pg.url]
    const a: HubProc = await startHubProc(join(tmp.dir, 'hub-a'), { extra: flags })
    procs.push(a)
    let b: HubProc = await startHubProc(join(tmp.dir, 'hub-b'), { extra: flags })
    procs.push(b)
    const stats = async (hub: HubProc) => (await hub.api<Stats>('GET', '/api/stats')).body
    expect((await stats(a)).store).toBe('postgres')

    // The fleet connects to the broker; the simulator provisions it, sends jobs and commands through hub A.
    const run = runCli(['sim', '--hub', broker.url, '--api', `http://127.0.0.1:${a.httpPort}`, '--admin-token', a.adminToken,
      '--devices', '50', '--duration', '20s', '--profile', 'mixed', '--seed', '18', '--jobs-every', '5s', '--work', join(tmp.dir, 'sim'), '--json'], 600_000)
    sim = run.child

    // Hub B takes its share of the fleet's messages; then it is killed, and its share waits for it
    // on the broker or goes to hub A when the agents send it again.
    await waitFor(async () => (await stats(b)).ingest.samplesStored > 100, 'hub B storing samples', 120_000, 200)
    await new Promise((r) => setTimeout(r, 3000))
    await killProc(b, 'SIGKILL')
    await new Promise((r) => setTimeout(r, 3000))
    b = await startHubProc(join(tmp.dir, 'hub-b'), { extra: flags })
    procs.push(b)
    await waitFor(async () => (await stats(b)).ingest.samplesStored > 0, 'hub B storing samples again', 60_000, 200)

    const r = await run.result
    expect(r.code, r.stderr.slice(-3000)).toBe(0)
    const report = JSON.parse(r.stdout) as SimReport
    expect(report.exactCount).toBe(true)
    expect(report.totals).toMatchObject({ lost: 0, duplicates: 0 })
    expect(report.totals.stored + report.totals.dropped).toBe(report.totals.generated)
    expect(report.totals.generated).toBeGreaterThan(50 * 4 * 10)
    expect(report.hubAgrees).toBe(true)
    expect(report.byProfile.map((p) => p.profile).sort()).toEqual(['flaky', 'intermittent', 'steady'])
    // Every job of the run finished, each execution once.
    expect(report.totals.jobs).toMatchObject({ lost: 0, duplicates: 0 })
    expect(report.totals.jobs.issued).toBeGreaterThanOrEqual(100)
    expect(report.totals.jobs.finished).toBe(report.totals.jobs.issued)
    // Commands through hub A: the reachable devices answered, the others were refused at once as offline.
    // A flaky device whose link dies under a command may leave it unanswered; none was ended by the kill.
    const outcomes = report.totals.commands.byOutcome
    expect(outcomes.succeeded ?? 0).toBeGreaterThan(10)
    expect(outcomes.DEVICE_OFFLINE ?? 0).toBeGreaterThan(0)
    expect(Object.keys(outcomes).filter((o) => !['succeeded', 'DEVICE_OFFLINE', 'DEVICE_DISCONNECTED', 'COMMAND_TIMEOUT'].includes(o))).toEqual([])
    expect(report.ok).toBe(true)

    // The fleet has stopped: a command through either hub, with a minute to wait, is refused at once rather than waiting it out.
    const [first] = (await a.api<{ devices: Array<{ id: string }> }>('GET', '/api/devices')).body.devices
    for (const hub of [a, b]) {
      await waitFor(async () => !(await hub.api<{ presence: { reachable: boolean } | null }>('GET', `/api/devices/${first!.id}`)).body.presence?.reachable, 'the device offline', 30_000)
      const off = await hub.api<{ error: { code: string } }>('POST', `/api/devices/${first!.id}/commands`, { name: 'sys.info', timeout: '60s' })
      expect(off.body.error.code).toBe('DEVICE_OFFLINE')
    }
  }, 600_000)
})
