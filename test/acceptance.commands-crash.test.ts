import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { CommandRecord } from '../hub/commands/store.js'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { killProc, startAgentProc, type Proc } from './support/procs.js'

/**
 * Acceptance 2 (issue #4): a device SIGKILLed while a command is in flight.
 * The caller gets DEVICE_DISCONNECTED (or COMMAND_TIMEOUT), never a hang,
 * and the record shows it.
 */
const HANDLERS = fileURLToPath(new URL('./fixtures/slow-commands.mjs', import.meta.url))

describe('a device killed while a command is in flight', () => {
  const procs: Proc[] = []
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await killProc(p)
    while (cleanups.length) await cleanups.pop()!()
  })

  it('ends the wait with DEVICE_DISCONNECTED long before the deadline, and records it', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('cmd-crash')
    cleanups.push(tmp.remove)
    const dataDir = join(tmp.dir, 'agent')
    mkdirSync(dataDir, { recursive: true })
    const token = await hub.addDevice('crash-cmd')
    const agent = startAgentProc({
      mqttPort: hub.running.mqttPort, id: 'crash-cmd', token, dataDir,
      config: { builtinSensors: false, sampleIntervalMs: 0, keepaliveSec: 30, handlersModule: HANDLERS },
    })
    procs.push(agent)
    await waitFor(() => hub.running.services.presence.isReachable('crash-cmd'), 'agent online', 20_000)

    const t0 = performance.now()
    const pending = hub.api<{ error: { code: string; id: string } }>('POST', '/api/devices/crash-cmd/commands', { name: 'slow.cmd', args: { ms: 120_000 }, timeout: '150s' })
    // The command is running on the device once the hub has it in flight for a moment.
    await waitFor(() => hub.running.services.commands.stats().pending === 1, 'command in flight')
    await new Promise((r) => setTimeout(r, 300))
    await killProc(agent, 'SIGKILL')
    const r = await pending
    const waited = performance.now() - t0
    expect(r.status).toBe(502)
    expect(r.body.error.code).toBe('DEVICE_DISCONNECTED')
    // Told at the disconnect (under a second here), not at the command's end (120 s) or its timeout.
    expect(waited).toBeLessThan(30_000)
    const rec = (await hub.api<CommandRecord>('GET', `/api/commands/${r.body.error.id}`)).body
    expect(rec).toMatchObject({ status: 'disconnected', name: 'slow.cmd', result: null })
    expect(rec.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'disconnected'])
    expect(hub.running.services.commands.stats().pending).toBe(0)
  }, 180_000)
})
