import { afterEach, describe, expect, it } from 'vitest'
import { registerDevices, startAgents, waitOnline } from './support/agents.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'

/**
 * Acceptance 1 (issue #4): a command to an offline or never-seen device
 * fails with DEVICE_OFFLINE in well under 100 ms, and nothing is published
 * to its topic.
 */
describe('commands to devices that are not reachable', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('fail at once with DEVICE_OFFLINE and when the device was last seen; nothing reaches its topic', async () => {
    const hub = await startTestHub()
    cleanups.push(() => hub.stop())
    const tmp = tempDir('cmd-offline')
    cleanups.push(tmp.remove)
    const [gone] = await registerDevices(hub, 'gone', 1)
    await hub.addDevice('never-seen')
    // One that was online and has stopped: it has a last-seen time.
    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [gone!])
    await waitOnline(hub, [gone!.id])
    await agent!.stop()
    await waitFor(() => !hub.running.services.presence.isReachable(gone!.id), 'offline')

    const published: string[] = []
    await hub.running.broker.subscribe('devices/+/cmd/req', (m) => { published.push(m.topic) })
    // Warm the HTTP path, so the figure below is the command's, not the first request's.
    await hub.api('GET', '/healthz')

    for (const [id, seen] of [['never-seen', false], [gone!.id, true]] as const) {
      const times: number[] = []
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now()
        const r = await hub.api<{ error: { code: string; message: string; lastSeen: number | null } }>('POST', `/api/devices/${id}/commands`, { name: 'ping', timeout: '60s' })
        times.push(performance.now() - t0)
        expect(r.status).toBe(409)
        expect(r.body.error.code).toBe('DEVICE_OFFLINE')
        if (seen) expect(r.body.error.lastSeen).toBeGreaterThan(Date.now() - 60_000)
        else expect(r.body.error.lastSeen).toBeNull()
      }
      // Fails fast: the answer does not wait for the 60 s timeout. (A few ms here; how fast is
      // the commands benchmark's to say, not a test's on a shared machine.)
      expect(Math.max(...times), `${id}: slowest of 20`).toBeLessThan(6_000)
    }
    await new Promise((r) => setTimeout(r, 200))
    expect(published).toEqual([])
    const record = await hub.api<{ commands: Array<{ status: string }> }>('GET', `/api/devices/${gone!.id}/commands?limit=100`)
    expect(record.body.commands).toHaveLength(20)
    expect(record.body.commands.every((c) => c.status === 'offline')).toBe(true)
  })
})
