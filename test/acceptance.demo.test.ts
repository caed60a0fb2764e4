import { afterEach, describe, expect, it } from 'vitest'
import { execFile, execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { adminApi } from '../common/admin-http.js'
import type { JobDetail } from '../hub/jobs/jobs.js'
import { tempDir, waitFor } from './support/hub.js'
import { MOSQUITTO_CLIENTS, runMosquitto } from './support/mosquitto.js'
import { CLI, isAlive, killProc, startCli, startProc, type Proc } from './support/procs.js'
import { within } from './support/leaks.js'

/**
 * Acceptance 4 (issue #5): `npm start` (`rollcall demo`) prints the URLs and
 * shows telemetry arriving; Ctrl-C leaves no process behind and
 * no port open. Issue #11, from a new user's trial: one Ctrl-C at a terminal
 * (SIGINT to npm and node, which npm forwards again) stops it gracefully,
 * leaving no SQLite -wal file; the commands it and the CLI print work when
 * pasted; the README's `shell` example runs on the demo's devices.
 */

const REPO = fileURLToPath(new URL('..', import.meta.url))

interface Run { readonly code: number; readonly stdout: string; readonly stderr: string }

/** `rollcall ...args` to completion. */
function rollcall(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

/** A line as a user pastes it: through a shell, in the repository (where `npx rollcall` works). */
function paste(line: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', line], { cwd: REPO, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

/**
 * `npm start -- ...args` in a process group of its own, as a terminal runs it,
 * so a test can send the group a Ctrl-C's SIGINT.
 */
function npmStart(args: string[]): Proc {
  return startProc('npm', ['start', '--', ...args], { cwd: REPO, detached: true, keepChars: 50_000 })
}

/** The group's processes (npm and the demo) are ours: SIGKILL them if a test left them running. */
async function killGroup(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return
  try { process.kill(-p.pid, 'SIGKILL') } catch { /* already gone */ }
  await within(p.exited, 10_000, undefined)
}

/** The demo's node process, a child of npm (its shell exec'd it). */
function demoProcess(npmPid: number): number {
  const ps = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(npmPid)], { encoding: 'utf8' })
  const line = ps.split('\n').find((l) => l.includes('cli/main.js demo'))
  if (!line) throw new Error(`no demo process under npm (pid ${npmPid}):\n${ps}`)
  return Number(line.trim().split(' ')[0])
}

/** Every file under dir whose name ends in -wal: SQLite's log, left behind when a database is not closed. */
function walFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('-wal'))
}

// eslint-disable-next-line no-control-regex
const stripColors = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '')

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/** The banner's copy-paste line as arguments: words, or single-quoted strings. */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!)
}

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

