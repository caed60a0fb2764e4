import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { mqttArgs, spawnSubscriber, SKIP_WITHOUT_MOSQUITTO } from './support/mosquitto.js'
import { startFleet } from './support/fleet.js'

/**
 * Acceptance 6 (issue #2): an observer (real mosquitto_sub with observer
 * credentials) subscribed to devices/+/telemetry while 200 agents stream gets
 * the stream, and ingest keeps ≥ 80% of its rate without it; an observer that
 * stops reading (SIGSTOP) is cut off after the drain timeout and stalls
 * neither ingest nor the other subscribers.
 *
 * The fleet offers 8,000 samples/s, well under what the hub holds even on a
 * slow, busy machine, so each window stores what the fleet offered and the
 * rates compare like with like. (At the hub's limit a window's rate follows
 * whatever else the machine is doing, and an 80% bound says nothing about
 * observers.) A stalled hub would store next to nothing, far below 80%.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

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
      hub: hub.mqttUrl, dataDir: tmp.dir, devices, reportEveryMs: 500, staggerMs: 1000,
      agent: { builtinSensors: false, sampleIntervalMs: 250, sensors: Array.from({ length: 10 }, (_, i) => ({ name: `s${i}`, model: 'random-walk' as const, min: 0, max: 100 })) },
    }, tmp.dir)
    cleanups.push(() => fleet.stop())
    await waitFor(() => fleet.last()?.connected === 200, '200 agents connected', 30_000, 200)

    const stored = () => hub.running.services.telemetry.counters().samplesStored
    const rateOver = async (ms: number) => {
      const s0 = stored(), t0 = Date.now()
      await sleep(ms)
      return (stored() - s0) / ((Date.now() - t0) / 1000)
    }
    await sleep(1000)
    const alone = await rateOver(3000)
    // 200 agents x 10 sensors every 250 ms: 8,000/s offered.
    expect(alone).toBeGreaterThan(4_000)

    // An observer reading everything.
    const creds = (await hub.api<{ username: string; token: string }>('POST', '/api/observers', { name: 'grafana' })).body
    const o1 = spawnSubscriber([...mqttArgs(hub.running.mqttPort, creds.username, creds.token, 'grafana:1'), '-t', 'devices/+/telemetry', '-v'], { countOnly: true })
    cleanups.push(() => { o1.child.kill('SIGCONT'); o1.child.kill('SIGKILL') })
    await waitFor(() => o1.count() > 100, 'observer receiving', 10_000)
    const watched = await rateOver(3000)
    expect(watched).toBeGreaterThanOrEqual(0.8 * alone)

    // A second subscriber in this process, then the first one freezes.
    const o2 = await mqtt.connectAsync(hub.mqttUrl, { clientId: 'grafana:2', username: creds.username, password: creds.token, reconnectPeriod: 0 })
    cleanups.push(() => o2.endAsync(true))
    let o2count = 0
    o2.on('message', () => { o2count++ })
    await o2.subscribeAsync('devices/+/telemetry', { qos: 0 })
    await sleep(1000)
    const o2before = o2count
    await sleep(2000)
    const o2rateBefore = (o2count - o2before) / 2

    const cutOff = new Promise<string>((resolve) => hub.running.broker.on('disconnected', (info, reason) => {
      if (info.clientId === 'grafana:1') resolve(reason)
    }))
    o1.child.kill('SIGSTOP')
    const frozenAt = Date.now()
    const o2start = o2count
    const during = rateOver(4000)
    const reason = await Promise.race([cutOff, sleep(30_000).then(() => 'not cut off in 30 s')])
    expect(reason).toBe('slow-consumer')
    // Cut off once its buffers filled and then did not drain for drainTimeoutMs.
    expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(drainTimeoutMs)
    expect(await during).toBeGreaterThanOrEqual(0.8 * alone)
    const o2rateDuring = (o2count - o2start) / ((Date.now() - frozenAt) / 1000)
    expect(o2rateDuring).toBeGreaterThanOrEqual(0.8 * o2rateBefore)
    expect(await rateOver(2000)).toBeGreaterThanOrEqual(0.8 * alone)
    expect(hub.running.broker.stats().slowConsumersCut).toBe(1)
    console.log(`observers: ingest ${Math.round(alone)}/s alone, ${Math.round(watched)}/s with an observer; second observer ${Math.round(o2rateBefore)}/s before the freeze, ${Math.round(o2rateDuring)}/s during it`)
  }, 120_000)
})
