import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { execArg, installPlan, NODE_FLAGS, renderUnit, templatePath, uninstallPlan, type Host, type InstallOptions } from '../cli/service-install.js'
import { isRollcallError } from '../common/errors.js'
import { tempDir } from './support/hub.js'
import { CLI } from './support/procs.js'
import { execArgv, parseUnit, value, values } from './support/systemd-unit.js'

/**
 * The shipped systemd units (deploy/systemd/) and `rollcall service
 * install|uninstall`: the rendered units pass `systemd-analyze verify`, the
 * plan is right for each kind of machine, and --dry-run / --unit-dir do what
 * they say. service.agent-unit.test.ts runs the agent as the unit would.
 */

const KINDS = ['agent', 'hub'] as const

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' })
}

/** systemd-analyze verify: its exit status, and the lines it printed about this file (unknown keys, bad values, a missing binary). */
function verify(path: string): { status: number | null; aboutUnit: string[] } {
  const r = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' })
  if (r.error) throw r.error
  const name = path.split('/').pop()!
  const aboutUnit = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.includes(name))
  return { status: r.status, aboutUnit }
}

describe('the units in deploy/systemd', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { while (cleanups.length) cleanups.pop()!() })

  it.each(KINDS)('rollcall-%s.service, rendered for this machine, passes systemd-analyze verify', (kind) => {
    const tmp = tempDir(`units-${kind}`)
    cleanups.push(tmp.remove)
    const r = cli(['service', 'install', kind, '--unit-dir', tmp.dir, '--config', join(tmp.dir, `${kind}.json`)])
    expect(r.status, r.stderr).toBe(0)
    const path = join(tmp.dir, `rollcall-${kind}.service`)
    // ExecStart= is this node (with the agent's --jitless) and this built CLI, which verify checks exist and are executable.
    const flags = NODE_FLAGS[kind]
    expect(execArgv(value(parseUnit(readFileSync(path, 'utf8')), 'Service', 'ExecStart')).slice(0, 3 + flags.length)).toEqual([process.execPath, ...flags, CLI, kind])
    expect(verify(path)).toEqual({ status: 0, aboutUnit: [] })
    // The hardening holds: systemd's own rating (0 locked down .. 10 exposed; 1.4 when written, "OK" up to 3.9).
    const security = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', path], { encoding: 'utf8' })
    const exposure = /Overall exposure level for \S+: ([\d.]+)/.exec(`${security.stdout}${security.stderr}`)
    expect(exposure, security.stderr).not.toBeNull()
    expect(Number(exposure![1])).toBeLessThanOrEqual(2)

    // The check can fail: a key systemd 252 lacks (RestartSteps= came in 254) is reported.
    const broken = join(tmp.dir, `broken-${kind}.service`)
    writeFileSync(broken, readFileSync(path, 'utf8').replace('RestartSec=5s', 'RestartSec=5s\nRestartSteps=5'))
    expect(verify(broken).aboutUnit.join('\n')).toMatch(/RestartSteps/)
  })

  it.each(KINDS)('rollcall-%s.service runs as a system user with the hardening, restart and stop settings', (kind) => {
    const unit = parseUnit(readFileSync(templatePath(kind), 'utf8'))
    const s = (key: string) => value(unit, 'Service', key)
    expect({ user: s('User'), type: s('Type'), notify: s('NotifyAccess'), restart: s('Restart'), kill: s('KillMode') })
      .toEqual({ user: 'rollcall', type: 'notify', notify: 'all', restart: 'on-failure', kill: 'mixed' })
    expect(s('StateDirectory')).toBe(`rollcall/${kind}`)
    expect(s('ReadWritePaths')).toBe(`/var/lib/rollcall/${kind}`)
    expect(s('ConfigurationDirectory')).toBe('rollcall')
    for (const [key, v] of Object.entries({ NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX', CapabilityBoundingSet: '' })) {
      expect(s(key), key).toBe(v)
    }
    // V8 needs writable, executable memory for its JIT: only the agent, which runs node --jitless, can go without.
    expect(values(unit, 'Service', 'MemoryDenyWriteExecute')).toEqual(kind === 'agent' ? ['yes'] : [])
    expect(execArgv(s('ExecStart')).includes('--jitless')).toBe(kind === 'agent')
    expect(NODE_FLAGS[kind].includes('--jitless')).toBe(kind === 'agent')
    // The default ports are above 1024: no capability.
    expect(values(unit, 'Service', 'AmbientCapabilities')).toEqual([])
    expect(parseInt(s('TimeoutStopSec'), 10)).toBeGreaterThanOrEqual(5)
    expect(values(unit, 'Unit', 'StartLimitBurst')).toHaveLength(1)
    const exec = s('ExecStart')
    expect(exec).toContain(`--config /etc/rollcall/${kind}.json`)
    expect(exec).not.toMatch(/token/i)
    if (kind === 'agent') expect(s('LoadCredential')).toBe('token:/etc/rollcall/agent.token')
  })
})

