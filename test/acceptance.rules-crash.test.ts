import { afterEach, describe, expect, it } from 'vitest'
import { createHmac } from 'node:crypto'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AgentStats } from '../agent/agent.js'
import type { StatsSnapshot } from '../agent/stats-file.js'
import type { CommandRecord } from '../hub/commands/store.js'
import type { FiringView } from '../hub/rules/rules.js'
import type { ActionRow } from '../hub/rules/store.js'
import { tempDir, waitFor } from './support/hub.js'
import { killProc, startAgentProc, startHubProc, type HubProc, type Proc } from './support/procs.js'

/**
 * Acceptance (issue #17): a hub SIGKILLed right after a rule fired finishes
 * the firing's action after its restart, and the device runs the command
 * once, counted on the device.
 *
 * Black box: hub and agent are processes. The agent's sensor reads above the
 * threshold, so the rule fires (once: the condition then holds, it does not
 * fire again at each sample, nor after a restart). Its command, `count.slow`
 * (test/fixtures/counted-commands.mjs), writes "start ID" to a file on the
 * device when it begins and "end ID" when it ends. A start line proves the
 * firing and its command record were committed (the command is published only
 * after both): the hub is killed then, with the action under way. Three ways
 * the restart can find the device:
 *   - still running the command: the resumed action sends it again under its
 *     id; the agent ignores the repeat and answers when the run ends;
 *   - done with it, its answer lost with the dead hub: the agent answers the
 *     repeat from its ledger;
 *   - away (its process stopped): the resumed action waits for it, and the
 *     hub is killed again while it waits, before it sent anything; the third
 *     hub sends it once the device is back.
 * And a webhook the kill found waiting between tries goes on with them after
 * the restart, counted as one action's, and is taken once.
 */
const HANDLERS = fileURLToPath(new URL('./fixtures/counted-commands.mjs', import.meta.url))
const DEVICE = 'rc-pump'
const RULE = 'pump.vibration'
const SECRET = 'a-shared-secret-of-some-length'

interface ChainAction extends ActionRow { readonly command?: CommandRecord }
interface Chain extends Omit<FiringView, 'actions'> { readonly actions: readonly ChainAction[] }
interface RuleDetail { readonly counters: { readonly fired: number; readonly suppressedStale: number; readonly actionsFailed: number }; readonly recentFirings: readonly FiringView[] }

