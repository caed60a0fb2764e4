import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CommanderError, InvalidArgumentError } from 'commander'
import { describeFailure, failureLine, jsonRequested } from '../cli/failure.js'
import { ApiError } from '../cli/http.js'
import { REPEAT_WINDOW_MS, signalVerdict } from '../cli/signals.js'
import { CLI } from './support/procs.js'

/**
 * Exit codes and signals (issue #11): usage errors exit 2, runtime errors 1,
 * `rollcall` alone prints help and exits 0; with --json a failure is JSON on
 * stdout too; one Ctrl-C delivered twice (terminal and npm) is one stop.
 */
function rollcall(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

describe('what a failure exits with', () => {
  const plain = { startedByNpmStart: false }
  const inUse = Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE', port: 1883, address: '127.0.0.1' })

  it.each<[string, unknown, { code: string; exitCode: number; printed: boolean }]>([
    ['help or version', new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'), { code: 'OK', exitCode: 0, printed: true }],
    ['an unknown option', new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'"), { code: 'USAGE', exitCode: 2, printed: true }],
    ['a group without its subcommand', new CommanderError(1, 'commander.help', '(outputHelp)'), { code: 'USAGE', exitCode: 2, printed: true }],
    ['a bad flag value', new InvalidArgumentError('--limit must be a whole number'), { code: 'USAGE', exitCode: 2, printed: false }],
    ['a request the hub refused as malformed', new ApiError('BAD_REQUEST', 'since="x" is not a time', {}, 400), { code: 'BAD_REQUEST', exitCode: 2, printed: false }],
    ['an unknown device', new ApiError('DEVICE_NOT_FOUND', 'no device', {}, 404), { code: 'DEVICE_NOT_FOUND', exitCode: 1, printed: false }],
    ['an unreachable hub', new ApiError('UNAVAILABLE', 'cannot reach the hub'), { code: 'UNAVAILABLE', exitCode: 1, printed: false }],
    ['a port in use', inUse, { code: 'EADDRINUSE', exitCode: 1, printed: false }],
    ['anything else', new Error('boom'), { code: 'ERROR', exitCode: 1, printed: false }],
  ])('%s', (_what, err, expected) => {
    expect(describeFailure(err, plain)).toMatchObject(expected)
  })

  it('names the flags a port in use needs, after "--" under npm start', () => {
    expect(describeFailure(inUse, plain).message).toMatch(/already in use .*: --mqtt-port 0 --http-port 0$/)
    expect(describeFailure(inUse, { startedByNpmStart: true }).message).toMatch(/: npm start -- --mqtt-port 0 --http-port 0$/)
  })

  it('writes "rollcall: CODE: message", without a code for usage errors (the message names the flag)', () => {
    expect(failureLine(describeFailure(new ApiError('DEVICE_NOT_FOUND', 'no device "x"', {}, 404), plain))).toBe('rollcall: DEVICE_NOT_FOUND: no device "x"')
    expect(failureLine(describeFailure(new InvalidArgumentError('--limit must be a whole number'), plain))).toBe('rollcall: --limit must be a whole number')
  })

  it.each<[string[], boolean]>([
    [['device', 'list', '--json'], true],
    [['device', 'list'], false],
    [['sim', '--', '--json'], false],
  ])('jsonRequested(%j) is %s', (argv, expected) => {
    expect(jsonRequested(argv)).toBe(expected)
  })
})

describe('a shutdown signal', () => {
  it.each<[number | undefined, number, string]>([
    [undefined, 5000, 'stop'],
    [5000, 5000, 'ignore'],
    [5000, 5000 + REPEAT_WINDOW_MS - 1, 'ignore'],
    [5000, 5000 + REPEAT_WINDOW_MS, 'force'],
    [5000, 60_000, 'force'],
  ])('first at %s, now %i: %s', (first, now, verdict) => {
    expect(signalVerdict(first, now)).toBe(verdict)
  })
})

describe('rollcall exit codes', () => {
  it('`rollcall` alone prints help on stdout and exits 0; --version exits 0', async () => {
    const r = await rollcall([])
    expect([r.code, r.stderr]).toEqual([0, ''])
    expect(r.stdout).toMatch(/^Usage: rollcall /)
    expect((await rollcall(['--version'])).code).toBe(0)
  })

  it('a usage error exits 2: a missing subcommand, an unknown option, a bad value, a missing argument', async () => {
    const group = await rollcall(['device'])
    expect(group.code).toBe(2)
    expect(group.stderr).toMatch(/^Usage: rollcall device /)
    const unknown = await rollcall(['device', 'list', '--bogus'])
    expect([unknown.code, unknown.stdout]).toEqual([2, ''])
    expect(unknown.stderr).toMatch(/unknown option '--bogus'/)
    const bad = await rollcall(['telemetry', 'x-01', '--limit', 'lots'])
    expect([bad.code, bad.stderr]).toEqual([2, 'rollcall: --limit must be a whole number from 1 to 100000, got "lots"\n'])
    expect((await rollcall(['job', 'show'])).code).toBe(2)
    expect((await rollcall(['device', 'list', '--api', 'localhost'])).code).toBe(2)
  })

  it('with --json a failure is also {"error":{code,message}} on stdout, with the same exit code', async () => {
    const usage = await rollcall(['device', 'list', '--bogus', '--json'])
    expect(usage.code).toBe(2)
    expect(JSON.parse(usage.stdout)).toEqual({ error: { code: 'USAGE', message: "unknown option '--bogus'" } })
    const bad = await rollcall(['telemetry', 'x-01', '--limit', 'lots', '--json'])
    expect(JSON.parse(bad.stdout)).toEqual({ error: { code: 'USAGE', message: '--limit must be a whole number from 1 to 100000, got "lots"' } })
    const down = await rollcall(['device', 'list', '--api', 'http://127.0.0.1:1', '--admin-token', 'x', '--json'])
    expect(down.code).toBe(1)
    expect(JSON.parse(down.stdout)).toMatchObject({ error: { code: 'UNAVAILABLE', message: expect.stringMatching(/cannot reach the hub/) as unknown } })
    expect(down.stderr).toMatch(/^rollcall: UNAVAILABLE: /)
  })

  it('a hub whose port is taken says so in one line and exits 1, without a stack trace', async () => {
    const busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as { port: number }).port
    const data = mkdtempSync(join(tmpdir(), 'rollcall-port-taken-'))
    try {
      const r = await rollcall(['hub', '--data', data, '--mqtt-port', String(port), '--http-port', '0', '--log-format', 'json'])
      expect(r.code).toBe(1)
      expect(r.stderr).toContain(`rollcall: EADDRINUSE: port ${port} on 127.0.0.1 is already in use`)
      expect(r.stderr + r.stdout).not.toMatch(/"stack"|setupListenHandle|listener error/)
    } finally {
      busy.close()
      rmSync(data, { recursive: true, force: true })
    }
  })

  it('--help states where admin commands look for the hub by default', async () => {
    const r = await rollcall(['device', 'list', '--help'])
    expect(r.code).toBe(0)
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/--api <url> hub HTTP API \(or ROLLCALL_API; default http:\/\/127\.0\.0\.1:8080\)/)
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/--data <dir> .*default \.\/rollcall-data/)
  })
})
