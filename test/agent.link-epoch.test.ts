import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { META_KEYS } from '../agent/ledger.js'
import { silentLogger } from '../common/logger.js'
import { removeDir, tempDir } from './agent.support.js'
import { QUICK_AGENT } from './support/agents.js'
import { startTestHub, waitFor, type TestHub } from './support/hub.js'

/**
 * An attempt whose socket never connected sent no CONNECT, so no broker holds
 * its Will: the next attempt reuses its epoch rather than commit (and fsync) a
 * new one, which offline was most of what the agent wrote to its SD card
 * (issue #13). An attempt that did reach a broker still gets a new epoch after it.
 */
const agents: Agent[] = []
const hubs: TestHub[] = []
const dirs: string[] = []
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop()
  for (const h of hubs.splice(0)) await h.stop()
  for (const d of dirs.splice(0)) removeDir(d)
})

function agentFor(hub: string, token = 't'): Agent {
  const dir = tempDir()
  dirs.push(dir)
  const agent = createAgent(resolveAgentConfig({ ...QUICK_AGENT, reconnectBaseMs: 10, reconnectMaxMs: 40, hub, id: 'dev-epoch', token, dataDir: join(dir, 'a') }), { logger: silentLogger() })
  agents.push(agent)
  return agent
}

describe('agent link epochs', () => {
  it('keeps one epoch across attempts that never reached a broker', async () => {
    // Nothing listens on port 1: every attempt is refused before a CONNECT can go out.
    const agent = agentFor('mqtt://127.0.0.1:1')
    await agent.start()
    await waitFor(() => agent.stats().link.attempts >= 5, 'five refused attempts', 20_000)
    expect(agent.stats().link.epoch).toBe(1)
    expect(agent.ledger!.counter(META_KEYS.epoch)).toBe(1)
  })

  it('moves to a new epoch after an attempt that reached the broker, then keeps it while refused', async () => {
    const hub = await startTestHub()
    hubs.push(hub)
    const token = await hub.addDevice('dev-epoch')
    const agent = agentFor(hub.mqttUrl, token)
    await agent.start()
    await waitFor(() => agent.isConnected(), 'agent connected', 20_000)
    expect(agent.stats().link.epoch).toBe(1)
    await hubs.pop()!.stop()
    await waitFor(() => agent.stats().link.attempts >= 6, 'refused attempts after the hub left', 20_000)
    expect(agent.stats().link.epoch).toBe(2)
    expect(agent.ledger!.counter(META_KEYS.epoch)).toBe(2)
  })
})