describe('rollcall demo', () => {
  it('prints the URLs, stores telemetry from the fleet, runs a job schedule, and Ctrl-C stops everything', async () => {
    const tmp = tempDir('demo')
    cleanups.push(tmp.remove)
    const demo: Proc = startCli(['demo', '--data', tmp.dir, '--mqtt-port', '0', '--http-port', '0'])
    cleanups.push(() => killProc(demo))

    const banner = await waitFor(() => /mosquitto_sub .*-v\n[\s\S]*curl .*\n/.test(demo.output()) ? demo.output() : undefined, 'the banner', 60_000)
    const mqttPort = Number(/MQTT broker +mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(banner)![1])
    const httpPort = Number(/HTTP API +http:\/\/127\.0\.0\.1:(\d+)/.exec(banner)![1])
    const adminToken = /admin token +(\S+)/.exec(banner)![1]!
    expect(banner).toMatch(/rollcall demo: hub \+ 25 simulated devices/)
    expect(banner).toMatch(/\d+ steady, \d+ flaky, \d+ intermittent/)
    expect(banner).toMatch(/(npx )?rollcall job create .* --target group:demo/)
    expect(banner).toMatch(/(npx )?rollcall cmd demo-01 /)
    const api = adminApi({ api: `http://127.0.0.1:${httpPort}`, token: adminToken })

    // Telemetry stored from more than one device (a few seconds after the start; the bound only guards against a hang).
    const stored = await waitFor(async () => {
      const r = await api<{ devices: Array<{ id: string; presence: string }> }>('GET', '/api/devices')
      const withData: string[] = []
      for (const d of r.body.devices ?? []) {
        const t = await api<{ samples: unknown[] }>('GET', `/api/devices/${d.id}/telemetry?since=0&limit=1`)
        if ((t.body.samples ?? []).length > 0) withData.push(d.id)
      }
      return withData.length >= 10 ? { devices: r.body.devices.length, withData } : undefined
    }, 'telemetry stored for 10 devices', 60_000, 250)
    expect(stored.devices).toBe(25)

    const schedules = await api<{ schedules: Array<{ name: string; cron: string; job: { name: string; target: string } }> }>('GET', '/api/schedules')
    expect(schedules.body.schedules).toEqual([expect.objectContaining({ name: 'demo-sample', cron: '* * * * *', job: expect.objectContaining({ name: 'sensors.sample', target: 'group:demo' }) as unknown })])

    // The copy-paste line works as printed.
    if (MOSQUITTO_CLIENTS) {
      const line = /(mosquitto_sub .*-v)\n/.exec(banner)![1]!
      const sub = await runMosquitto('mosquitto_sub', [...shellWords(line).slice(1), '-C', '1', '-W', '60'])
      expect(sub.stdout, sub.stderr).toMatch(/^devices\/demo-\d+\/telemetry \{"type":"telemetry"/)
    }

    // The banner's time is the terminal's convention: local YYYY-MM-DD HH:MM:SS.
    expect(banner).toMatch(/every minute \(next at \d{4}-\d\d-\d\d \d\d:\d\d:00\)\./)
    const flags = /rollcall job list (.*)\n/.exec(banner)![1]!.split(' ')

    // The README's shell example runs on the demo's devices (their shellAllow has /usr/bin/uptime),
    // and the hint it prints works when pasted.
    const made = await rollcall(['job', 'create', 'shell', '--target', 'group:demo', '--payload', '{"cmd":"/usr/bin/uptime"}', ...flags])
    expect(made.code, made.stderr).toBe(0)
    const follow = /^follow it: ((?:npx )?rollcall job show (j[0-9a-v]{12}) .*)$/m.exec(made.stdout)
    expect(follow, made.stdout).not.toBeNull()
    const pasted = await paste(follow![1]!)
    expect(pasted.code, pasted.stderr).toBe(0)
    expect(pasted.stdout).toMatch(new RegExp(`^job\\s+${follow![2]!}\\s+shell$`, 'm'))
    const ran = await waitFor(async () => {
      const j = (await api<JobDetail>('GET', `/api/jobs/${follow![2]!}`)).body
      return j.counts.succeeded >= 3 ? j : undefined
    }, 'the shell job to succeed on three devices', 60_000, 250)
    expect(ran.executions.filter((e) => e.error !== null).map((e) => e.error!.code)).not.toContain('COMMAND_NOT_ALLOWED')

    // A command the devices do not allow: `job show` says why, not just the code.
    const denied = await rollcall(['job', 'create', 'shell', '--target', 'device:demo-01', '--payload', '{"cmd":"/bin/false"}', '--json', ...flags])
    const deniedId = (JSON.parse(denied.stdout) as { id: string }).id
    await waitFor(async () => (await api<JobDetail>('GET', `/api/jobs/${deniedId}`)).body.counts.rejected === 1, 'the job to be rejected', 60_000, 250)
    const show = await rollcall(['job', 'show', deniedId, ...flags])
    expect(show.stdout).toMatch(/^demo-01\s+rejected\s+1\s+.*COMMAND_NOT_ALLOWED$/m)
    expect(show.stdout).toMatch(/^errors\n {2}COMMAND_NOT_ALLOWED on demo-01: "\/bin\/false" is not in this device's shellAllow list .*shellAllow/m)

    // Not a terminal: logs are JSON lines, each key once (the agent's lines repeated deviceId and component).
    const warning = await waitFor(() => demo.output().split('\n').find((l) => l.includes('"job did not succeed"')), 'the agent\'s warning', 60_000)
    for (const line of demo.output().split('\n').filter((l) => l.startsWith('{"level"'))) {
      expect(line.match(/"deviceId":/g)?.length ?? 0, line).toBeLessThanOrEqual(1)
      expect(line.match(/"component":/g)?.length ?? 0, line).toBeLessThanOrEqual(1)
    }
    expect(JSON.parse(warning)).toMatchObject({ deviceId: 'demo-01', component: 'job-runner', error: { code: 'COMMAND_NOT_ALLOWED' } })

    // A sensor with no data: the answer names the sensors the device has.
    const none = await rollcall(['telemetry', 'demo-01', '--sensor', 'no.such', ...flags])
    expect(none.code).toBe(0)
    expect(none.stdout).toMatch(/^no telemetry for sensor no\.such of demo-01 since 10m\ndemo-01 sent .*\benv\.temp\b.* in that range; try: /)

    demo.child.kill('SIGINT')
    const code = await within(demo.exited, 60_000, 'still running')
    expect(code, demo.output()).toBe(0)
    expect(isAlive(demo.pid)).toBe(false)
    expect(await portOpen(mqttPort)).toBe(false)
    expect(await portOpen(httpPort)).toBe(false)
    expect(walFiles(tmp.dir)).toEqual([])
  }, 240_000)

  it('under npm start, one Ctrl-C at a terminal (SIGINT to the process group) stops it gracefully; logs are readable lines', async () => {
    const tmp = tempDir('demo-npm')
    cleanups.push(tmp.remove)
    // All 25 devices: their stop takes long enough for npm's forwarded copy of the SIGINT to arrive while the
    // demo is still stopping, as at a terminal (with a handful, the demo is gone before npm forwards it).
    const demo = npmStart(['--data', tmp.dir, '--mqtt-port', '0', '--http-port', '0', '--log-format', 'pretty'])
    cleanups.push(() => killGroup(demo))
    const banner = await waitFor(() => /curl .*\n/.test(demo.output()) ? demo.output() : undefined, 'the banner', 120_000)
    const flags = /rollcall job list (.*)\n/.exec(banner)![1]!.split(' ')

    // A warning from an agent, as a person reads it.
    const denied = await rollcall(['job', 'create', 'shell', '--target', 'device:demo-01', '--payload', '{"cmd":"/bin/false"}', ...flags])
    expect(denied.code, denied.stderr).toBe(0)
    await waitFor(() => /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] WARN: demo-01 job-runner: job did not succeed \{.*"COMMAND_NOT_ALLOWED"/m.exec(stripColors(demo.output())), 'a readable warning', 60_000)

    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group, npm and node. npm
    // forwards its copy to node within milliseconds, unless node has exited by then: send that copy
    // ourselves too, so the demo surely gets the same Ctrl-C twice.
    const node = demoProcess(demo.pid)
    const sentAt = Date.now()
    process.kill(-demo.pid, 'SIGINT')
    await new Promise((r) => setTimeout(r, 50))
    // (A busy machine that held this timer for half a second would make it a second Ctrl-C, which may force.)
    if (isAlive(node) && Date.now() - sentAt < 500) process.kill(node, 'SIGINT')
    const code = await within(demo.exited, 60_000, 'still running')
    expect(code, demo.output()).toBe(0)
    expect(demo.output()).not.toMatch(/again, exiting now/)
    expect(demo.output().match(/stopping the demo/g)).toHaveLength(1)
    expect(walFiles(tmp.dir)).toEqual([])
  }, 240_000)

  it('a port in use under npm start says how to pass other ports through npm', async () => {
    const tmp = tempDir('demo-port')
    cleanups.push(tmp.remove)
    const busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise<void>((resolve) => busy.close(() => resolve())))
    const port = (busy.address() as { port: number }).port
    const demo = npmStart(['--data', tmp.dir, '--mqtt-port', String(port), '--http-port', '0'])
    cleanups.push(() => killGroup(demo))
    const code = await within(demo.exited, 120_000, 'still running')
    expect(code, demo.output()).toBe(1)
    expect(demo.output()).toContain(`rollcall: EADDRINUSE: port ${port} on 127.0.0.1 is already in use`)
    expect(demo.output()).toContain('npm start -- --mqtt-port 0 --http-port 0')
  }, 240_000)
})

