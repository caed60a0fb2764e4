import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { MqttClient } from 'mqtt'
import { encode, topics, type CommandRequest } from '../protocol/index.js'
import type { CommandRecord } from '../hub/commands/store.js'
import type { GroupResult } from '../hub/commands/commands.js'
import type { Agent } from '../agent/agent.js'
import { startAgents } from './support/agents.js'
import { connectDevice, tempDir, waitFor } from './support/hub.js'
import { CLI, killProc, startHubProc, type HubProc } from './support/procs.js'
import { cliCommand } from '../cli/invocation.js'

/**
 * `rollcall cmd ...` against a real hub process (issue #4). One device runs
 * a real agent in this process; the others are played with MQTT.js clients,
 * as in hub.commands.test.ts, so each can be made to answer, fail or stay
 * silent on cue.
 */
function rollcall(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

/** A line as a user pastes it: through a shell, in the repository (where `npx rollcall` works). */
function paste(line: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', line], { cwd: REPO, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

const REPO = fileURLToPath(new URL('..', import.meta.url))

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-000000000004'

type Reply = (req: CommandRequest) => { ok: boolean; result?: unknown; error?: { code: string; message: string } } | undefined

/** Answers like an agent: ping, echo, and DISK_FULL for `boom`; `sleep` never answers. */
const reply: Reply = (req) => {
  switch (req.name) {
    case 'ping': return { ok: true, result: { pong: true } }
    case 'echo': return { ok: true, result: { args: req.args ?? null } }
    case 'boom': return { ok: false, error: { code: 'DISK_FULL', message: 'no space left on /data' } }
    case 'sleep': return undefined
    default: return { ok: false, error: { code: 'UNKNOWN_COMMAND', message: `this device has no command "${req.name}"` } }
  }
}

describe('rollcall cmd', () => {
  let hub: HubProc
  let dir: { dir: string; remove: () => void }
  let target: string[]
  /** A hint's tail: this run's flags, so it works when pasted (issue #11). */
  let flags: string
  /** `npx rollcall` in a clone, `rollcall` where it is installed. */
  const cli = cliCommand(process.env).replace(' ', '\\s')
  const clients: MqttClient[] = []
  let agents: Agent[] = []
  const run = (...args: string[]) => rollcall([...args, ...target])

  /** A device played by an MQTT.js client that answers with `reply`. */
  async function device(id: string, token: string): Promise<void> {
    const client = await connectDevice(`mqtt://127.0.0.1:${hub.mqttPort}`, id, token)
    clients.push(client)
    client.on('message', (_topic, payload) => {
      const req = JSON.parse(payload.toString()) as CommandRequest
      const r = reply(req)
      if (r) void client.publishAsync(topics.cmdRes(id), encode({ type: 'cmd.res', v: 1, id: req.id, ...r }), { qos: 1 })
    })
    await client.subscribeAsync(topics.cmdReq(id), { qos: 1 })
    await client.publishAsync(topics.state(id), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b', agentVersion: 't', storeId, capabilities: ['commands'] }), { qos: 1, retain: true })
    await waitFor(async () => (await hub.api<{ presence: { reachable: boolean } | null }>('GET', `/api/devices/${id}`)).body.presence?.reachable, `${id} reachable`)
  }

  beforeAll(async () => {
    dir = tempDir('cli-commands')
    hub = await startHubProc(join(dir.dir, 'hub'))
    target = ['--api', `http://127.0.0.1:${hub.httpPort}`, '--data', join(dir.dir, 'hub')]
    flags = target.join(' ').replace(/[.]/g, '\\.')
    const ag = await hub.api<{ token: string }>('POST', '/api/devices', { id: 'cc-agent' })
    agents = await startAgents(`mqtt://127.0.0.1:${hub.mqttPort}`, join(dir.dir, 'agents'), [{ id: 'cc-agent', token: ag.body.token }], {}, {
      commands: { 'disk.check': () => { throw Object.assign(new Error('no space left on /var'), { code: 'DISK_FULL' }) } },
    })
    for (const [id, group, online] of [['cc-01', 'cc-lab', true], ['cc-02', 'cc-lab', true], ['cc-03', 'cc-lab', false], ['cc-04', 'cc-ok', true], ['cc-05', 'cc-ok', true]] as const) {
      const r = await hub.api<{ token: string }>('POST', '/api/devices', { id, group })
      if (r.status !== 201) throw new Error(`device ${id}: ${r.status}`)
      if (online) await device(id, r.body.token)
    }
  })
  afterAll(async () => {
    for (const a of agents) await a.stop()
    for (const c of clients) await c.endAsync(true)
    await killProc(hub, 'SIGTERM')
    dir.remove()
  })

  it('prints the result of a command that succeeded, and exits 0', async () => {
    const r = await run('cmd', 'cc-01', 'echo', '--args', '{"hello":[1,2]}', '--timeout', '3s')
    expect([r.code, r.stderr]).toEqual([0, ''])
    expect(JSON.parse(r.stdout)).toEqual({ args: { hello: [1, 2] } })
    expect(r.stdout).toBe(`${JSON.stringify({ args: { hello: [1, 2] } }, null, 2)}\n`)
  })

  it('a real agent answers its built-ins, its own commands\' errors, and UNKNOWN_COMMAND', async () => {
    await waitFor(async () => (await hub.api<{ presence: { reachable: boolean } | null }>('GET', '/api/devices/cc-agent')).body.presence?.reachable, 'agent reachable')
    const ping = await run('cmd', 'cc-agent', 'ping')
    expect([ping.code, ping.stderr]).toEqual([0, ''])
    expect(JSON.parse(ping.stdout)).toMatchObject({ pong: true, ts: expect.any(Number) as unknown })
    const info = await run('cmd', 'cc-agent', 'sys.info', '--json')
    expect(JSON.parse(info.stdout)).toMatchObject({ ok: true, result: { deviceId: 'cc-agent', commands: { running: 1 } } })
    const failed = await run('cmd', 'cc-agent', 'disk.check')
    expect([failed.code, failed.stdout]).toEqual([1, ''])
    expect(failed.stderr).toMatch(/^rollcall: DISK_FULL: no space left on \/var \(command c[0-9a-v]{12} on cc-agent\)\n$/)
    const unknown = await run('cmd', 'cc-agent', 'reboot')
    expect(unknown.stderr).toMatch(/^rollcall: UNKNOWN_COMMAND: this device has no command "reboot"; it has: .*config\.get.*disk\.check.*ping/)
  })

  it('with --json prints the whole outcome', async () => {
    const r = await run('cmd', 'cc-01', 'ping', '--json')
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, status: 'succeeded', deviceId: 'cc-01', result: { pong: true }, id: expect.stringMatching(/^c[0-9a-v]{12}$/) as unknown })
  })

  it('a device error exits 1 with the device\'s code on stderr; --json still prints the outcome', async () => {
    const r = await run('cmd', 'cc-01', 'boom')
    expect([r.code, r.stdout]).toEqual([1, ''])
    expect(r.stderr).toMatch(/^rollcall: DISK_FULL: no space left on \/data \(command c[0-9a-v]{12} on cc-01\)\n$/)
    const unknown = await run('cmd', 'cc-01', 'reboot.now')
    expect([unknown.code, unknown.stderr]).toEqual([1, expect.stringMatching(/^rollcall: UNKNOWN_COMMAND: /) as unknown])
    const j = await run('cmd', 'cc-01', 'boom', '--json')
    expect(j.code).toBe(1)
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, status: 'failed', error: { code: 'DISK_FULL' } })
    expect(j.stderr).toMatch(/^rollcall: DISK_FULL: /)
  })

  it('an offline device exits 1 with DEVICE_OFFLINE at once; a silent one with COMMAND_TIMEOUT and the command id', async () => {
    const t0 = Date.now()
    const off = await run('cmd', 'cc-03', 'ping')
    expect([off.code, off.stdout]).toEqual([1, ''])
    expect(off.stderr).toMatch(/^rollcall: DEVICE_OFFLINE: device "cc-03" is not reachable now \(it has never connected\); retry later, or add --if-offline queue to run it as a job/)
    expect(off.stderr).not.toMatch(/ifOffline/)
    expect(Date.now() - t0).toBeLessThan(5000)
    const slow = await run('cmd', 'cc-01', 'sleep', '--timeout', '300ms')
    expect(slow.code).toBe(1)
    const m = new RegExp(`^rollcall: COMMAND_TIMEOUT: no reply from "cc-01" within 300 ms \\(command (c[0-9a-v]{12}): ${cli} cmd show \\1 ${flags}\\)\\n$`).exec(slow.stderr)
    expect(m, slow.stderr).not.toBeNull()
    // The hint works as printed, pasted into a shell in the repository.
    const pasted = await paste(/: ((?:npx )?rollcall cmd show .*)\)\n$/.exec(slow.stderr)![1]!)
    expect(pasted.stdout, pasted.stderr).toMatch(new RegExp(`^command\\s+${m![1]!}\\s+sleep`))
    const show = await run('cmd', 'show', m![1]!)
    expect(show.stdout).toMatch(/^status\s+timed_out in \d+ ms$/m)
    expect(show.stdout).toMatch(/^error\s+COMMAND_TIMEOUT: no reply from "cc-01" within 300 ms$/m)
    expect(show.stdout).toMatch(/^args\s+-$/m)
  })

  it('with --if-offline queue, an offline device\'s command becomes a job: exit 3 and where to follow it', async () => {
    const r = await run('cmd', 'cc-03', 'sys.info', '--if-offline', 'queue')
    expect([r.code, r.stderr]).toEqual([3, ''])
    const m = new RegExp(`^queued as job (j[0-9a-v]{12}): it runs when cc-03 is back \\(follow it: ${cli} job show \\1 ${flags}\\)\\n$`).exec(r.stdout)
    expect(m, r.stdout).not.toBeNull()
    const job = await hub.api<{ name: string; target: string }>('GET', `/api/jobs/${m![1]!}`)
    // The job's task runs the same command handler on the device; its exact name is the hub's business.
    expect(job.body).toMatchObject({ name: expect.stringMatching(/sys\.info$/) as unknown, target: 'device:cc-03' })
    const j = await run('cmd', 'cc-03', 'sys.info', '--if-offline', 'queue', '--json')
    expect(j.code).toBe(3)
    expect(JSON.parse(j.stdout)).toMatchObject({ status: 'queued', deviceId: 'cc-03', jobId: expect.stringMatching(/^j/) as unknown })
  })

  it('a group where every member answers ok exits 0 and prints a table', async () => {
    const r = await run('cmd', 'group:cc-ok', 'ping')
    expect([r.code, r.stderr]).toEqual([0, ''])
    const lines = r.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^DEVICE\s+STATUS\s+DURATION\s+RESULT \/ ERROR$/)
    expect(lines[1]).toMatch(/^cc-04\s+succeeded\s+\d+(\.\d)? ms\s+\{"pong":true\}$/)
    expect(lines[2]).toMatch(/^cc-05\s+succeeded\s+/)
    expect(lines[3]).toMatch(new RegExp(`^2/2 succeeded in \\S+ ms \\(command (c[0-9a-v]{12}): ${cli} cmd show \\1 ${flags}\\)$`))
    const list = await run('cmd', 'device:cc-04,cc-05', 'echo', '--args', '7')
    expect(list.code).toBe(0)
  })

  it('a group with a failure and an offline member exits 1, lists who was skipped, and says why on stderr', async () => {
    const r = await run('cmd', 'group:cc-lab', 'ping')
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^cc-01\s+succeeded\s+/m)
    expect(r.stdout).toMatch(/^skipped 1 offline: cc-03$/m)
    expect(r.stdout).toMatch(/^2\/3 succeeded in /m)
    expect(r.stderr).toBe('rollcall: DEVICE_OFFLINE: 2 of 3 succeeded; 1 skipped as offline\n')

    const mixed = await run('cmd', 'device:cc-01,cc-02,cc-03', 'boom', '--json')
    expect(mixed.code).toBe(1)
    const g = JSON.parse(mixed.stdout) as GroupResult
    expect(g.counts).toEqual({ succeeded: 0, failed: 2, timed_out: 0, disconnected: 0, skipped: 1 })
    expect(mixed.stderr).toBe('rollcall: PARTIAL_FAILURE: 0 of 3 succeeded; 2 failed, 1 skipped as offline\n')

    const failed = await run('cmd', 'group:cc-ok', 'boom')
    expect([failed.code, failed.stderr]).toEqual([1, 'rollcall: DISK_FULL: 0 of 2 succeeded; 2 failed\n'])
    expect(failed.stdout).toMatch(/^cc-04\s+failed\s+\S+ ms\s+DISK_FULL: no space left on \/data$/m)

    const queued = await run('cmd', 'group:cc-lab', 'ping', '--if-offline', 'queue')
    expect([queued.code, queued.stderr]).toEqual([3, ''])
    expect(queued.stdout).toMatch(/^skipped 1 offline, queued as job j[0-9a-v]{12} \(they run it when back\): cc-03$/m)
  })

  it('cmd show prints a command\'s record and timeline, and a group command\'s members', async () => {
    const sent = JSON.parse((await run('cmd', 'cc-02', 'echo', '--args', '{"n":1}', '--json')).stdout) as { id: string }
    const show = await run('cmd', 'show', sent.id)
    expect(show.code).toBe(0)
    expect(show.stdout).toMatch(new RegExp(`^command\\s+${sent.id}\\s+echo\\n`))
    expect(show.stdout).toMatch(/^device\s+cc-02$/m)
    expect(show.stdout).toMatch(/^status\s+succeeded in \S+ ms$/m)
    expect(show.stdout).toMatch(/^args\s+\{"n":1\}$/m)
    expect(show.stdout).toMatch(/^result\s+\{"args":\{"n":1\}\}$/m)
    expect(show.stdout).toMatch(/^TIME\s+EVENT$/m)
    // Local time with milliseconds: a command's steps are milliseconds apart.
    const at = '\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3}'
    expect(show.stdout).toMatch(new RegExp(`^${at}\\s+created\\n${at}\\s+sent\\n${at}\\s+replied\\n$`, 'm'))
    const rec = JSON.parse((await run('cmd', 'show', sent.id, '--json')).stdout) as CommandRecord
    expect(rec.timeline.map((e) => e.event)).toEqual(['created', 'sent', 'replied'])

    const g = JSON.parse((await run('cmd', 'group:cc-lab', 'ping', '--json')).stdout) as GroupResult
    const gs = await run('cmd', 'show', g.id)
    expect(gs.code).toBe(0)
    expect(gs.stdout).toMatch(new RegExp(`^group command ${g.id}\\s+ping, `))
    expect(gs.stdout).toMatch(/^DEVICE\s+ID\s+STATUS\s+DURATION\s+RESULT \/ ERROR$/m)
    expect(gs.stdout).toMatch(/^cc-01\s+c[0-9a-v]{12}\s+succeeded\s+/m)
    expect(gs.stdout).toMatch(/^cc-03\s+c[0-9a-v]{12}\s+offline\s+-\s+DEVICE_OFFLINE: /m)
    const gj = JSON.parse((await run('cmd', 'show', g.id, '--json')).stdout) as { groupId: string; commands: CommandRecord[] }
    expect(gj.commands.map((c) => c.deviceId)).toEqual(['cc-01', 'cc-02', 'cc-03'])
  })

  it('cmd list prints a device\'s commands newest first, with --limit and --json', async () => {
    await run('cmd', 'cc-05', 'echo', '--args', '"first"')
    await run('cmd', 'cc-05', 'boom')
    const list = await run('cmd', 'list', 'cc-05')
    expect(list.code).toBe(0)
    const lines = list.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^ID\s+NAME\s+STATUS\s+CREATED\s+DURATION\s+RESULT \/ ERROR$/)
    expect(lines[1]).toMatch(/^c[0-9a-v]{12}\s+boom\s+failed\s+\S+ ago\s+\S+ ms\s+DISK_FULL: /)
    expect(lines[2]).toMatch(/^c[0-9a-v]{12}\s+echo\s+succeeded\s+.*\{"args":"first"\}$/)
    const one = JSON.parse((await run('cmd', 'list', 'cc-05', '--limit', '1', '--json')).stdout) as { commands: CommandRecord[] }
    expect(one.commands.map((c) => c.name)).toEqual(['boom'])
    const none = await hub.api('POST', '/api/devices', { id: 'cc-quiet' })
    expect(none.status).toBe(201)
    expect((await run('cmd', 'list', 'cc-quiet')).stdout).toMatch(new RegExp(`^no commands for cc-quiet yet; send one with: ${cli} cmd cc-quiet ping ${flags}\\n$`))
  })

  // 2: a usage error, here or refused by the hub as malformed (HTTP 400); 1: the rest (issue #11).
  it.each<[string, string[], number, RegExp]>([
    ['bad JSON in --args', ['cmd', 'cc-01', 'echo', '--args', '{bad'], 2, /--args is not valid JSON \(.*\); quote it for the shell, e\.g\. --args '\{/],
    ['a --timeout without a unit', ['cmd', 'cc-01', 'ping', '--timeout', '5'], 2, /--timeout must be a duration with its unit .*e\.g\. 30s.*got "5"/],
    ['a --timeout over 5m', ['cmd', 'cc-01', 'ping', '--timeout', '1h'], 2, /--timeout must be at most 5m, got "1h": a command is for now; for work that may take longer, create a job/],
    ['a bad --if-offline', ['cmd', 'cc-01', 'ping', '--if-offline', 'wait'], 2, /--if-offline must be one of fail, queue; got "wait"/],
    ['a missing name', ['cmd', 'cc-01'], 2, /missing required argument 'name'/],
    ['a bad command name', ['cmd', 'cc-01', 'Reboot!'], 2, /^rollcall: BAD_REQUEST: command name "Reboot!" must be lowercase letters/],
    ['an unknown device', ['cmd', 'ghost-01', 'ping'], 1, /^rollcall: DEVICE_NOT_FOUND: no device "ghost-01"/],
    ['an unknown device in a list', ['cmd', 'device:cc-01,ghost-02', 'ping'], 1, /^rollcall: DEVICE_NOT_FOUND: no device "ghost-02"/],
    ['an empty group', ['cmd', 'group:nobody', 'ping'], 2, /^rollcall: TARGET_EMPTY: /],
    ['a bad target', ['cmd', 'everyone:x', 'ping'], 2, /^rollcall: BAD_REQUEST: target "everyone:x" is not understood/],
    ['an unknown command id', ['cmd', 'show', 'caaaaaaaaaaaa'], 1, /^rollcall: COMMAND_NOT_FOUND: no command "caaaaaaaaaaaa"/],
    ['a bad --limit', ['cmd', 'list', 'cc-01', '--limit', '0'], 2, /--limit must be a whole number from 1 to 1000, got "0"/],
    ['list for an unknown device', ['cmd', 'list', 'ghost-01'], 1, /^rollcall: DEVICE_NOT_FOUND: /],
  ])('exits with a message that says what to fix for %s', async (_what, args, exitCode, message) => {
    const r = await run(...args)
    expect(r.code).toBe(exitCode)
    expect(r.stderr).toMatch(message)
    expect(r.stdout).toBe('')
  })

  it('documents the exit codes in --help, and has help for show and list', async () => {
    const help = await rollcall(['cmd', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^Usage: rollcall cmd TARGET NAME \[options\]$/m)
    expect(help.stdout).toMatch(/^Exit status:\n\s+0\s+it ran and succeeded/m)
    for (const sub of ['show', 'list']) {
      const r = await rollcall(['cmd', sub, '--help'])
      expect(r.code, sub).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`^Usage: rollcall cmd ${sub} `))
    }
  })
})
