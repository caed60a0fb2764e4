import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { tempDir } from './support/hub.js'
import { CLI, killProc, startHubProc, type HubProc } from './support/procs.js'

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

  it.each<[string, string[], RegExp]>([
    ['an unknown device', ['device', 'show', 'nope-01'], /^rollcall: DEVICE_NOT_FOUND: no device "nope-01"/],
    ['an invalid id', ['device', 'add', 'Bad_Id'], /^rollcall: INVALID_DEVICE_ID: .*lowercase letters/],
    ['a duplicate', ['device', 'add', 'cli-01'], /^rollcall: DEVICE_EXISTS: /],
    ['a bad time', ['telemetry', 'cli-01', '--since', 'yesterday'], /^rollcall: BAD_REQUEST: since="yesterday" is not a time/],
    ['a bad limit', ['telemetry', 'cli-01', '--limit', 'lots'], /--limit must be a whole number from 1 to 100000, got "lots"/],
  ])('exits 1 with the error code on stderr for %s', async (_name, args, message) => {
    const r = await rollcall([...args, ...target])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(message)
    expect(r.stdout).toBe('')
  })

  it('says how to fix a missing token or an unreachable hub', async () => {
    const noToken = await rollcall(['device', 'list', '--api', `http://127.0.0.1:${hub.httpPort}`, '--data', join(dir.dir, 'nowhere')], { ROLLCALL_ADMIN_TOKEN: '' })
    expect(noToken.stderr).toMatch(/no admin token: pass --admin-token, set ROLLCALL_ADMIN_TOKEN/)
    const down = await rollcall(['device', 'list', '--api', 'http://127.0.0.1:1', '--admin-token', 'x'])
    expect(down.stderr).toMatch(/UNAVAILABLE: cannot reach the hub at http:\/\/127.0.0.1:1/)
    const wrong = await rollcall(['device', 'list', '--api', `http://127.0.0.1:${hub.httpPort}`, '--admin-token', 'wrong'])
    expect(wrong.stderr).toMatch(/UNAUTHORIZED/)
  })

  it('documents every command with --help', async () => {
    for (const cmd of [['hub'], ['agent'], ['device', 'add'], ['observer', 'add'], ['telemetry'], ['events'], ['dead-letters'], ['demo']]) {
      const r = await rollcall([...cmd, '--help'])
      expect(r.code, cmd.join(' ')).toBe(0)
      expect(r.stdout).toMatch(/^Usage: rollcall /)
    }
  })
})
