import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Agent } from '../agent/agent.js'
import type { HubConfig } from '../hub/config.js'
import { loadHubConfig } from '../hub/config.js'
import { connectionConfig } from '../hub/storage/postgres/pool.js'
import pg from 'pg'
import { startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { registerDevices, startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { SKIP_WITHOUT_DYNSEC, startDynsecBroker, type DynsecBroker } from './support/mosquitto-broker.js'
import { SKIP_WITHOUT_POSTGRES, startPostgres, type PostgresCluster } from './support/postgres.js'

/**
 * Issue #18: two hubs with their state in one PostgreSQL, on one external
 * Mosquitto, as a cluster runs: whatever is done through one hub is seen
 * and carried out through the other. (The hubs run in this process; the
 * kill of a hub process mid-run is test/acceptance.cluster.test.ts.)
 */

describe('the database option', () => {
  const load = (o: Record<string, unknown>) => () => loadHubConfig(o, {})
  it('takes a postgres:// URL from a flag or the environment, with the password file made absolute', () => {
    expect(loadHubConfig({ database: 'postgres://hub@db:5432/rollcall', databasePasswordFile: 'pw' }, {})).toMatchObject({ database: 'postgres://hub@db:5432/rollcall', databasePasswordFile: join(process.cwd(), 'pw') })
    expect(loadHubConfig({}, { ROLLCALL_DATABASE: 'postgresql://hub@/rollcall?host=/run/postgresql' })).toMatchObject({ database: 'postgresql://hub@/rollcall?host=/run/postgresql' })
  })
  it('refuses what cannot work, saying what to give instead', () => {
    expect(load({ database: 'mysql://db/rollcall' })).toThrow(/must be a URL starting with postgres:\/\//)
    expect(load({ database: 'db.example.com' })).toThrow(/must be a URL starting with postgres:\/\/, e.g. postgres:\/\/USER@HOST:5432\/DB/)
    expect(load({ database: 'postgres://hub:secret@db/rollcall' })).toThrow(/databasePasswordFile .*not in the database URL/)
    expect(load({ databasePasswordFile: 'pw' })).toThrow(/databasePasswordFile is for a PostgreSQL database: give --database/)
    expect(load({ database: 'postgres://db:99999/rollcall' })).toThrow(/database "postgres:\/\/db:99999\/rollcall" is not a URL PostgreSQL's client can read \(Invalid URL\)/)
  })
  it('connects with the password file\'s password, which a URL without one does not hide', () => {
    for (const url of ['postgres://hub@db:5433/rollcall', 'postgresql://hub@/rollcall?host=/run/postgresql']) {
      const client = new pg.Client(connectionConfig(url, 'from-the-file'))
      expect({ url, user: client.user, password: client.password, database: client.database }).toEqual({ url, user: 'hub', password: 'from-the-file', database: 'rollcall' })
    }
    expect(new pg.Client(connectionConfig('postgres://hub@db:5433/rollcall', 'x')).port).toBe(5433)
    expect(new pg.Client(connectionConfig('postgres://hub@/rollcall?host=/run/postgresql', 'x')).host).toBe('/run/postgresql')
  })
})

describe.skipIf(SKIP_WITHOUT_DYNSEC || SKIP_WITHOUT_POSTGRES)('two hubs on one PostgreSQL and one Mosquitto', () => {
  const tmp = tempDir('cluster-hubs')
  // Its own temp dir: startPostgres hands it to the postgres user, who cannot enter tmp's.
  const pgDir = tempDir('cluster-hubs-pg')
  let broker: DynsecBroker
  let pg: PostgresCluster
  let a: TestHub
  let b: TestHub
  const agents: Agent[] = []
  const config = (name: string): Partial<HubConfig> => ({
    broker: broker.url, brokerUsername: broker.adminUser, brokerPasswordFile: broker.adminPasswordFile, brokerClientId: `rollcall-hub-${name}`,
    database: pg.url,
  })

  beforeAll(async () => {
    mkdirSync(join(tmp.dir, 'broker'))
    broker = await startDynsecBroker(join(tmp.dir, 'broker'))
    pg = await startPostgres(pgDir.dir)
    a = await startTestHub(config('a'), join(tmp.dir, 'hub-a'))
    b = await startTestHub(config('b'), join(tmp.dir, 'hub-b'))
  }, 120_000)

  afterAll(async () => {
    await Promise.allSettled(agents.map((x) => x.stop()))
    await a?.stop()
    await b?.stop()
    await broker?.stop()
    await pg?.stop()
    tmp.remove()
    pgDir.remove()
  }, 60_000)

  it('a device added through one hub streams through both, once; jobs, commands and schedules work through either', async () => {
    const devices = await registerDevices(a, 'clu', 4, 'clu')
    // The other hub knows them from the database (its registry follows NOTIFY).
    await waitFor(() => devices.every((d) => b.running.services.registry.getDevice(d.id) !== undefined), 'hub b to know the devices', 20_000)
    const streaming = { sampleIntervalMs: 50, sensors: [{ name: 'temp', model: 'sine' as const, min: 10, max: 30, periodMs: 5000 }] }
    agents.push(...await startAgents(broker.url, join(tmp.dir, 'agents'), devices, streaming))
    // Both hubs see every device online: births reach every hub.
    await waitOnline(a, devices.map((d) => d.id), 30_000)
    await waitOnline(b, devices.map((d) => d.id), 30_000)

    // Batches are shared between the hubs: both store some.
    await waitFor(() => a.running.services.telemetry.counters().samplesStored > 0 && b.running.services.telemetry.counters().samplesStored > 0, 'both hubs storing samples', 30_000)

    // A command through hub b reaches the device; its reply comes back to b, whichever hub the broker gives it to.
    for (const d of devices) {
      const ok = await b.api<{ status: string }>('POST', `/api/devices/${d.id}/commands`, { name: 'sys.info', timeout: '10s' })
      expect({ device: d.id, status: ok.status, outcome: ok.body.status }).toEqual({ device: d.id, status: 200, outcome: 'succeeded' })
    }
    // Its record is shared: hub a shows it.
    const listed = await a.api<{ commands: Array<{ status: string }> }>('GET', `/api/devices/${devices[0]!.id}/commands`)
    expect(listed.body.commands.map((c) => c.status)).toContain('succeeded')

    // A job made through hub a is pulled and run through both.
    const job = await a.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'group:clu', payload: { hello: 'cluster' } })
    expect(job.status).toBe(201)
    const done = await waitJobDone(b, job.body.id, 60_000)
    expect(done.executions.map((e) => e.state)).toEqual(devices.map(() => 'succeeded'))

    // A schedule added through hub b is run by both; each tick makes one job, whichever hub's timer fired first.
    const sched = await b.api<{ id: number }>('POST', '/api/schedules', { name: 'every-second', cron: '* * * * * *', job: { name: 'echo', target: `device:${devices[0]!.id}` } })
    expect(sched.status).toBe(201)
    await waitFor(async () => (await a.api<{ schedules: Array<{ name: string; nextRunAt: number | null }> }>('GET', '/api/schedules')).body.schedules.some((s) => s.name === 'every-second' && s.nextRunAt !== null), 'hub a to run the schedule', 20_000)
    await waitFor(async () => (await a.running.services.jobs.list()).filter((j) => j.scheduleId === sched.body.id).length >= 4, 'four ticks made', 30_000)
    // Both hubs fired ticks, and a tick fired by both was found made by the second.
    const fired = (h: TestHub) => { const x = h.running.services.schedules.stats(); return x.made + x.madeElsewhere }
    await waitFor(() => fired(a) > 0 && fired(b) > 0 && a.running.services.schedules.stats().madeElsewhere + b.running.services.schedules.stats().madeElsewhere > 0,
      'both hubs to fire the schedule, one finding a tick made', 30_000)
    expect((await b.api('DELETE', '/api/schedules/every-second')).status).toBe(204)
    await Promise.all([a, b].map((h) => h.running.services.schedules.stop()))
    const made = (await a.running.services.jobs.list()).filter((j) => j.scheduleId === sched.body.id)
    // Each job was made by one hub: the two hubs' counts of jobs made add up to the jobs there are.
    expect(a.running.services.schedules.stats().made + b.running.services.schedules.stats().made).toBe(made.length)

    // A device that stopped is offline on both hubs, and a command to it fails fast through either.
    await agents[3]!.stop()
    for (const hub of [a, b]) {
      await waitFor(() => !hub.running.services.presence.isReachable(devices[3]!.id), 'the stopped device offline', 20_000)
      const off = await hub.api<{ error: { code: string } }>('POST', `/api/devices/${devices[3]!.id}/commands`, { name: 'sys.info', timeout: '10s' })
      expect(off.body.error.code).toBe('DEVICE_OFFLINE')
    }

    // Rules do not run on PostgreSQL yet: the hub says so instead of accepting one it would not run.
    const rule = await a.api<{ error: { code: string; message: string } }>('POST', '/api/rules', {
      name: 'hot', for: 'all', when: { telemetry: { sensor: 'temp', op: '>', value: 25 } }, then: [{ command: { name: 'sys.info' } }],
    })
    expect(rule.status).toBe(501)
    expect(rule.body.error.code).toBe('NOT_SUPPORTED')
    expect((await a.api<{ rules: unknown[] }>('GET', '/api/rules')).body.rules).toEqual([])

    // Every sample stored once, whichever hub stored it: the seqs of each device's stream are 1..mark.
    await Promise.allSettled(agents.splice(0).map((x) => x.stop()))
    for (const d of devices) {
      const dev = await b.api<{ streams: Array<{ upTo: number }> }>('GET', `/api/devices/${d.id}`)
      const upTo = dev.body.streams[0]?.upTo ?? 0
      const r = await a.api<{ samples: Array<{ seq: number }> }>('GET', `/api/devices/${d.id}/telemetry?since=0&limit=100000`)
      const seqs = r.body.samples.map((x) => x.seq)
      const distinct = new Set(seqs)
      expect({ device: d.id, stored: distinct.size, duplicates: seqs.length - distinct.size, top: Math.max(0, ...seqs) }).toEqual({ device: d.id, stored: upTo, duplicates: 0, top: upTo })
      expect(upTo).toBeGreaterThan(10)
    }
  }, 240_000)
})
