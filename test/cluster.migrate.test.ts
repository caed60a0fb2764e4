import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import mqtt from 'mqtt'
import type { Agent } from '../agent/agent.js'
import { freePort } from '../common/free-port.js'
import { silentLogger } from '../common/logger.js'
import { topics } from '../protocol/index.js'
import { migrateToPostgres } from '../hub/migrate.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { expectStoredOnce, registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { runCli } from './support/procs.js'
import { SKIP_WITHOUT_POSTGRES, startPostgres, type PostgresCluster } from './support/postgres.js'
import { SKIP_WITHOUT_DYNSEC, startDynsecBroker, type DynsecBroker } from './support/mosquitto-broker.js'

/**
 * Issue #18, moving over: `rollcall migrate` copies an embedded hub's state
 * (its SQLite file) into PostgreSQL, and a hub started on that database
 * carries on: the devices reconnect with the tokens they have, each stream
 * resumes at its mark (nothing lost, nothing stored twice, the samples taken
 * while the hub was down included), and the jobs, commands, schedules, dead
 * letters and observers are there as they were.
 */

const rollcall = (args: string[]) => runCli(args, 120_000).result

describe.skipIf(SKIP_WITHOUT_POSTGRES)('rollcall migrate', () => {
  const tmp = tempDir('migrate')
  // Its own temp dir: startPostgres hands it to the postgres user, who cannot enter tmp's.
  const pgDir = tempDir('migrate-pg')
  let pg: PostgresCluster
  const agents: Agent[] = []
  const hubs: TestHub[] = []
  beforeAll(async () => { pg = await startPostgres(pgDir.dir) }, 60_000)
  afterAll(async () => {
    await Promise.allSettled(agents.map((a) => a.stop()))
    for (const h of hubs) await h.stop()
    await pg?.stop()
    tmp.remove()
    pgDir.remove()
  }, 60_000)

  it('moves a hub with history; its agents reconnect to the hub on PostgreSQL with their tokens and lose nothing', async () => {
    const oldDir = join(tmp.dir, 'old-hub')
    const mqttPort = await freePort()
    const old = await startTestHub({ mqttPort }, oldDir)
    hubs.push(old)
    const devices = await registerDevices(old, 'mig', 3, 'mig')
    const observer = await old.api<{ token: string; username: string }>('POST', '/api/observers', { name: 'watcher' })
    const agentDir = join(tmp.dir, 'agents')
    const streaming = { sampleIntervalMs: 20, sensors: [{ name: 'temp', model: 'sine' as const, min: 10, max: 30, periodMs: 5000 }] }
    agents.push(...await startAgents(old.mqttUrl, agentDir, devices, streaming))
    await waitOnline(old, devices.map((d) => d.id), 30_000)

    // History of every kind: a finished job, commands, a schedule, a dead letter.
    const job = await old.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'group:mig', payload: { before: 'the move' } })
    const jobBefore = await waitJobDone(old, job.body.id, 30_000)
    const command = await old.api<{ id: string; status: string }>('POST', `/api/devices/${devices[0]!.id}/commands`, { name: 'sys.info', timeout: '10s' })
    expect(command.body.status).toBe('succeeded')
    const schedule = await old.api<{ id: number }>('POST', '/api/schedules', { name: 'nightly', cron: '0 3 * * *', job: { name: 'echo', target: 'group:mig' } })
    // A schedule removed before the move: its id stays used (jobs may name it).
    const removed = await old.api<{ id: number }>('POST', '/api/schedules', { name: 'gone', cron: '0 4 * * *', job: { name: 'echo', target: 'group:mig' } })
    expect((await old.api('DELETE', '/api/schedules/gone')).status).toBe(204)
    // A device without an agent sends what is not JSON: dead-lettered with its reason.
    const rawToken = await old.addDevice('mig-raw')
    const raw = await connectDevice(old.mqttUrl, 'mig-raw', rawToken)
    await raw.publishAsync(topics.telemetry('mig-raw'), Buffer.from('{not json'), { qos: 1 })
    await raw.endAsync()
    await waitFor(async () => (await old.api<{ deadLetters: unknown[] }>('GET', '/api/dead-letters')).body.deadLetters.length > 0, 'the dead letter', 10_000)
    await new Promise((r) => setTimeout(r, 1000))

    // While the hub runs, the move is refused: what it stored meanwhile would be left behind.
    await expect(migrateToPostgres({ dataDir: oldDir, url: pg.url, withoutRules: false, logger: silentLogger() })).rejects.toThrow(/a hub is running on .*: stop it first/)
    const before = {
      devices: (await old.api<{ devices: Array<{ id: string; group: string | null }> }>('GET', '/api/devices')).body.devices.map((d) => ({ id: d.id, group: d.group })),
      commands: (await old.api<{ commands: Array<{ id: string; status: string }> }>('GET', `/api/devices/${devices[0]!.id}/commands`)).body.commands.map((c) => ({ id: c.id, status: c.status })),
      deadLetters: (await old.api<{ deadLetters: Array<{ id: number; reason: string }> }>('GET', '/api/dead-letters')).body.deadLetters.map((d) => ({ id: d.id, reason: d.reason })),
    }
    await old.stop()
    hubs.splice(0)
    // Two records a hub can leave that the hub's API cannot make on demand: a command left in flight
    // by a hub that died, and a device's error text with a NUL in it (SQLite keeps it; PostgreSQL's text cannot).
    const file = new Database(join(oldDir, 'hub.db'))
    const insert = file.prepare(`INSERT INTO commands (id, device_id, name, status, created_at, sent_at, expires_at, finished_at, error_code, error_message)
      VALUES (?, ?, 'sys.info', ?, ?, ?, ?, ?, ?, ?)`)
    const t = Date.now()
    insert.run('left-in-flight', devices[0]!.id, 'sent', t, t, t + 10_000, null, null, null)
    insert.run('nul-in-error', devices[0]!.id, 'failed', t, t, t + 10_000, t, 'HANDLER_ERROR', 'bad\u0000thing')
    file.close()
    // The agents go on sampling with the hub away: their outboxes hold it.
    await new Promise((r) => setTimeout(r, 1000))

    const moved = await rollcall(['migrate', '--from', oldDir, '--to', pg.url, '--json'])
    expect(moved.code, moved.stderr).toBe(0)
    const report = JSON.parse(moved.stdout) as { tables: Array<{ table: string; rows: number }>; commandsSettled: number }
    const rows = Object.fromEntries(report.tables.map((x) => [x.table, x.rows]))
    expect(rows).toMatchObject({ devices: 4, observers: 1, jobs: 1, executions: 3, schedules: 1, dead_letters: 1, commands: before.commands.length + 2 })
    expect(report.commandsSettled).toBe(1)
    expect(rows.samples).toBeGreaterThan(100)
    // A second move into the same database is refused; it would mix two histories.
    const again = await rollcall(['migrate', '--from', oldDir, '--to', pg.url])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/the database holds a hub's state already \(rows in devices, observers, .*\): migrate into a new, empty database/)

    // The hub on PostgreSQL, where the devices look for it: they reconnect with their own tokens.
    const moved2 = await startTestHub({ mqttPort, database: pg.url }, join(tmp.dir, 'new-hub'))
    hubs.push(moved2)
    await waitOnline(moved2, devices.map((d) => d.id), 30_000)
    expect((await moved2.api<{ devices: Array<{ id: string; group: string | null }> }>('GET', '/api/devices')).body.devices.map((d) => ({ id: d.id, group: d.group }))).toEqual(before.devices)
    const jobAfter = await moved2.running.services.jobs.get(job.body.id, { limit: 100 })
    expect(jobAfter.executions.map((e) => [e.deviceId, e.state, e.attempt])).toEqual(jobBefore.executions.map((e) => [e.deviceId, e.state, e.attempt]))
    const commandsAfter = (await moved2.api<{ commands: Array<{ id: string; status: string; error: { code: string; message: string } | null }> }>('GET', `/api/devices/${devices[0]!.id}/commands`)).body.commands
    expect(commandsAfter.filter((c) => !['left-in-flight', 'nul-in-error'].includes(c.id)).map((c) => ({ id: c.id, status: c.status }))).toEqual(before.commands)
    // Left in flight: ended as the hub's restart would have ended it. The NUL: shown as ␀.
    expect(commandsAfter.find((c) => c.id === 'left-in-flight')).toMatchObject({ status: 'disconnected', error: { code: 'HUB_RESTART' } })
    expect(commandsAfter.find((c) => c.id === 'nul-in-error')).toMatchObject({ status: 'failed', error: { code: 'HANDLER_ERROR', message: 'bad\u2400thing' } })
    expect((await moved2.api<{ deadLetters: Array<{ id: number; reason: string }> }>('GET', '/api/dead-letters')).body.deadLetters.map((d) => ({ id: d.id, reason: d.reason }))).toEqual(before.deadLetters)
    const schedules = (await moved2.api<{ schedules: Array<{ id: number; name: string }> }>('GET', '/api/schedules')).body.schedules
    expect(schedules.map((s) => [s.id, s.name])).toEqual([[schedule.body.id, 'nightly']])
    // New rows go on after the copied ones: a new schedule takes neither a moved one's id nor a removed one's.
    const next = await moved2.api<{ id: number }>('POST', '/api/schedules', { name: 'weekly', cron: '0 3 * * 0', job: { name: 'echo', target: 'group:mig' } })
    expect(removed.body.id).toBeGreaterThan(schedule.body.id)
    expect(next.body.id).toBeGreaterThan(removed.body.id)
    // The observer's token works too.
    const watcher = await mqtt.connectAsync(moved2.mqttUrl, { username: observer.body.username, password: observer.body.token, reconnectPeriod: 0 })
    await watcher.endAsync()
    // And the moved hub does what a hub does: a new job, a command.
    const job2 = await moved2.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'group:mig', payload: { after: 'the move' } })
    expect((await waitJobDone(moved2, job2.body.id, 30_000)).executions.map((e) => e.state)).toEqual(['succeeded', 'succeeded', 'succeeded'])
    expect((await moved2.api<{ status: string }>('POST', `/api/devices/${devices[1]!.id}/commands`, { name: 'sys.info', timeout: '10s' })).body.status).toBe('succeeded')

    // Every sample, from before the move, while the hub was away, and after: stored once.
    await Promise.all(agents.splice(0).map((a) => a.stop()))
    // The same ledgers, sampling nothing, until every outbox is drained; then each sample counted once.
    await expectStoredOnce(moved2.api, moved2.mqttUrl, agentDir, devices, streaming)
  }, 180_000)
})

