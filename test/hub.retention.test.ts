import { afterEach, describe, expect, it } from 'vitest'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { encode, topics, type Sample } from '../protocol/index.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'
import { loadHubConfig } from '../hub/config.js'

const storeId = '2e7e0000-0000-4000-8000-00000000000b'

describe('retention and first start', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('prunes raw samples older than retentionDays on its cron schedule, and keeps the rest', async () => {
    // Every second, keep one day.
    const hub: TestHub = await startTestHub({ retentionDays: 1, retentionCron: '* * * * * *' })
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('ret-1')
    const dev = await connectDevice(hub.mqttUrl, 'ret-1', token)
    cleanups.push(() => dev.endAsync())
    const now = Date.now()
    const samples: Sample[] = [
      { seq: 1, ts: now - 3 * 86_400_000, sensor: 'temp', value: 1 },
      { seq: 2, ts: now - 2 * 86_400_000, sensor: 'temp', value: 2 },
      { seq: 3, ts: now - 60_000, sensor: 'temp', value: 3 },
      { seq: 4, ts: now, sensor: 'temp', value: 4 },
    ]
    await dev.publishAsync(topics.telemetry('ret-1'), encode({ type: 'telemetry', v: 1, storeId, samples }), { qos: 1 })
    const seqs = async () => (await hub.api<{ samples: Array<{ seq: number }> }>('GET', '/api/devices/ret-1/telemetry?since=0')).body.samples.map((s) => s.seq)
    await waitFor(async () => (await seqs()).length > 0, 'samples stored')
    await waitFor(async () => JSON.stringify(await seqs()) === '[3,4]', 'old samples pruned', 5000)
    // The high-water mark is untouched: a replay of pruned samples is still a duplicate, not new data.
    expect((await hub.running.services.telemetry.streamsOf('ret-1'))[0]!.upTo).toBe(4)
  })

  it('prunes in small chunks, ties at a chunk boundary included, without touching newer rows', async () => {
    const hub: TestHub = await startTestHub()
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('ret-2')
    const dev = await connectDevice(hub.mqttUrl, 'ret-2', token)
    cleanups.push(() => dev.endAsync())
    const old = Date.now() - 10 * 86_400_000
    // 7 samples at one instant and 3 more later, all old; 2 recent ones.
    const samples: Sample[] = [
      ...Array.from({ length: 7 }, (_, i) => ({ seq: i + 1, ts: old, sensor: `s${i}`, value: i })),
      ...Array.from({ length: 3 }, (_, i) => ({ seq: 8 + i, ts: old + 1000 * (i + 1), sensor: 's0', value: i })),
      { seq: 11, ts: Date.now() - 1000, sensor: 's0', value: 1 },
      { seq: 12, ts: Date.now(), sensor: 's0', value: 2 },
    ]
    await dev.publishAsync(topics.telemetry('ret-2'), encode({ type: 'telemetry', v: 1, storeId, samples }), { qos: 1 })
    await waitFor(async () => (await hub.running.services.telemetry.streamsOf('ret-2'))[0]?.upTo === 12, 'stored')
    const pruned = await hub.running.services.telemetry.prune(Date.now() - 86_400_000, 2)
    expect(pruned.samples).toBe(10)
    const left = (await hub.running.services.telemetry.query({ deviceId: 'ret-2', sinceMs: 0, untilMs: Date.now() + 60_000, limit: 100 })) as Array<{ seq: number }>
    expect(left.map((r) => r.seq)).toEqual([11, 12])
  })

  it('makes the admin token once, readable by the hub\'s user only', async () => {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    expect(hub.running.adminTokenCreated).toBe(true)
    expect(statSync(join(hub.dataDir, 'admin-token')).mode & 0o777).toBe(0o600)
    expect(hub.running.adminToken).toMatch(/^[A-Za-z0-9_-]{43}$/)
  })

  it.each<[Record<string, unknown>, RegExp]>([
    [{ mqttPort: 70000 }, /mqttPort must be <= 65535/],
    [{ retentionCron: 'every day' }, /retentionCron "every day" is not a valid cron/],
    [{ keepaliveMinSec: 60, keepaliveMaxSec: 30 }, /keepaliveMinSec must not exceed keepaliveMaxSec/],
    [{ colour: 'blue' }, /unknown option "colour"/],
  ])('refuses a bad option at start: %j', (options, message) => {
    expect(() => loadHubConfig({}, {}, options)).toThrow(message)
  })
})
