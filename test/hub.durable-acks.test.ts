import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { silentLogger } from '../common/logger.js'
import { loadHubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import type { WalSync } from '../hub/storage/wal-sync.js'
import { adminApi } from '../common/admin-http.js'
import { encode, topics, type Sample, type TelemetryAck } from '../protocol/index.js'
import { connectDevice, tempDir, waitFor } from './support/hub.js'

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000d1'
const samples = (from: number, to: number): Sample[] =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, ts: 1_700_000_000_000 + (from + i) * 1000, sensor: 'temp', value: from + i }))

/** The real fsync, with its answers held back while `closed`: the disk, slow on demand. */
function gate() {
  let closed = false
  let held: Array<() => void> = []
  return {
    wrap: (real: WalSync): WalSync => ({
      ...real,
      sync: (done) => {
        real.sync((err) => {
          if (closed) held.push(() => { done(err) })
          else done(err)
        })
      },
    }),
    close: () => { closed = true },
    open: () => {
      closed = false
      const h = held
      held = []
      for (const f of h) f()
    },
    held: () => held.length,
  }
}

/**
 * An ack promises the rows survive a power cut, so nothing may acknowledge
 * rows whose fsync has not come back (hub/storage/wal-sync.ts): neither the
 * ack of a batch nor the mark a birth is answered with, though the rows are
 * already in the database and readable while the fsync runs.
 */
describe('acks wait for the fsync', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('sends no ack, for a batch or for a birth, until the fsync covering the rows is back', async () => {
    const tmp = tempDir('durable-acks')
    cleanups.push(tmp.remove)
    const disk = gate()
    const config = loadHubConfig({ dataDir: tmp.dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, logLevel: 'silent' }, {})
    const hub = createHub(config, { logger: silentLogger(), walSync: disk.wrap })
    const running = await hub.start()
    cleanups.push(() => { disk.open(); return hub.stop() })
    const api = adminApi({ api: `http://127.0.0.1:${running.httpPort}`, token: running.adminToken })
    const added = await api<{ token: string }>('POST', '/api/devices', { id: 'dev-1' })
    expect(added.status).toBe(201)
    const dev: MqttClient = await connectDevice(`mqtt://127.0.0.1:${running.mqttPort}`, 'dev-1', added.body.token)
    cleanups.push(() => dev.endAsync())
    const acks: TelemetryAck[] = []
    dev.on('message', (_t, payload) => acks.push(JSON.parse(payload.toString()) as TelemetryAck))
    await dev.subscribeAsync(topics.telemetryAck('dev-1'), { qos: 1 })

    // The disk stalls: the batch is written (readable through the API) but not known durable.
    disk.close()
    await dev.publishAsync(topics.telemetry('dev-1'), encode({ type: 'telemetry', v: 1, storeId, samples: samples(1, 5) }), { qos: 1 })
    await waitFor(async () => (await api<{ samples: unknown[] }>('GET', '/api/devices/dev-1/telemetry?since=0&limit=100')).body.samples.length === 5, 'the rows in the database')
    // A birth now: the hub knows the mark is 5, but may not say so before the fsync.
    await dev.publishAsync(topics.state('dev-1'), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: '0.1.0', storeId, capabilities: ['telemetry'] }), { qos: 1, retain: true })
    await waitFor(() => disk.held() >= 1, 'an fsync held back')
    // Room for anything that would leave early to arrive (a hub on a busy machine answers in a few ms).
    await new Promise((r) => setTimeout(r, 300))
    expect(acks).toEqual([])

    disk.open()
    await waitFor(() => acks.filter((a) => a.upTo === 5).length >= 2, 'the batch\'s ack and the birth\'s answer, both up to 5')
    expect(acks.every((a) => a.upTo === 5 && a.storeId === storeId)).toBe(true)
  })
})
