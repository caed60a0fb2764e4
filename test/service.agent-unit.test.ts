import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { CLI } from './support/procs.js'
import { mdweSupported, ownerOf, procUid, startAsUnit, stopAsSystemd, underMdwe } from './support/service-run.js'
import { value, values } from './support/systemd-unit.js'

/**
 * The agent started exactly as deploy/systemd/rollcall-agent.service starts
 * it (issue #13): the unit `rollcall service install agent --unit-dir`
 * renders, run by test/support/service-run.ts with the user, state
 * directory, credential, environment, notify socket and journal stream
 * systemd would give it, MemoryDenyWriteExecute=yes included where the
 * kernel can enforce it. What only systemd can show (the sandbox of
 * ProtectSystem=, the system call filter) is not exercised here:
 * service.units.test.ts checks the unit with systemd-analyze.
 */

const MDWE = mdweSupported()

const DEVICE = 'svc-unit-01'

describe('the agent, started as rollcall-agent.service starts it', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('runs as the unit\'s user with its credential, state dir and environment, notifies readiness, stores telemetry, and stops cleanly on SIGTERM within 5 s', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice(DEVICE)
    const tmp = tempDir('svc-agent')
    cleanups.push(tmp.remove)

    // What the operator writes: the config (no token in it) and the token file, root's, 0600.
    const etc = join(tmp.dir, 'etc')
    mkdirSync(etc, { mode: 0o755 })
    const configPath = join(etc, 'agent.json')
    writeFileSync(configPath, JSON.stringify({ hub: hub.mqttUrl, id: DEVICE, sampleIntervalMs: '500ms', builtinSensors: true }), { mode: 0o644 })
    const tokenPath = join(etc, 'agent.token')
    writeFileSync(tokenPath, `${token}\n`, { mode: 0o600 })

    // The unit, as `rollcall service install agent` renders it for this machine.
    const unitDir = join(tmp.dir, 'units')
    const install = spawnSync(process.execPath, [CLI, 'service', 'install', 'agent', '--unit-dir', unitDir, '--config', configPath, '--token-file', tokenPath], { encoding: 'utf8' })
    expect(install.status, install.stderr).toBe(0)
    const run = await startAsUnit(join(unitDir, 'rollcall-agent.service'), tmp.dir)
    cleanups.push(() => run.close())
    const { unit } = run
    expect(value(unit, 'Service', 'Type')).toBe('notify')
    expect(value(unit, 'Service', 'LoadCredential')).toBe(`token:${tokenPath}`)
    // node --jitless under MemoryDenyWriteExecute=yes (PR_SET_MDWE where the kernel has it: Linux 6.3+).
    expect(value(unit, 'Service', 'MemoryDenyWriteExecute')).toBe('yes')
    expect(run.memoryDenyWriteExecute).toBe(MDWE ? 'enforced' : 'unsupported')
    const why = () => run.journal()

    // Ready: told systemd, is online, and its telemetry is stored.
    await waitFor(() => run.notices.includes('READY=1') || run.child.exitCode !== null, 'READY=1 on the notify socket', 60_000)
    expect(run.notices, why()).toContain('READY=1')
    expect(run.notices.find((n) => n.startsWith('STATUS='))).toContain(DEVICE)
    await waitFor(() => hub.running.services.presence.isReachable(DEVICE), 'the agent online', 60_000)
    const stored = await waitFor(async () => {
      const r = await hub.api<{ samples: Array<{ sensor: string }> }>('GET', `/api/devices/${DEVICE}/telemetry?since=0&limit=100`)
      return r.body.samples.length >= 3 ? r.body.samples : undefined
    }, 'telemetry stored', 60_000)
    expect(new Set(stored.map((s) => s.sensor))).toContain('cpu.load')

    // It runs as the user, and wrote its ledger where the unit says, owned by that user.
    expect(procUid(run.pid)).toBe(run.user.uid)
    expect(ownerOf(join(run.stateDir, 'ledger.db'))).toBe(run.user.uid)

    // Logs: journal lines on stdout and stderr (no timestamps, a priority prefix), never the token.
    const lines = run.journal().split('\n').filter((l) => l !== '')
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) expect(line).toMatch(/^<[0-7]>\S/)
    expect(lines.some((l) => l.startsWith(`<6>${DEVICE} agent: agent started `))).toBe(true)
    expect(run.journal()).not.toContain(token)

    // SIGTERM, as `systemctl stop` sends it (KillMode=mixed: to the main process only).
    expect(value(unit, 'Service', 'KillMode')).toBe('mixed')
    const stop = await stopAsSystemd(run)
    expect(stop.end, why()).toEqual({ code: 0, signal: null })
    // The bound for a clean stop (about 0.25 s here), and inside TimeoutStopSec=.
    expect(stop.ms).toBeLessThan(5_000)
    expect(stop.ms).toBeLessThan(parseInt(values(unit, 'Service', 'TimeoutStopSec')[0]!, 10) * 1000)
    await waitFor(() => run.notices.includes('STOPPING=1'), 'STOPPING=1 on the notify socket', 10_000)
    // A clean stop: its death arrived while its connection was up (not the broker's Will).
    await waitFor(() => !hub.running.services.presence.isReachable(DEVICE), 'the agent offline')
    expect(hub.running.services.presence.get(DEVICE)?.reason).toBe('shutdown')
  })

  // Skipped where the kernel lacks PR_SET_MDWE (before Linux 6.3): nothing here can enforce the setting then.
  it.skipIf(!MDWE)('MemoryDenyWriteExecute=yes is real: node with its JIT aborts under it, node --jitless runs', () => {
    const script = 'let s = 0; for (let i = 0; i < 1e6; i++) s += i; console.log(s)'
    const run = (flags: string[]) => {
      const [cmd, ...args] = underMdwe([process.execPath, ...flags, '-e', script])
      return spawnSync(cmd!, args, { encoding: 'utf8', timeout: 60_000 })
    }
    const jit = run([])
    expect(jit.status).not.toBe(0)
    const jitless = run(['--jitless'])
    expect(jitless.status, jitless.stderr).toBe(0)
    expect(jitless.stdout.trim()).toBe('499999500000')
  })
})