/** A machine, as installPlan sees it. */
function host(over: Partial<Omit<Host, 'userExists' | 'fileExists' | 'readFile'>> & { users?: string[]; files?: Record<string, string> } = {}): Host {
  const files = over.files ?? { '/etc/rollcall/agent.json': '{}', '/etc/rollcall/agent.token': 't', '/etc/rollcall/hub.json': '{}' }
  return {
    node: over.node ?? '/usr/bin/node',
    cli: over.cli ?? '/usr/local/lib/node_modules/rollcall/dist/cli/main.js',
    isRoot: over.isRoot ?? true,
    systemdRunning: over.systemdRunning ?? true,
    userExists: (name) => (over.users ?? []).includes(name),
    fileExists: (path) => path in files,
    readFile: (path) => files[path],
  }
}

const TEMPLATE = readFileSync(templatePath('agent'), 'utf8')

function plan(o: Partial<InstallOptions>, h: Host) {
  const p = installPlan({ kind: 'agent', ...o }, h, TEMPLATE)
  return { ...p, steps: p.steps.map((s) => (s.type === 'run' ? s.argv.join(' ') : `${s.type} ${s.path}`)) }
}

function errorCode(f: () => unknown): string | undefined {
  try {
    f()
  } catch (err) {
    return isRollcallError(err) ? err.code : String(err)
  }
  return undefined
}

describe('rollcall service install: the plan', () => {
  it('as root on a systemd machine: writes the unit, creates the user, reloads, enables and starts', () => {
    expect(plan({}, host()).steps).toEqual([
      'write /etc/systemd/system/rollcall-agent.service',
      'useradd --system --user-group --no-create-home --home-dir /var/lib/rollcall --shell /usr/sbin/nologin rollcall',
      'systemctl daemon-reload',
      'systemctl enable --now rollcall-agent.service',
    ])
    expect(plan({}, host({ users: ['rollcall'] })).steps).not.toContainEqual(expect.stringMatching(/^useradd/))
  })

  it('enables but does not start a service whose config or token file is missing, and says so', () => {
    const p = plan({}, host({ files: { '/etc/rollcall/agent.json': '{}' } }))
    expect(p.steps).toContain('systemctl enable rollcall-agent.service')
    expect(p.notes.join('\n')).toMatch(/agent\.token does not exist/)
    expect(p.todo).toContain('systemctl start rollcall-agent.service   # once the files above are in place')
  })

  it('without systemd running, sets up and prints the systemctl commands', () => {
    const p = plan({}, host({ systemdRunning: false }))
    expect(p.steps).not.toContainEqual(expect.stringMatching(/^systemctl/))
    expect(p.todo).toEqual(['systemctl daemon-reload', 'systemctl enable --now rollcall-agent.service'])
  })

  it('with --unit-dir: only the unit file; no user, no systemctl, whoever runs it', () => {
    const p = plan({ unitDir: '/tmp/pkg/lib/systemd/system' }, host({ isRoot: false }))
    expect(p.steps).toEqual(['write /tmp/pkg/lib/systemd/system/rollcall-agent.service'])
    expect(p.todo[0]).toMatch(/^getent passwd rollcall >\/dev\/null \|\| useradd --system/)
  })

  it('warns when node lives in a home directory (nvm), which the service user may not reach', () => {
    expect(plan({}, host({ node: '/home/pi/.nvm/versions/node/v20.19.0/bin/node' })).notes.join('\n')).toMatch(/^\/home\/pi\/\.nvm\S* is in a home directory: the unit sets ProtectHome=read-only/m)
    expect(plan({}, host()).notes.join('\n')).not.toMatch(/home directory/)
  })

  it('refuses without root, and refuses to replace a different unit without --force', () => {
    expect(errorCode(() => plan({}, host({ isRoot: false })))).toBe('FORBIDDEN')
    const h = host({ files: { '/etc/systemd/system/rollcall-agent.service': '[Service]\nExecStart=/bin/true\n' } })
    expect(errorCode(() => plan({}, h))).toBe('UNIT_EXISTS')
    expect(plan({ force: true }, h).steps[0]).toBe('write /etc/systemd/system/rollcall-agent.service')
  })

  it('renders the config, token file and user given, and loosens ProtectHome= only for a node under /home', () => {
    const unit = parseUnit(renderUnit(TEMPLATE, { kind: 'agent', node: '/home/pi/.nvm/versions/node/v20.19.0/bin/node', cli: '/opt/rollcall/dist/cli/main.js', config: '/srv/agent.json', tokenFile: '/srv/token', user: 'sensors' }))
    expect(execArgv(value(unit, 'Service', 'ExecStart'))).toEqual(['/home/pi/.nvm/versions/node/v20.19.0/bin/node', '--jitless', '--no-expose-wasm', '/opt/rollcall/dist/cli/main.js', 'agent', '--config', '/srv/agent.json', '--data', '/var/lib/rollcall/agent'])
    expect(value(unit, 'Service', 'LoadCredential')).toBe('token:/srv/token')
    expect([value(unit, 'Service', 'User'), value(unit, 'Service', 'Group')]).toEqual(['sensors', 'sensors'])
    expect(value(unit, 'Service', 'ProtectHome')).toBe('read-only')
  })

  it.each([
    ['/usr/bin/node', '/usr/bin/node'],
    ['/opt/my apps/node', '"/opt/my apps/node"'],
    ['/srv/100%/x', '/srv/100%%/x'],
    ['/srv/$HOME/x', '/srv/$$HOME/x'],
    ['/srv/a"b\\c', '"/srv/a\\"b\\\\c"'],
  ])('writes %s on an Exec line as %s, which systemd reads back unchanged', (arg, written) => {
    expect(execArg(arg)).toBe(written)
    expect(execArgv(`${execArg(arg)} --x`)).toEqual([arg, '--x'])
  })
})

