import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { CommandRecord } from '../hub/commands/store.js'
import { tempDir, waitFor } from './support/hub.js'
import { killProc, startAgentProc, startHubProc, type HubProc, type Proc } from './support/procs.js'

/**
 * Issue #11, item 6: records that survive a crash. A hub process is
 * SIGKILLed the moment a caller gets a reply (200 succeeded in one round,
 * 409 DEVICE_OFFLINE in another), with more commands in flight to a real
 * agent and to a device that never connected. After a restart on the same
 * data dir, every command whose reply a caller got is in the record with the
 * outcome the caller saw (replied N, recorded N, lost 0); one that was
 * running on the device when the hub died is `disconnected` with
 * HUB_RESTART; and no record is left "sent".
 */
const HANDLERS = fileURLToPath(new URL('./fixtures/slow-commands.mjs', import.meta.url))

interface Seen {
  readonly id: string
  readonly status: 'succeeded' | 'offline'
  readonly result?: unknown
}

describe('command records across a hub SIGKILL right after a reply', () => {
  const procs: Proc[] = []
  const cleanups: Array<() => void> = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await killProc(p)
    while (cleanups.length) cleanups.pop()!()
  })

  it('keeps every command a caller got an answer for, with that answer, and settles the one in flight as HUB_RESTART', async () => {
    const tmp = tempDir('cmd-records')
    cleanups.push(tmp.remove)
    const hubDir = join(tmp.dir, 'hub')
    const agentDir = join(tmp.dir, 'agents', 'rec-on')
    mkdirSync(agentDir, { recursive: true })

    let hub: HubProc = await startHubProc(hubDir)
    procs.push(hub)
    const port = hub.mqttPort
    const token = (await hub.api<{ token: string }>('POST', '/api/devices', { id: 'rec-on' })).body.token
    expect((await hub.api('POST', '/api/devices', { id: 'rec-off' })).status).toBe(201)
    const agent = startAgentProc({
      mqttPort: port, id: 'rec-on', token, dataDir: agentDir,
      config: { builtinSensors: false, sampleIntervalMs: 0, keepaliveSec: 30, reconnectBaseMs: 100, reconnectMaxMs: 500, handlersModule: HANDLERS },
    })
    procs.push(agent)

    const ping = (h: HubProc, device: string) => h.api<{ id?: string; status?: string; result?: unknown; error?: { code: string; id: string } }>(
      'POST', `/api/devices/${device}/commands`, { name: 'ping', timeout: '30s' })
    // Reachable once a ping to it is answered (the agent reconnects after each restart).
    const online = (h: HubProc) => waitFor(async () => (await ping(h, 'rec-on')).status === 200, 'rec-on answering', 30_000, 100)
    await online(hub)

    const seen: Seen[] = []
    /**
     * Eight callers at a time, four to the agent and four to the offline
     * device; the hub is SIGKILLed from inside the reply callback of the
     * `n`-th reply with status `trigger`. Replies that still arrive count too;
     * requests cut off by the kill got no answer and promise nothing.
     */
    const burstThenKill = async (h: HubProc, trigger: 200 | 409, n: number) => {
      let matching = 0
      let killed = false
      let sent = 0
      const caller = async (device: string) => {
        // Bounded: the kill comes long before, unless the hub stops answering (then the test fails below).
        while (!killed && sent < 2000) {
          sent++
          let r: Awaited<ReturnType<typeof ping>>
          try {
            r = await ping(h, device)
          } catch (err) {
            if (killed) return // the connection died with the hub
            throw new Error(`request failed before the kill: ${String(err)} ${String((err as Error).cause)}\n${h.output()}`)
          }
          if (r.status === 200) seen.push({ id: r.body.id!, status: 'succeeded', result: r.body.result })
          else if (r.status === 409 && r.body.error?.code === 'DEVICE_OFFLINE') seen.push({ id: r.body.error.id, status: 'offline' })
          else throw new Error(`unexpected reply ${r.status} ${JSON.stringify(r.body)}`)
          if (r.status === trigger && ++matching === n && !killed) {
            killed = true
            h.child.kill('SIGKILL')
          }
        }
      }
      await Promise.all(Array.from({ length: 8 }, (_, k) => caller(k % 2 === 0 ? 'rec-on' : 'rec-off')))
      expect(killed, `the hub was killed after reply ${n} with status ${trigger}`).toBe(true)
      await killProc(h)
    }

    // A command running on the device (20 s) when the hub dies: its record is committed before it is sent.
    const slow = hub.api('POST', '/api/devices/rec-on/commands', { name: 'slow.cmd', args: { ms: 20_000 }, timeout: '60s' }).catch(() => undefined)
    const inFlight = await waitFor(async () => {
      const list = (await hub.api<{ commands: CommandRecord[] }>('GET', '/api/devices/rec-on/commands?limit=5')).body.commands
      return list.find((c) => c.name === 'slow.cmd' && c.status === 'sent')
    }, 'slow.cmd in flight', 20_000, 20)

    // 1. Killed right after a 200 succeeded.
    await burstThenKill(hub, 200, 30)
    await slow
    hub = await startHubProc(hubDir, { mqttPort: port })
    procs.push(hub)
    await online(hub)
    // 2. Killed right after a 409 DEVICE_OFFLINE.
    await burstThenKill(hub, 409, 30)
    hub = await startHubProc(hubDir, { mqttPort: port })
    procs.push(hub)
    await online(hub)
    // 3. Killed right after the very first reply of a burst.
    await burstThenKill(hub, 200, 1)
    hub = await startHubProc(hubDir, { mqttPort: port })
    procs.push(hub)

    const lost: Array<{ seen: Seen; recorded: unknown }> = []
    let recorded = 0
    for (const s of seen) {
      const r = await hub.api<CommandRecord>('GET', `/api/commands/${s.id}`)
      const rec = r.status === 200 ? r.body : undefined
      const same = rec !== undefined && rec.status === s.status && (s.status === 'offline'
        ? rec.error?.code === 'DEVICE_OFFLINE'
        : JSON.stringify(rec.result) === JSON.stringify(s.result))
      if (same) recorded++
      else lost.push({ seen: s, recorded: rec ?? r.body })
    }
    const replied = seen.length
    expect(lost).toEqual([])
    expect({ replied, recorded, lost: lost.length }).toEqual({ replied, recorded: replied, lost: 0 })
    expect(seen.filter((s) => s.status === 'succeeded').length).toBeGreaterThanOrEqual(31)
    expect(seen.filter((s) => s.status === 'offline').length).toBeGreaterThanOrEqual(30)

    // The command running when the hub died: settled at the next start, not left waiting.
    const slowRec = (await hub.api<CommandRecord>('GET', `/api/commands/${inFlight.id}`)).body
    expect(slowRec).toMatchObject({ status: 'disconnected', error: { code: 'HUB_RESTART' } })
    // Nothing is left "sent": every command cut off by a kill is settled too.
    for (const device of ['rec-on', 'rec-off']) {
      const all = (await hub.api<{ commands: CommandRecord[] }>('GET', `/api/devices/${device}/commands?limit=1000`)).body.commands
      expect(all.filter((c) => c.status === 'sent').map((c) => c.id)).toEqual([])
    }
    await killProc(agent, 'SIGTERM')
  }, 180_000)
})