describe('a hub killed right after a rule fired', () => {
  const procs: Proc[] = []
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const p of procs.splice(0)) {
      // A stopped process ends on SIGKILL too, but is let go first so its teardown is the usual one.
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGCONT')
      await killProc(p)
    }
    while (cleanups.length) await cleanups.pop()!()
  })

  /**
   * A hub process and a pump: an agent process whose sensor `vib` reads 0.2
   * every 100 ms (above the rules' threshold) and that runs `count.slow`.
   * `restart()` starts a hub again on the same data and MQTT port.
   */
  async function hubAndPump() {
    const tmp = tempDir('rules-crash')
    cleanups.push(tmp.remove)
    const hubDir = join(tmp.dir, 'hub')
    const agentDir = join(tmp.dir, 'agent')
    mkdirSync(agentDir, { recursive: true })
    const statsFile = join(tmp.dir, 'agent-stats.json')
    let hub: HubProc = await startHubProc(hubDir)
    procs.push(hub)
    const port = hub.mqttPort
    const add = await hub.api<{ token: string }>('POST', '/api/devices', { id: DEVICE })
    expect(add.status).toBe(201)
    const agent = startAgentProc({
      mqttPort: port, id: DEVICE, token: add.body.token, dataDir: agentDir, env: { ROLLCALL_STATS_FILE: statsFile },
      // info: the agent says when a repeat of a command id reaches it.
      logLevel: 'info',
      config: {
        builtinSensors: false, sampleIntervalMs: 100, sensors: [{ name: 'vib', model: 'constant', min: 0.2, max: 0.2 }],
        handlersModule: HANDLERS, reconnectBaseMs: 50, reconnectMaxMs: 500, keepaliveSec: 5,
      },
    })
    procs.push(agent)
    const online = () => waitFor(async () => (await hub.api<{ presence: { reachable: boolean } | null }>('GET', `/api/devices/${DEVICE}`)).body.presence?.reachable === true, 'the device reachable')
    await online()
    return {
      agent, agentDir, online,
      hub: () => hub,
      restart: async (): Promise<void> => {
        hub = await startHubProc(hubDir, { mqttPort: port })
        procs.push(hub)
      },
      /**
       * The agent's own counts, written as it stops (SIGTERM): only the last
       * snapshot, written once it stopped, has them all (the ones before it
       * are seconds old), so the agent must have stopped cleanly.
       */
      agentStats: async (): Promise<AgentStats> => {
        agent.child.kill('SIGTERM')
        // Measured under 1 s: a hang guard of 30 s.
        await waitFor(() => agent.child.exitCode !== null || agent.child.signalCode !== null, 'the agent to stop', 30_000)
        expect(agent.child.exitCode, agent.output()).toBe(0)
        const snapshot = JSON.parse(readFileSync(statsFile, 'utf8')) as StatsSnapshot
        expect(snapshot.final).toBe(true)
        return snapshot.agent
      },
      /** Waits until the agent has logged that a repeat of the command `id` reached it. */
      repeatReached: async (id: string): Promise<void> => {
        await waitFor(() => agent.output().split('\n').some((line) => line.includes('"msg":"repeated command') && line.includes(`"id":"${id}"`)),
          'the repeat of the command to reach the device')
      },
      /** The rule's one firing, and its chain. */
      chain: async (): Promise<Chain> => {
        const firing = (await hub.api<RuleDetail>('GET', `/api/rules/${RULE}`)).body.recentFirings[0]!
        return (await hub.api<Chain>('GET', `/api/firings/${firing.id}`)).body
      },
      /** Waits until the hub has stored a few more samples: they met the rule after what the test did. */
      moreSamples: async (): Promise<void> => {
        const mark = async () => Math.max(0, ...(await hub.api<{ streams: Array<{ upTo: number }> }>('GET', `/api/devices/${DEVICE}`)).body.streams.map((st) => st.upTo))
        const seen = await mark()
        await waitFor(async () => (await mark()) >= seen + 5, 'more samples stored by the last hub')
      },
    }
  }

  type Restart = 'running' | 'finished' | 'away'
  it.each<[Restart, string]>([
    ['running', 'the device still runs the command at the restart: the repeat of its id is not run, its one run answers'],
    ['finished', 'the device finished the command while the hub was dead: the repeat of its id is answered from its ledger'],
    ['away', 'the device is away at the restart and the hub is killed again while the action waits for it: the third hub sends it once'],
  ])('finishes the action after the restart and the device runs the command once (%s): %s', async (restart) => {
    const { agent, agentDir, online, hub, restart: again, agentStats, chain, moreSamples, repeatReached } = await hubAndPump()
    const runsFile = join(agentDir, 'count.slow.runs')
    const lines = () => (existsSync(runsFile) ? readFileSync(runsFile, 'utf8').split('\n').filter((l) => l !== '') : [])

    // Running: the run ends only when the test releases it, once the resumed action's repeat has reached the device.
    const releaseFile = join(agentDir, 'count.slow.release')
    // Away: the run also waits for the release, so it cannot end before the third hub has sent the command
    // again, however long two restarts take on a busy machine (its reply would then come first, as a late one).
    const held = restart === 'running' || restart === 'away'
    const handlerMs = held ? 60_000 : 1500
    const added = await hub().api('POST', '/api/rules', {
      name: RULE, for: `device:${DEVICE}`,
      when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, clear: { op: '<=', value: 0.06 } } },
      then: [{ command: { name: 'count.slow', args: { file: runsFile, ms: handlerMs, ...(held ? { release: releaseFile } : {}) }, timeoutMs: 90_000 } }],
    })
    expect(added.status).toBe(201)

    // The device started the command: the firing, its action and the command's record are committed.
    await waitFor(() => lines().length > 0, 'the command started on the device')
    const t0 = performance.now()
    if (restart === 'away') agent.child.kill('SIGSTOP')
    // Hub and test share the machine's clock: the chain's times are told apart from the kills on it.
    let killedAt = Date.now()
    await killProc(hub(), 'SIGKILL')
    if (restart === 'finished') await waitFor(() => lines().length === 2, 'the command finished on the device while the hub was dead')
    await again()

    if (restart === 'running') {
      await online()
      // The last hub sent the command again (its record says so) while the device still runs it; then the run may end.
      await waitFor(async () => ((await chain()).actions[0]!.command?.sentAt ?? 0) > killedAt, 'the command sent again by the restarted hub')
      // The record is written before the command goes out: the run ends only once the device has the repeat.
      await repeatReached((await chain()).actions[0]!.command!.id)
      expect(lines()).toHaveLength(1)
      writeFileSync(releaseFile, '')
    }
    if (restart === 'away') {
      // The resumed action has started (a second attempt), and waits: nothing was sent to the stopped device.
      await waitFor(async () => (await chain()).actions[0]!.attempts === 2, 'the resumed action started')
      const c = await chain()
      expect(c.actions[0]).toMatchObject({ status: 'pending', command: { status: 'disconnected', error: { code: 'HUB_RESTART' } } })
      killedAt = Date.now()
      await killProc(hub(), 'SIGKILL')
      agent.child.kill('SIGCONT')
      await again()
      await online()
      await waitFor(async () => ((await chain()).actions[0]!.command?.sentAt ?? 0) > killedAt, 'the command sent again by the third hub')
      await repeatReached((await chain()).actions[0]!.command!.id)
      expect(lines()).toHaveLength(1)
      writeFileSync(releaseFile, '')
    }

    // Measured 3-8 s from the kill (most of it the handler's own wait): a hang guard of 60 s.
    const done = await waitFor(async () => {
      const c = await chain()
      return c.actions[0]!.status === 'pending' ? undefined : c
    }, 'the action done after the restart', 60_000, 100)
    const recoveredMs = performance.now() - t0

    // The chain: the firing, its trigger, the one action done with its attempts and timings, the command it made.
    const id = done.id
    const commandId = done.actions[0]!.command?.id
    expect(done).toMatchObject({ rule: RULE, deviceId: DEVICE, trigger: { kind: 'sample', sensor: 'vib', value: 0.2 } })
    expect(done.actions).toHaveLength(1)
    const action = done.actions[0]!
    expect(action).toMatchObject({ kind: 'command', status: 'done', attempts: restart === 'away' ? 3 : 2 })
    expect(action.command).toMatchObject({ name: 'count.slow', status: 'succeeded', result: { ran: commandId }, cause: { rule: RULE, firing: id } })
    // Its timings: fired, started, the hub killed, the command sent again by the last hub and answered, the action ended.
    const cmd = action.command!
    expect(cmd.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'sent again after a hub restart', 'replied'])
    // The first send by the hub that was killed, the second by the last hub.
    expect(cmd.timeline[1]!.at).toBeLessThan(killedAt)
    expect(cmd.timeline[2]!.at).toBe(cmd.sentAt)
    expect(action.startedAt).toBeGreaterThanOrEqual(done.at)
    expect(cmd.createdAt).toBeGreaterThanOrEqual(action.startedAt!)
    expect(cmd.createdAt).toBeLessThan(killedAt)
    expect(cmd.sentAt).toBeGreaterThan(killedAt)
    expect(cmd.finishedAt).toBeGreaterThanOrEqual(cmd.sentAt!)
    expect(action.endedAt).toBeGreaterThanOrEqual(cmd.finishedAt!)

    // One firing: the condition still holds across the restart and fires no more, for samples stored since.
    await moreSamples()
    const rule = (await hub().api<RuleDetail>('GET', `/api/rules/${RULE}`)).body
    expect(rule.counters).toMatchObject({ fired: 1, suppressedStale: 0, actionsFailed: 0 })
    expect(rule.recentFirings.map((f) => f.id)).toEqual([id])

    // One command record for the firing, and one run on the device, counted there.
    const cmds = (await hub().api<{ commands: CommandRecord[] }>('GET', `/api/devices/${DEVICE}/commands`)).body.commands
    expect(cmds.filter((c) => c.cause?.firing === id).map((c) => c.id)).toEqual([commandId])
    expect(cmds).toHaveLength(1)
    expect(lines()).toEqual([`start ${commandId}`, `end ${commandId}`])
    // The agent's own count: one run, and the resumed action's repeat of the id recognised as one.
    expect((await agentStats()).commands).toMatchObject({ ran: 1, duplicates: 1, failed: 0 })
    console.log(`rules-crash (${restart}): action done ${Math.round(recoveredMs)} ms after the kill`)
  }, 120_000)

  it('goes on after the restart with a webhook the kill found in back-off: its tries counted across the restart, taken once, each signed', async () => {
    // A receiver that answers 503 until the test opens it; every call and every answer is kept.
    const calls: Array<{ headers: IncomingMessage['headers']; body: string; status: number }> = []
    let open = false
    const server: Server = createServer((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (chunk: string) => { body += chunk })
      req.on('end', () => {
        const status = open ? 200 : 503
        calls.push({ headers: req.headers, body, status })
        res.writeHead(status, { connection: 'close' })
        res.end()
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve) }))
    const address = server.address()
    const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/hook`

    const { hub, restart, chain, moreSamples } = await hubAndPump()
    const added = await hub().api('POST', '/api/rules', {
      name: RULE, for: `device:${DEVICE}`,
      when: { telemetry: { sensor: 'vib', op: '>', value: 0.08, clear: { op: '<=', value: 0.06 } } },
      then: [{ webhook: { url, secret: SECRET } }],
    })
    expect(added.status).toBe(201)
    // Two tries refused, both counted in the firing's record: the hub now waits 2 s before the third.
    await waitFor(() => calls.length >= 2, 'two tries at the receiver')
    await waitFor(async () => (await chain()).actions[0]!.attempts === calls.length, 'the tries recorded')
    const before = calls.length
    await killProc(hub(), 'SIGKILL')
    open = true
    await restart()

    const done = await waitFor(async () => {
      const c = await chain()
      return c.actions[0]!.status === 'pending' ? undefined : c
    }, 'the webhook taken after the restart')
    // One more try after the restart, at once (its back-off ended with the hub), taken: the tries of both hubs counted as one action's.
    expect(calls.map((c) => c.status)).toEqual([...Array.from({ length: before }, () => 503), 200])
    expect(done.actions[0]).toMatchObject({ kind: 'webhook', status: 'done', attempts: before + 1, outcome: { attempts: before + 1, status: 200 } })
    for (const c of calls) {
      expect(c.headers['x-rollcall-delivery']).toBe(`${done.id}.0`)
      const ts = String(c.headers['x-rollcall-timestamp'])
      expect(c.headers['x-rollcall-signature']).toBe(`sha256=${createHmac('sha256', SECRET).update(`${ts}.${c.body}`).digest('hex')}`)
      expect(JSON.parse(c.body)).toMatchObject({ type: 'rule.firing', v: 1, rule: RULE, firing: done.id, action: 0, deviceId: DEVICE })
    }
    // Nothing given up, and one firing: the condition that still holds fired no more after the restart.
    await moreSamples()
    const rule = (await hub().api<RuleDetail>('GET', `/api/rules/${RULE}`)).body
    expect(rule.counters).toMatchObject({ fired: 1, actionsFailed: 0 })
    expect((await hub().api<{ deadLetters: unknown[] }>('GET', '/api/dead-letters')).body.deadLetters).toEqual([])
    expect(calls.filter((c) => c.status === 200)).toHaveLength(1)
  }, 120_000)
})
