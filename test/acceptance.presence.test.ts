import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { encode, topics, type Birth } from '../protocol/index.js'
import { connectDevice, startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'
import { killProc, startAgentProc, type Proc } from './support/procs.js'

/**
 * Acceptance 4 (issue #2): online within a second of connecting; offline
 * within 1.5 × keepalive of the agent dying; a late Will of an older epoch
 * does not mark a live device offline; the history is queryable.
 */
interface Change { deviceId: string; status: string; reason: string; at: number }

describe('presence', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function hubWithRecorder(): Promise<{ hub: TestHub; changes: Change[]; connects: Map<string, number> }> {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    const changes: Change[] = []
    const connects = new Map<string, number>()
    hub.running.services.presence.on('change', (deviceId, c) => changes.push({ deviceId, status: c.status, reason: c.reason, at: Date.now() }))
    hub.running.broker.on('connected', (info) => connects.set(info.clientId, Date.now()))
    return { hub, changes, connects }
  }

  it('follows a real agent: online on its birth, offline on a crash (connection lost) and on a frozen link (keepalive)', async () => {
    const { hub, changes, connects } = await hubWithRecorder()
    const token = await hub.addDevice('dev-p')
    const tmp = tempDir('presence')
    cleanups.push(tmp.remove)
    const dataDir = join(tmp.dir, 'agent')
    mkdirSync(dataDir, { recursive: true })
    const keepaliveSec = 2
    const config = { builtinSensors: false, sampleIntervalMs: 0, keepaliveSec, reconnectBaseMs: 50, reconnectMaxMs: 200 }

    // 1. Online on its birth, right after the connection. (Bounds in this test guard against
    // a hang and tell the cause apart, they do not time the hub: timers run late on a busy machine.)
    let agent: Proc = startAgentProc({ mqttPort: hub.running.mqttPort, id: 'dev-p', token, dataDir, config })
    cleanups.push(() => killProc(agent))
    const online1 = await waitFor(() => changes.find((c) => c.status === 'online'), 'online', 15_000, 10)
    expect(online1.reason).toBe('birth')
    expect(online1.at - connects.get('dev-p')!).toBeLessThan(10_000)
    expect(hub.running.services.presence.isReachable('dev-p')).toBe(true)

    // 2. SIGKILL: the kernel closes the socket; offline at once, not at a keepalive timeout.
    const killedAt = Date.now()
    await killProc(agent, 'SIGKILL')
    const off1 = await waitFor(() => changes.find((c) => c.status === 'offline'), 'offline after SIGKILL', 30_000, 10)
    expect(off1.reason).toBe('connection-lost')
    expect(off1.at - killedAt).toBeLessThan(30_000)

    // 3. A frozen agent (SIGSTOP: socket open, no PINGREQ) is caught by the keepalive timer.
    agent = startAgentProc({ mqttPort: hub.running.mqttPort, id: 'dev-p', token, dataDir, config })
    await waitFor(() => changes.filter((c) => c.status === 'online').length === 2, 'online again', 15_000, 10)
    const stoppedAt = Date.now()
    agent.child.kill('SIGSTOP')
    try {
      const off2 = await waitFor(() => changes.filter((c) => c.status === 'offline')[1], 'offline after SIGSTOP', 30_000, 10)
      expect(off2.reason).toBe('keepalive-timeout')
      // aedes allows 1.5 × keepalive after the last packet [MQTT-3.1.2-24] (3 s here; the last
      // PINGREQ may predate the SIGSTOP). The slack is for timers running late on a busy machine;
      // without the keepalive timer the socket would stay open for as long as TCP lets it.
      expect(off2.at - stoppedAt).toBeLessThan(1.5 * keepaliveSec * 1000 + 20_000)
    } finally {
      agent.child.kill('SIGCONT')
    }

    // 4. The history holds every transition, newest first, with reasons.
    const h = await hub.api<{ history: Array<{ status: string; reason: string; epoch: number | null }> }>('GET', '/api/devices/dev-p/presence')
    expect(h.status).toBe(200)
    expect(h.body.history.map((e) => `${e.status}:${e.reason}`).slice(0, 4)).toEqual([
      'offline:keepalive-timeout', 'online:birth', 'offline:connection-lost', 'online:birth',
    ])
    expect(h.body.history[1]!.epoch).toBeGreaterThan(h.body.history[3]!.epoch!)
  })

  it('ignores a late Will of an older epoch while the device is live', async () => {
    const { hub, changes } = await hubWithRecorder()
    const token = await hub.addDevice('dev-w')
    const storeId = '7e57da7a-0000-4000-8000-00000000000a'
    const birth = (epoch: number): Birth => ({ type: 'birth', v: 1, epoch, bootId: 'boot-1', agentVersion: 'test', storeId, capabilities: [] })
    const will = (epoch: number) => ({ topic: topics.state('dev-w'), payload: encode({ type: 'death', v: 1, epoch }), qos: 1 as const, retain: true })

    const c1 = await connectDevice(hub.mqttUrl, 'dev-w', token, { will: will(1) })
    await c1.publishAsync(topics.state('dev-w'), encode(birth(1)), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.get('dev-w')?.epoch === 1, 'birth 1')

    // Same device connects again (epoch 2): the broker takes the old session over and publishes its Will (epoch 1).
    const c2 = await connectDevice(hub.mqttUrl, 'dev-w', token, { will: will(2) })
    cleanups.push(() => c2.endAsync(true))
    c1.end(true)
    await c2.publishAsync(topics.state('dev-w'), encode(birth(2)), { qos: 1, retain: true })
    await waitFor(() => hub.running.services.presence.get('dev-w')?.epoch === 2 && hub.running.services.presence.isReachable('dev-w'), 'online with epoch 2')

    // And a Will of epoch 1 arriving after the birth of epoch 2 (as the broker would publish it late).
    await hub.running.broker.publish(topics.state('dev-w'), encode({ type: 'death', v: 1, epoch: 1 }), { qos: 1 })
    await new Promise((r) => setTimeout(r, 300))
    const p = hub.running.services.presence.get('dev-w')!
    expect(p.status).toBe('online')
    expect(p.epoch).toBe(2)
    expect(hub.running.services.presence.isReachable('dev-w')).toBe(true)
    expect(changes.filter((c) => c.deviceId === 'dev-w').map((c) => `${c.status}:${c.reason}`).at(-1)).toBe('online:birth')

    // A death of the current epoch does take it offline.
    await hub.running.broker.publish(topics.state('dev-w'), encode({ type: 'death', v: 1, epoch: 2 }), { qos: 1 })
    await waitFor(() => hub.running.services.presence.get('dev-w')?.status === 'offline', 'offline on the current epoch\'s death')
  })
})
