import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { adminApi } from '../common/admin-http.js'
import { tempDir, waitFor } from './support/hub.js'
import { CLI } from './support/procs.js'
import { ownerOf, procUid, startAsUnit, stopAsSystemd } from './support/service-run.js'
import { value } from './support/systemd-unit.js'

/**
 * The hub started as deploy/systemd/rollcall-hub.service starts it
 * (test/support/service-run.ts plays systemd's part): it notifies readiness
 * once it listens, answers its API, keeps its admin token in its state
 * directory, logs journal lines, and stops cleanly on SIGTERM.
 */
describe('the hub, started as rollcall-hub.service starts it', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('sends READY=1 once it listens, serves its API as the unit\'s user, and stops on SIGTERM with STOPPING=1 and exit 0', async () => {
    const tmp = tempDir('svc-hub')
    cleanups.push(tmp.remove)
    const etc = join(tmp.dir, 'etc')
    mkdirSync(etc, { mode: 0o755 })
    const configPath = join(etc, 'hub.json')
    // Free ports, not the defaults: other tests and hubs share this machine.
    writeFileSync(configPath, JSON.stringify({ mqttPort: 0, httpPort: 0 }), { mode: 0o644 })
    const unitDir = join(tmp.dir, 'units')
    const install = spawnSync(process.execPath, [CLI, 'service', 'install', 'hub', '--unit-dir', unitDir, '--config', configPath], { encoding: 'utf8' })
    expect(install.status, install.stderr).toBe(0)

    const run = await startAsUnit(join(unitDir, 'rollcall-hub.service'), tmp.dir)
    cleanups.push(() => run.close())
    const why = () => run.journal()
    await waitFor(() => run.notices.includes('READY=1') || run.child.exitCode !== null, 'READY=1 on the notify socket', 60_000)
    expect(run.notices, why()).toContain('READY=1')

    // The status line names the listeners; the API answers on the port it names.
    const status = run.notices.find((n) => n.startsWith('STATUS='))!
    const http = /http:\/\/127\.0\.0\.1:(\d+)/.exec(status)
    expect(http, status).not.toBeNull()
    const tokenPath = join(run.stateDir, 'admin-token')
    expect(ownerOf(tokenPath)).toBe(run.user.uid)
    expect(statSync(tokenPath).mode & 0o777).toBe(0o600)
    const api = adminApi({ api: `http://127.0.0.1:${http![1]}`, token: readFileSync(tokenPath, 'utf8').trim() })
    expect((await api('GET', '/api/devices')).status).toBe(200)
    expect(procUid(run.pid)).toBe(run.user.uid)
    expect(value(run.unit, 'Service', 'ExecStart')).toContain('--data /var/lib/rollcall/hub')

    // stdout and stderr (its start banner) are the journal: every line with a priority, and no admin token.
    for (const line of run.journal().split('\n').filter((l) => l !== '')) expect(line).toMatch(/^<[0-7]>./)
    expect(run.journal()).toContain(`admin token: created in ${tokenPath}`)
    expect(run.journal()).not.toContain(readFileSync(tokenPath, 'utf8').trim())

    const stop = await stopAsSystemd(run)
    expect(stop.end, why()).toEqual({ code: 0, signal: null })
    expect(stop.ms).toBeLessThan(parseInt(value(run.unit, 'Service', 'TimeoutStopSec'), 10) * 1000)
    await waitFor(() => run.notices.includes('STOPPING=1'), 'STOPPING=1 on the notify socket', 10_000)
  })
})
