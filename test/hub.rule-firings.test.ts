import { afterEach, describe, expect, it } from 'vitest'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { encode, topics } from '../protocol/index.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'

/**
 * GET /api/devices/:id/firings (issue #17, the dashboard's "Rules that fired
 * for this device"): a device's firings by any rule, newest first, on a real
 * hub whose rules fired on samples a device sent over MQTT.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

interface Firing { id: string; rule: string; deviceId: string; at: number; trigger: { kind: string; seq: number; value: number } }
interface ErrorBody { error: { code: string; message: string } }

/** A device speaking the wire protocol by hand: `send` stores fresh samples of `vib` and waits until the hub has them. */
async function rawDevice(h: TestHub, id: string) {
  const token = await h.addDevice(id)
  const dev: MqttClient = await connectDevice(h.mqttUrl, id, token)
  cleanups.push(() => dev.endAsync())
  const storeId = `0b6c3d1e-aaaa-4bbb-8ccc-${id.padStart(12, '0').slice(-12)}`
  let seq = 0
  return {
    async send(values: readonly number[]): Promise<void> {
      const prev = seq
      const now = Date.now()
      await dev.publishAsync(topics.telemetry(id), encode({ type: 'telemetry', v: 1, storeId, prev, samples: values.map((value, i) => ({ seq: prev + i + 1, ts: now + i, sensor: 'vib', value })) }), { qos: 1 })
      seq += values.length
      await waitFor(async () => (await h.running.services.telemetry.markOf(id, storeId)) >= seq, `${id}: seq ${seq} stored`)
    },
  }
}

describe('GET /api/devices/:id/firings', () => {
  it('lists the firings of one device by any rule, newest first; limit picks the newest; unknown device is 404; a bad limit is 400', async () => {
    const h = await startTestHub()
    cleanups.push(() => h.stop())
    const rules = h.running.services.rules
    const a = await rawDevice(h, 'pump-a')
    const b = await rawDevice(h, 'pump-b')
    await h.addDevice('pump-idle')
    // Two rules on every device; events only, so no device has to answer anything.
    for (const [name, value] of [['vib.high', 0.08], ['vib.severe', 0.5]] as const) {
      await rules.add({ name, for: 'all', when: { telemetry: { sensor: 'vib', op: '>', value, clear: { op: '<=', value: 0.06 } } }, then: [{ event: { level: 'warn', message: name } }] })
    }

    // pump-a: two bursts, the second severe (3 firings); pump-b: one burst (1 firing).
    await a.send([0.01, 0.2, 0.01])
    await a.send([0.9, 0.01])
    await b.send([0.3, 0.01])
    await waitFor(() => rules.stats().actions.done === 4, 'four firings acted')

    const all = await h.api<{ deviceId: string; firings: Firing[] }>('GET', '/api/devices/pump-a/firings')
    expect(all.status).toBe(200)
    expect(all.body.deviceId).toBe('pump-a')
    expect(all.body.firings.map((f) => [f.rule, f.trigger.value]).sort()).toEqual([['vib.high', 0.2], ['vib.high', 0.9], ['vib.severe', 0.9]])
    expect(all.body.firings.every((f) => f.deviceId === 'pump-a')).toBe(true)
    // Newest first: the second burst's two firings, then the first burst's.
    const ats = all.body.firings.map((f) => f.at)
    expect(ats).toEqual([...ats].sort((x, y) => y - x))
    expect(all.body.firings.at(-1)).toMatchObject({ rule: 'vib.high', trigger: { kind: 'sample', value: 0.2 } })
    // Each is a firing whose chain the API shows.
    for (const f of all.body.firings) {
      const chain = await h.api<{ id: string; deviceId: string; actions: Array<{ status: string }> }>('GET', `/api/firings/${f.id}`)
      expect(chain.body).toMatchObject({ id: f.id, deviceId: 'pump-a', actions: [{ status: 'done' }] })
    }

    const newest = await h.api<{ firings: Firing[] }>('GET', '/api/devices/pump-a/firings?limit=1')
    expect(newest.body.firings).toEqual([all.body.firings[0]])
    const other = await h.api<{ firings: Firing[] }>('GET', '/api/devices/pump-b/firings')
    expect(other.body.firings.map((f) => [f.rule, f.deviceId, f.trigger.value])).toEqual([['vib.high', 'pump-b', 0.3]])
    // A registered device no rule fired for: an empty list, not an error.
    const idle = await h.api<{ firings: Firing[] }>('GET', '/api/devices/pump-idle/firings')
    expect(idle).toMatchObject({ status: 200, body: { deviceId: 'pump-idle', firings: [] } })

    const unknown = await h.api<ErrorBody>('GET', '/api/devices/no-such-pump/firings')
    expect(unknown.status).toBe(404)
    expect(unknown.body.error.code).toBe('DEVICE_NOT_FOUND')
    expect(unknown.body.error.message).toContain('no-such-pump')
    for (const limit of ['0', '1001', 'ten', '-3']) {
      const bad = await h.api<ErrorBody>('GET', `/api/devices/pump-a/firings?limit=${limit}`)
      expect(bad.status, `limit=${limit}`).toBe(400)
      expect(bad.body.error.code).toBe('BAD_REQUEST')
      expect(bad.body.error.message, `limit=${limit}`).toMatch(/limit/)
    }

    // The listing reads the device's index (migration 9), not every firing of every rule.
    const db = new Database(join(h.dataDir, 'hub.db'), { readonly: true })
    try {
      const plan = db.prepare('EXPLAIN QUERY PLAN SELECT id FROM rule_firings WHERE device_id = ? ORDER BY at DESC, id DESC LIMIT ?').all('pump-a', 50) as Array<{ detail: string }>
      expect(plan.map((p) => p.detail).join('; ')).toMatch(/USING INDEX rule_firings_device/)
    } finally {
      db.close()
    }
  })
})