describe('rollcall service install|uninstall, the command', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { while (cleanups.length) cleanups.pop()!() })

  it('--dry-run prints the unit and the steps and writes nothing', () => {
    const tmp = tempDir('units-dry')
    cleanups.push(tmp.remove)
    const dir = join(tmp.dir, 'units')
    const r = cli(['service', 'install', 'hub', '--unit-dir', dir, '--dry-run'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toContain(`--- ${dir}/rollcall-hub.service\n# Written by \`rollcall service install hub\``)
    expect(r.stdout).toMatch(/^ExecStart=.* hub --config \/etc\/rollcall\/hub\.json --data \/var\/lib\/rollcall\/hub$/m)
    expect(r.stdout).toContain(`would: write ${dir}/rollcall-hub.service`)
    expect(existsSync(dir)).toBe(false)
  })

  it('--unit-dir writes the unit, keeps an identical one, refuses a different one without --force, and uninstall removes it', () => {
    const tmp = tempDir('units-dir')
    cleanups.push(tmp.remove)
    const path = join(tmp.dir, 'rollcall-agent.service')
    expect(cli(['service', 'install', 'agent', '--unit-dir', tmp.dir]).status).toBe(0)
    const first = readFileSync(path, 'utf8')
    expect(cli(['service', 'install', 'agent', '--unit-dir', tmp.dir]).stdout).toContain('is already this unit')

    const other = cli(['service', 'install', 'agent', '--unit-dir', tmp.dir, '--config', '/srv/agent.json'])
    expect(other.status).toBe(1)
    expect(other.stderr).toMatch(/^rollcall: UNIT_EXISTS: .*--force/)
    expect(readFileSync(path, 'utf8')).toBe(first)
    expect(cli(['service', 'install', 'agent', '--unit-dir', tmp.dir, '--config', '/srv/agent.json', '--force']).status).toBe(0)
    expect(readFileSync(path, 'utf8')).toContain('--config /srv/agent.json')

    const gone = cli(['service', 'uninstall', 'agent', '--unit-dir', tmp.dir])
    expect(gone.status, gone.stderr).toBe(0)
    expect(existsSync(path)).toBe(false)
    expect(cli(['service', 'uninstall', 'agent', '--unit-dir', tmp.dir]).stderr).toMatch(/^rollcall: NOT_FOUND: /)
  })

  it('refuses a kind other than agent or hub as a usage error', () => {
    const r = cli(['service', 'install', 'broker', '--dry-run'])
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/"agent" or "hub"/)
  })

  it('uninstall, as a plan: disables before removing when systemd runs', () => {
    const p = uninstallPlan({ kind: 'hub' }, host({ files: { '/etc/systemd/system/rollcall-hub.service': 'x' } }))
    expect(p.steps.map((s) => (s.type === 'run' ? s.argv.join(' ') : `${s.type} ${s.path}`))).toEqual([
      'systemctl disable --now rollcall-hub.service', 'remove /etc/systemd/system/rollcall-hub.service', 'systemctl daemon-reload',
    ])
    expect(p.notes.join('\n')).toMatch(/kept: the data in \/var\/lib\/rollcall\/hub/)
  })
})
