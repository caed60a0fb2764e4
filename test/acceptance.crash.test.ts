import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, waitFor } from './support/hub.js'
import { killProc, startAgentProc, startHubProc, type HubProc, type Proc } from './support/procs.js'
import { readLedger } from './support/ledger.js'

/**
 * Acceptance 2 (issue #2): no loss, no duplicates. An agent streams while the
 * hub process is SIGKILLed and restarted several times and the agent process
 * is SIGKILLed and restarted too. Afterwards, counted per sequence number:
 * stored = generated, lost = 0, duplicates = 0.
 */
describe('telemetry survives hub and agent crashes', () => {
  const procs: Proc[] = []
  const dirs: Array<() => void> = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await killProc(p)
    for (const rm of dirs.splice(0)) rm()
  })

  it('stores every generated sample exactly once', async () => {
    const tmp = tempDir('crash')
    dirs.push(tmp.remove)
    const hubDir = join(tmp.dir, 'hub')
    const agentDir = join(tmp.dir, 'agents', 'dev-crash')
    mkdirSync(agentDir, { recursive: true })

    let hub: HubProc = await startHubProc(hubDir)
    procs.push(hub)
    const port = hub.mqttPort
    const add = await hub.api<{ token: string }>('POST', '/api/devices', { id: 'dev-crash' })
    expect(add.status).toBe(201)
    const token = add.body.token

    const streaming = {
      builtinSensors: false,
      sampleIntervalMs: 20,
      sensors: [
        { name: 'temp', model: 'sine', min: 10, max: 30, periodMs: 5000 },
        { name: 'hum', model: 'random-walk', min: 20, max: 80 },
      ],
      ackTimeoutMs: 1000,
      reconnectBaseMs: 50,
      reconnectMaxMs: 500,
      keepaliveSec: 5,
    }
    let agent: Proc = startAgentProc({ mqttPort: port, id: 'dev-crash', token, dataDir: agentDir, config: streaming })
    procs.push(agent)

    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))
    // Faults: hub killed 3 times, agent killed 2 times, interleaved, all while sampling at ~100 samples/s.
    for (let round = 0; round < 3; round++) {
      await pause(1200)
      await killProc(hub)
      await pause(400)
      hub = await startHubProc(hubDir, { mqttPort: port })
      procs.push(hub)
      if (round < 2) {
        await pause(800)
        await killProc(agent)
        agent = startAgentProc({ mqttPort: port, id: 'dev-crash', token, dataDir: agentDir, config: streaming })
        procs.push(agent)
      }
    }
    await pause(1000)
    await killProc(agent)

    // Drain: the same ledger, no more sampling, until the agent says (sys.info) its outbox
    // is empty; then a clean stop, after which the outbox in the file is empty too (the
    // agent holds the ledger's lock while it runs, and deletes acked rows at a clean stop).
    const numbered = readLedger(agentDir).generated
    agent = startAgentProc({ mqttPort: port, id: 'dev-crash', token, dataDir: agentDir, config: { ...streaming, sampleIntervalMs: 0 } })
    procs.push(agent)
    await waitFor(async () => {
      const r = await hub.api<{ status?: string; result?: { outbox?: { backlogRows: number } } }>('POST', '/api/devices/dev-crash/commands', { name: 'sys.info', timeout: '5s' })
      return r.body.status === 'succeeded' && r.body.result?.outbox?.backlogRows === 0
    }, 'agent outbox drained', 30_000, 200)
    await killProc(agent, 'SIGTERM')

    const ledger = readLedger(agentDir)
    expect(ledger.backlog).toBe(0)
    expect(ledger.generated).toBe(numbered)
    expect(ledger.dropped).toBe(0)
    expect(ledger.generated).toBeGreaterThan(300)

    const r = await hub.api<{ samples: Array<{ seq: number }> }>('GET', '/api/devices/dev-crash/telemetry?since=0&limit=100000')
    expect(r.status).toBe(200)
    const seqs = r.body.samples.map((s) => s.seq)
    const distinct = new Set(seqs)
    const lost = Array.from({ length: ledger.generated }, (_, i) => i + 1).filter((s) => !distinct.has(s))
    const duplicates = seqs.length - distinct.size
    expect({ generated: ledger.generated, stored: distinct.size, lost: lost.length, duplicates })
      .toEqual({ generated: ledger.generated, stored: ledger.generated, lost: 0, duplicates: 0 })
    const d = await hub.api<{ streams: Array<{ upTo: number }> }>('GET', '/api/devices/dev-crash')
    expect(d.body.streams[0]?.upTo).toBe(ledger.generated)
    // The faults really happened: one online period per connection, with hub restarts between them.
    const h = await hub.api<{ history: Array<{ status: string; reason: string }> }>('GET', '/api/devices/dev-crash/presence?limit=1000')
    const reasons = h.body.history.map((e) => `${e.status}:${e.reason}`)
    expect(reasons.filter((r) => r === 'online:birth').length).toBeGreaterThanOrEqual(6)
    expect(reasons.filter((r) => r === 'offline:hub-restart').length).toBeGreaterThanOrEqual(3)
  }, 120_000)
})
