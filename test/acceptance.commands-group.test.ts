import { afterEach, describe, expect, it } from 'vitest'
import type { Agent } from '../agent/agent.js'
import type { GroupResult } from '../hub/commands/commands.js'
import { registerDevices, startAgents, waitOnline } from './support/agents.js'
import { startTestHub, tempDir } from './support/hub.js'

/**
 * Acceptance 4 (issue #4): a group command to 200 agents of which 50 are
 * offline returns 150 outcomes and 50 skipped, within the deadline.
 */
describe('a group command to 200 agents, 50 of them offline', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('answers for the 150 reachable and lists the 50 skipped, within the deadline', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('cmd-group')
    cleanups.push(tmp.remove)
    const devices = await registerDevices(hub, 'fleet', 200, 'fleet')
    const online = devices.filter((_, i) => i % 4 !== 3)
    const offline = devices.filter((_, i) => i % 4 === 3)
    const agents: Agent[] = await startAgents(hub.mqttUrl, tmp.dir, online)
    cleanups.push(() => Promise.all(agents.map((a) => a.stop())))
    await waitOnline(hub, online.map((d) => d.id))

    // A timeout a busy machine cannot miss: every reachable member must answer.
    const r = await hub.api<GroupResult>('POST', '/api/commands', { target: 'group:fleet', name: 'ping', timeout: '60s' })
    expect(r.status).toBe(200)
    expect(r.body.outcomes).toHaveLength(150)
    expect(r.body.outcomes.every((o) => o.status === 'succeeded')).toBe(true)
    expect(new Set(r.body.outcomes.map((o) => o.deviceId))).toEqual(new Set(online.map((d) => d.id)))
    expect(r.body.skipped.map((s) => s.deviceId).sort()).toEqual(offline.map((d) => d.id).sort())
    expect(r.body.counts).toEqual({ succeeded: 150, failed: 0, timed_out: 0, disconnected: 0, skipped: 50 })
    // Each member's command is in the record under the group's id: 150 replied, 50 refused as offline.
    const members = await hub.api<{ commands: Array<{ status: string }> }>('GET', `/api/commands/${r.body.id}`)
    const byStatus = members.body.commands.reduce<Record<string, number>>((acc, c) => ({ ...acc, [c.status]: (acc[c.status] ?? 0) + 1 }), {})
    expect(byStatus).toEqual({ succeeded: 150, offline: 50 })
  }, 90_000)
})
