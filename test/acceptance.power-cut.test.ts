import { afterEach, describe, expect, it } from 'vitest'
import { copyFileSync, existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { silentLogger } from '../common/logger.js'
import { loadHubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { startTestHub, tempDir, waitFor, type TestHub } from './support/hub.js'

/**
 * A power cut can roll a device's SQLite ledger back by its last commits
 * (synchronous=NORMAL) after the hub already stored and acknowledged those
 * rows. The ledger then numbers new samples with seqs the hub holds, and
 * without care the hub would drop them as duplicates. The hub answers every
 * birth with the store's mark; the agent renumbers what it has not sent yet.
 * Simulated here by restoring an older copy of the ledger file.
 */
describe('ledger rolled back by a power cut', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('loses nothing: samples numbered after the rollback are renumbered above the hub\'s mark', async () => {
    const tmp = tempDir('power-cut')
    cleanups.push(tmp.remove)
    const hubDir = join(tmp.dir, 'hub')
    let hub: TestHub = await startTestHub({}, hubDir)
    const port = hub.running.mqttPort
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice('dev-pc')
    const dataDir = join(tmp.dir, 'agent')
    const make = (): Agent => createAgent(resolveAgentConfig({
      hub: `mqtt://127.0.0.1:${port}`, id: 'dev-pc', token, dataDir, builtinSensors: false, sampleIntervalMs: 0,
      reconnectBaseMs: 50, reconnectMaxMs: 200, logLevel: 'silent',
      sensors: [{ name: 'temp', model: 'sine', min: 0, max: 10, periodMs: 1000 }],
    }), { logger: silentLogger() })
    const stored = async () => (await hub.running.services.telemetry.query({ deviceId: 'dev-pc', sinceMs: 0, untilMs: Date.now() + 60_000, limit: 100_000 })) as Array<{ seq: number; ts: number }>
    const mark = async () => (await hub.running.services.telemetry.streamsOf('dev-pc'))[0]?.upTo ?? 0

    // 1. 50 samples, stored and acknowledged; the ledger file is saved here (the last state that reached the SD card).
    let agent = make()
    await agent.start()
    for (let i = 0; i < 50; i++) agent.sampleNow()
    await waitFor(async () => (await mark()) === 50 && agent.stats().outbox!.backlogRows === 0, 'first 50 stored')
    await agent.stop()
    const snapshot = join(tmp.dir, 'ledger-at-50.db')
    copyFileSync(join(dataDir, 'ledger.db'), snapshot)

    // 2. 50 more, stored and acknowledged... then the power goes and the SD card still holds the older file.
    agent = make()
    await agent.start()
    for (let i = 0; i < 50; i++) agent.sampleNow()
    await waitFor(async () => (await mark()) === 100 && agent.stats().outbox!.backlogRows === 0, 'next 50 stored')
    await agent.stop()
    for (const f of ['ledger.db-wal', 'ledger.db-shm']) if (existsSync(join(dataDir, f))) rmSync(join(dataDir, f))
    copyFileSync(snapshot, join(dataDir, 'ledger.db'))

    // 3. The device boots with the rolled-back ledger and samples 30 times before it reaches the hub (down).
    await hub.stop()
    cleanups.pop()
    agent = make()
    cleanups.push(() => agent.stop())
    await agent.start()
    for (let i = 0; i < 30; i++) agent.sampleNow()
    expect(agent.stats().outbox!.newestSeq).toBe(80) // seqs 51..80 again: the hub holds those numbers

    const again = createHub(loadHubConfig({ dataDir: hubDir, mqttPort: port, httpPort: 0, logLevel: 'silent' }, {}), { logger: silentLogger() })
    const running = await again.start()
    cleanups.push(() => again.stop())
    hub = { ...hub, running }
    await waitFor(async () => agent.stats().outbox!.backlogRows === 0 && (await mark()) === 130, 'the 30 new samples stored above the old mark', 15_000)

    const rows = await stored()
    const seqs = rows.map((r) => r.seq)
    expect(rows.length).toBe(130)
    expect(new Set(seqs).size).toBe(130)
    expect(Math.max(...seqs)).toBe(130)
    // New samples continue in the renumbered space.
    agent.sampleNow()
    await waitFor(async () => (await mark()) === 131, 'numbering continues after the resync')
  })
})