describe.skipIf(SKIP_WITHOUT_POSTGRES || SKIP_WITHOUT_DYNSEC)('moving onto an external Mosquitto', () => {
  const tmp = tempDir('handover')
  const pgDir = tempDir('handover-pg')
  let pg: PostgresCluster
  let broker: DynsecBroker
  const agents: Agent[] = []
  const hubs: TestHub[] = []
  beforeAll(async () => {
    pg = await startPostgres(pgDir.dir)
    mkdirSync(join(tmp.dir, 'broker'))
    broker = await startDynsecBroker(join(tmp.dir, 'broker'))
  }, 60_000)
  afterAll(async () => {
    await Promise.allSettled(agents.map((a) => a.stop()))
    for (const h of hubs) await h.stop()
    await broker?.stop()
    await pg?.stop()
    tmp.remove()
    pgDir.remove()
  }, 60_000)

  it('hands each account over as its device connects, revokes a replaced token; the agents then stream through the broker with the tokens they have, losing nothing', async () => {
    const account = { brokerUsername: broker.adminUser, brokerPasswordFile: broker.adminPasswordFile }
    const oldDir = join(tmp.dir, 'old-hub')
    const old = await startTestHub({ handoverBroker: broker.url, ...account }, oldDir)
    hubs.push(old)
    const devices = await registerDevices(old, 'hand', 3)
    const observer = await old.api<{ token: string; username: string }>('POST', '/api/observers', { name: 'reader' })
    // Before they connect, the broker knows none of them.
    const refusedBy = async (username: string, password: string, clientId?: string) => {
      try {
        const c = await mqtt.connectAsync(broker.url, { username, password, ...(clientId !== undefined ? { clientId } : {}), reconnectPeriod: 0, connectTimeout: 5000 })
        await c.endAsync()
        return 'connected'
      } catch (err) {
        return (err as Error).message
      }
    }
    expect(await refusedBy(devices[0]!.id, devices[0]!.token, devices[0]!.id)).toMatch(/Not authorized|Bad User Name/i)
    const agentDir = join(tmp.dir, 'agents')
    const streaming = { sampleIntervalMs: 20, sensors: [{ name: 'temp', model: 'sine' as const, min: 10, max: 30, periodMs: 5000 }] }
    agents.push(...await startAgents(old.mqttUrl, agentDir, devices, streaming))
    const watcher = await mqtt.connectAsync(old.mqttUrl, { username: observer.body.username, password: observer.body.token, reconnectPeriod: 0 })
    await watcher.endAsync()
    await waitFor(() => (old.running.services.stats().handover as { handedOver: number }).handedOver === 4, 'four accounts handed over', 60_000)
    for (const d of devices) expect(await refusedBy(d.id, d.token, d.id)).toBe('connected')
    expect(await refusedBy(observer.body.username, observer.body.token)).toBe('connected')
    // A wrong token is still refused there, as here.
    expect(await refusedBy(devices[0]!.id, devices[1]!.token, devices[0]!.id)).toMatch(/Not authorized|Bad User Name/i)
    // A token replaced here stops working there at once, before the device has connected with its new one.
    const spareToken = await old.addDevice('hand-spare')
    const spare = await connectDevice(old.mqttUrl, 'hand-spare', spareToken)
    await spare.endAsync()
    const handover = () => old.running.services.stats().handover as { handedOver: number; revoked: number }
    await waitFor(() => handover().handedOver === 5, 'the spare device handed over', 60_000)
    expect(await refusedBy('hand-spare', spareToken, 'hand-spare')).toBe('connected')
    expect((await old.api('POST', '/api/devices/hand-spare/token')).status).toBe(200)
    await waitFor(() => handover().revoked === 1, 'the replaced token revoked there', 60_000)
    expect(await refusedBy('hand-spare', spareToken, 'hand-spare')).toMatch(/Not authorized|Bad User Name/i)

    // The move: the agents stop (their outboxes keep what the hub has not acked), the hub stops, its state moves.
    await Promise.all(agents.splice(0).map((a) => a.stop()))
    await old.stop()
    hubs.splice(0)
    const moved = await migrateToPostgres({ dataDir: oldDir, url: pg.url, withoutRules: false, logger: silentLogger() })
    expect(moved.tables.find((t) => t.table === 'devices')?.rows).toBe(4)
    const cluster = await startTestHub({ broker: broker.url, ...account, database: pg.url, brokerClientId: 'rollcall-hub-cluster' }, join(tmp.dir, 'cluster-hub'))
    hubs.push(cluster)
    // The same agents, the same ledgers and tokens; only the broker's address is new.
    agents.push(...await startAgents(broker.url, agentDir, devices, streaming))
    await waitOnline(cluster, devices.map((d) => d.id), 30_000)
    await waitFor(() => cluster.running.services.telemetry.counters().samplesStored > 0, 'samples through the broker', 30_000)
    await Promise.all(agents.splice(0).map((a) => a.stop()))
    // The same ledgers, sampling nothing, until every outbox is drained; then each sample counted once.
    await expectStoredOnce(cluster.api, broker.url, agentDir, devices, streaming)
  }, 180_000)
})
