import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { mqttArgs, spawnSubscriber, SKIP_WITHOUT_MOSQUITTO } from './support/mosquitto.js'
import { startFleet } from './support/fleet.js'

/**
 * Acceptance 6 (issue #2): an observer (real mosquitto_sub with observer
 * credentials) subscribed to devices/+/telemetry while 200 agents stream gets
 * the stream while the hub keeps storing what the fleet offers; an observer that
 * stops reading (SIGSTOP) is cut off after the drain timeout and stalls
 * neither ingest nor the other subscribers.
 *
 * Rates are measured against what the fleet generated in the same window,
 * not against an earlier window: on a busy machine the fleet's own pace
 * varies from one window to the next, and the question is whether the hub
 * keeps up with what it is offered. The fleet offers 8,000 samples/s, well
 * under what the hub holds; a hub stalled by an observer would store next
 * to nothing.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Stored (or received) over generated in a 4 s window: about 100% on a quiet
 * machine. What was generated in the window's last few hundred ms arrives
 * after it closes, which on a busy machine costs up to ~15%; a stall costs
 * far more.
 */
const KEPT_UP = 0.7

// Skipped only where mosquitto-clients are missing outside CI (see support/mosquitto.ts).
describe.skipIf(SKIP_WITHOUT_MOSQUITTO)('observers', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('streams to observers without slowing ingest, and cuts off one that stops reading', async () => {
    const drainTimeoutMs = 2000
    const hub = await startTestHub({ drainTimeoutMs })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('observers')
    cleanups.push(tmp.remove)

    const devices = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const id = `obs-${String(i).padStart(3, '0')}`
      return { id, token: await hub.addDevice(id) }
    }))
    const fleet = startFleet({
      hub: hub.mqttUrl, dataDir: tmp.dir, devices, reportEveryMs: 100, staggerMs: 1000,
      agent: { builtinSensors: false, sampleIntervalMs: 250, sensors: Array.from({ length: 10 }, (_, i) => ({ name: `s${i}`, model: 'random-walk' as const, min: 0, max: 100 })) },
    }, tmp.dir)
    cleanups.push(() => fleet.stop())
    await waitFor(() => fleet.last()?.connected === 200, '200 agents connected', 120_000, 200)

    // Each window compares what the hub stored (and the second observer received) with what
    // the fleet generated in the same window, so a fleet slowed down by a busy machine does
    // not read as a hub slowed down by its observers.
    const stored = () => hub.running.services.telemetry.counters().samplesStored
    let o2samples = 0
    const window = async (ms: number) => {
      const g0 = fleet.last()!.generated, s0 = stored(), o0 = o2samples
      await sleep(ms)
      const generated = fleet.last()!.generated - g0
      return { generated, stored: (stored() - s0) / generated, o2: (o2samples - o0) / generated, perSec: (generated * 1000) / ms }
    }
    await sleep(1000)
    const alone = await window(4000)
    // 200 agents x 10 sensors every 250 ms: 8,000/s offered, all of it stored.
    expect(alone.generated).toBeGreaterThan(0)
    expect(alone.stored).toBeGreaterThanOrEqual(KEPT_UP)

    // An observer reading everything.
    const creds = (await hub.api<{ username: string; token: string }>('POST', '/api/observers', { name: 'grafana' })).body
    const o1 = spawnSubscriber([...mqttArgs(hub.running.mqttPort, creds.username, creds.token, 'grafana:1'), '-t', 'devices/+/telemetry', '-v'], { countOnly: true })
    cleanups.push(() => { o1.child.kill('SIGCONT'); o1.child.kill('SIGKILL') })
    await waitFor(() => o1.count() > 100, 'observer receiving', 30_000)
    const watched = await window(4000)
    expect(watched.stored).toBeGreaterThanOrEqual(KEPT_UP)

    // A second subscriber in this process, then the first one freezes.
    const o2 = await mqtt.connectAsync(hub.mqttUrl, { clientId: 'grafana:2', username: creds.username, password: creds.token, reconnectPeriod: 0 })
    cleanups.push(() => o2.endAsync(true))
    o2.on('message', (_topic, payload) => { o2samples += (JSON.parse(payload.toString()) as { samples: unknown[] }).samples.length })
    await o2.subscribeAsync('devices/+/telemetry', { qos: 0 })
    await sleep(1000)
    const before = await window(4000)
    expect(before.o2).toBeGreaterThanOrEqual(KEPT_UP)

    const cutOff = new Promise<string>((resolve) => hub.running.broker.on('disconnected', (info, reason) => {
      if (info.clientId === 'grafana:1') resolve(reason)
    }))
    o1.child.kill('SIGSTOP')
    const frozenAt = Date.now()
    const during = window(4000)
    const reason = await Promise.race([cutOff, sleep(60_000).then(() => 'not cut off in 60 s')])
    expect(reason).toBe('slow-consumer')
    // Cut off once its buffers filled and then did not drain for drainTimeoutMs.
    expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(drainTimeoutMs)
    const frozen = await during
    expect(frozen.stored).toBeGreaterThanOrEqual(KEPT_UP)
    expect(frozen.o2).toBeGreaterThanOrEqual(KEPT_UP)
    const after = await window(4000)
    expect(after.stored).toBeGreaterThanOrEqual(KEPT_UP)
    expect(hub.running.broker.stats().slowConsumersCut).toBe(1)
    const pct = (x: number) => `${Math.round(x * 100)}%`
    console.log(`observers: of what the fleet generated (${Math.round(alone.perSec)}/s), stored ${pct(alone.stored)} alone, ${pct(watched.stored)} with an observer, ${pct(frozen.stored)} while it was frozen; the second observer received ${pct(before.o2)} before the freeze, ${pct(frozen.o2)} during it`)
  }, 300_000)
})
