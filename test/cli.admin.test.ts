import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { connectDevice, tempDir, waitFor } from './support/hub.js'
import { CLI, killProc, startHubProc, type HubProc } from './support/procs.js'
import { cliCommand } from '../cli/invocation.js'

/** The admin CLI against a real hub process: output, --json, exit codes and error messages. */
function rollcall(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

describe('rollcall admin commands', () => {
  let hub: HubProc
  let dir: { dir: string; remove: () => void }
  let target: string[]

  beforeAll(async () => {
    dir = tempDir('cli')
    hub = await startHubProc(join(dir.dir, 'hub'))
    target = ['--api', `http://127.0.0.1:${hub.httpPort}`, '--data', join(dir.dir, 'hub')]
  })
  afterAll(async () => {
    await killProc(hub, 'SIGTERM')
    dir.remove()
  })

  it('adds a device and prints its token once, as text and as JSON', async () => {
    const text = await rollcall(['device', 'add', 'cli-01', '--group', 'lab', ...target])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/device cli-01 added to group lab/)
    expect(text.stdout).toMatch(/token \(shown once.*\): [A-Za-z0-9_-]{43}/)
    const json = await rollcall(['device', 'add', 'cli-02', ...target, '--json'])
    expect(JSON.parse(json.stdout)).toMatchObject({ id: 'cli-02', group: null, token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) as unknown })
  })

  it('lists and shows devices', async () => {
    const list = await rollcall(['device', 'list', ...target])
    expect(list.stdout.split('\n')[0]).toMatch(/^ID\s+GROUP\s+PRESENCE/)
    expect(list.stdout).toMatch(/cli-01\s+lab\s+never connected/)
    const json = JSON.parse((await rollcall(['device', 'list', '--group', 'lab', ...target, '--json'])).stdout) as { devices: Array<{ id: string }> }
    expect(json.devices.map((d) => d.id)).toEqual(['cli-01'])
    const show = await rollcall(['device', 'show', 'cli-01', ...target])
    expect(show.stdout).toMatch(/device\s+cli-01\s+\(group lab\)/)
  })

  it('reads the admin token from the environment instead of the data dir', async () => {
    const r = await rollcall(['device', 'list', '--api', `http://127.0.0.1:${hub.httpPort}`, '--data', '/nonexistent', '--json'], { ROLLCALL_ADMIN_TOKEN: hub.adminToken })
    expect(r.code).toBe(0)
  })

  // Exit 2 for what the user typed wrong (here or, HTTP 400, at the hub), 1 for the rest (issue #11).
  it.each<[string, string[], number, RegExp]>([
    ['an unknown device', ['device', 'show', 'nope-01'], 1, /^rollcall: DEVICE_NOT_FOUND: no device "nope-01"/],
    ['an invalid id', ['device', 'add', 'Bad_Id'], 2, /^rollcall: INVALID_DEVICE_ID: .*lowercase letters/],
    ['a duplicate', ['device', 'add', 'cli-01'], 1, /^rollcall: DEVICE_EXISTS: /],
    ['a bad time', ['telemetry', 'cli-01', '--since', 'yesterday'], 2, /^rollcall: BAD_REQUEST: since="yesterday" is not a time/],
    ['a bad limit', ['telemetry', 'cli-01', '--limit', 'lots'], 2, /--limit must be a whole number from 1 to 100000, got "lots"/],
  ])('exits with the error code on stderr for %s', async (_name, args, exitCode, message) => {
    const r = await rollcall([...args, ...target])
    expect(r.code).toBe(exitCode)
    expect(r.stderr).toMatch(message)
    expect(r.stdout).toBe('')
    // With --json, the same error is on stdout for scripts, and the exit code is the same.
    const j = await rollcall([...args, ...target, '--json'])
    expect(j.code).toBe(exitCode)
    const e = (JSON.parse(j.stdout) as { error: { code: string; message: string } }).error
    expect(`rollcall: ${e.code === 'USAGE' ? '' : `${e.code}: `}${e.message}\n`).toBe(j.stderr)
  })

  it('cuts a long dead-letter DETAIL with an ellipsis, not mid-word', async () => {
    const add = await hub.api<{ token: string }>('POST', '/api/devices', { id: 'cli-dl' })
    const client = await connectDevice(`mqtt://127.0.0.1:${hub.mqttPort}`, 'cli-dl', add.body.token)
    try {
      await client.publishAsync('devices/cli-dl/telemetry', 'x'.repeat(300), { qos: 1 })
      const stored = await waitFor(async () => (await hub.api<{ deadLetters: Array<{ detail: string }> }>('GET', '/api/dead-letters?device=cli-dl')).body.deadLetters[0], 'the dead letter')
      expect(stored.detail.length).toBeGreaterThan(80)
    } finally {
      await client.endAsync(true)
    }
    const r = await rollcall(['dead-letters', '--device', 'cli-dl', ...target])
    expect(r.code).toBe(0)
    const row = r.stdout.split('\n')[1]!
    expect(row).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+cli-dl\s+NOT_UTF8_JSON\s+300\s+devices\/cli-dl\/telemetry\s+payload is not valid UTF-8 JSON: .*…$/)
    expect(row.slice(row.indexOf('payload is')).length).toBeLessThanOrEqual(80)
  })

  it('prints hints that work when pasted: the command as it is reached here, with this run\'s --api and --data', async () => {
    const r = await rollcall(['observer', 'list', ...target])
    // `npx rollcall` in a clone; `rollcall` where it is installed on the PATH the child gets (ours).
    const cli = cliCommand(process.env)
    expect(r.stdout).toBe(`no observers; add one with: ${cli} observer add NAME ${target.join(' ')}\n`)
    const add = await rollcall(['device', 'add', 'cli-hint', ...target])
    expect(add.stdout).toContain(`\nrun the agent: ROLLCALL_TOKEN=`)
    expect(add.stdout).toMatch(new RegExp(` ${cli} agent --hub mqtt://127\\.0\\.0\\.1:${hub.mqttPort} --id cli-hint\n$`))
  })

  it('says how to fix a missing token or an unreachable hub', async () => {
    const noToken = await rollcall(['device', 'list', '--api', `http://127.0.0.1:${hub.httpPort}`, '--data', join(dir.dir, 'nowhere')], { ROLLCALL_ADMIN_TOKEN: '' })
    expect(noToken.stderr).toMatch(/no admin token: pass --admin-token, set ROLLCALL_ADMIN_TOKEN/)
    const down = await rollcall(['device', 'list', '--api', 'http://127.0.0.1:1', '--admin-token', 'x'])
    expect(down.stderr).toMatch(/UNAVAILABLE: cannot reach the hub at http:\/\/127.0.0.1:1/)
    const wrong = await rollcall(['device', 'list', '--api', `http://127.0.0.1:${hub.httpPort}`, '--admin-token', 'wrong'])
    expect(wrong.stderr).toMatch(/UNAUTHORIZED: the hub refused the admin token: pass the right one with --admin-token/)
    expect(wrong.stderr).not.toMatch(/Authorization: Bearer/)
  })

  it('documents every command with --help', async () => {
    for (const cmd of [['hub'], ['agent'], ['device', 'add'], ['observer', 'add'], ['telemetry'], ['events'], ['dead-letters'], ['demo']]) {
      const r = await rollcall([...cmd, '--help'])
      expect(r.code, cmd.join(' ')).toBe(0)
      expect(r.stdout).toMatch(/^Usage: rollcall /)
    }
  })
})
