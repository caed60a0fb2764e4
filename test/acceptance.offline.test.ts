import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { silentLogger } from '../common/logger.js'
import { createHub } from '../hub/hub.js'
import { loadHubConfig } from '../hub/config.js'
import { createRegistry } from '../hub/fleet/registry.js'
import { openHubDb } from '../hub/storage/schema.js'
import { loadOrCreateAdminToken } from '../hub/api/admin-token.js'
import { freePort } from '../common/free-port.js'
import { tempDir, waitFor } from './support/hub.js'

/**
 * Acceptance 3 (issue #2): the agent samples with the hub down; when the hub
 * comes up every sample arrives, in sequence order. With a small outbox cap
 * the oldest telemetry is dropped and the agent reports how many.
 */
/** Registers a device straight in a hub data dir that is not running yet (as an operator provisioning ahead). */
async function provision(dataDir: string, id: string): Promise<string> {
  loadOrCreateAdminToken(dataDir)
  const db = openHubDb(join(dataDir, 'hub.db'))
  try {
    return (await createRegistry(db).addDevice(id, null, Date.now())).token
  } finally {
    db.close()
  }
}

describe('offline buffering', () => {
  const cleanups: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  async function scenario(outboxMaxRows: number, ticks: number) {
    const tmp = tempDir('offline')
    cleanups.push(tmp.remove)
    const hubDir = join(tmp.dir, 'hub')
    const token = await provision(hubDir, 'dev-off')
    const port = await freePort()

    const agent: Agent = createAgent(resolveAgentConfig({
      hub: `mqtt://127.0.0.1:${port}`, id: 'dev-off', token, dataDir: join(tmp.dir, 'agent'),
      builtinSensors: false, sampleIntervalMs: 0, outboxMaxRows, reconnectBaseMs: 50, reconnectMaxMs: 300, logLevel: 'silent',
      sensors: [{ name: 'temp', model: 'sine', min: 0, max: 10, periodMs: 1000 }, { name: 'hum', model: 'constant', min: 50, max: 50 }],
    }), { logger: silentLogger() })
    await agent.start()
    cleanups.push(() => agent.stop())

    // The hub is down: every tick waits in the outbox.
    for (let i = 0; i < ticks; i++) agent.sampleNow()
    expect(agent.isConnected()).toBe(false)
    const buffered = agent.stats().outbox!
    const generated = ticks * 2

    const hub = createHub(loadHubConfig({ dataDir: hubDir, mqttPort: port, httpPort: 0, logLevel: 'silent' }, {}), { logger: silentLogger() })
    const running = await hub.start()
    cleanups.push(() => hub.stop())
    await waitFor(() => agent.stats().outbox!.backlogRows === 0, 'outbox drained after the hub came up', 20_000)

    const rows = (await running.services.telemetry.query({ deviceId: 'dev-off', sinceMs: 0, untilMs: Date.now() + 60_000, limit: 1_000_000 })) as Array<{ seq: number }>
    return { generated, buffered, seqs: rows.map((r) => r.seq), stats: agent.stats().outbox! }
  }

  it('delivers every sample taken while the hub was down, in sequence order', async () => {
    const r = await scenario(1_000_000, 2000)
    expect(r.buffered.backlogRows).toBe(4000)
    expect(r.seqs.length).toBe(r.generated)
    expect(r.seqs).toEqual(Array.from({ length: r.generated }, (_, i) => i + 1))
    expect(r.stats.droppedTelemetry).toBe(0)
  })

  it('drops the oldest telemetry past the outbox cap and reports how many', async () => {
    const r = await scenario(1000, 2000)
    expect(r.buffered.backlogRows).toBeLessThanOrEqual(1000)
    expect(r.stats.droppedTelemetry).toBe(r.generated - r.seqs.length)
    expect(r.stats.droppedTelemetry).toBeGreaterThanOrEqual(3000)
    // What survived is the newest, contiguous up to the last seq.
    expect(r.seqs[r.seqs.length - 1]).toBe(r.generated)
    expect(r.seqs).toEqual(Array.from({ length: r.seqs.length }, (_, i) => r.generated - r.seqs.length + 1 + i))
  })
})
