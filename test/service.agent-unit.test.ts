import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, mkdirSync, openSync, closeSync, fstatSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startTestHub, tempDir, waitFor } from './support/hub.js'
import { CLI } from './support/procs.js'
import { execArgv, readUnit, unitEnvironment, value, values, type Unit } from './support/systemd-unit.js'

/**
 * The agent started exactly as deploy/systemd/rollcall-agent.service starts
 * it (issue #13), without systemd itself (none runs in CI): the unit that
 * `rollcall service install agent --unit-dir` renders is parsed, and its
 * ExecStart= runs with what systemd would give the process:
 *
 * - User=: as root, the process drops to an unprivileged user (the unit's
 *   `rollcall` does not exist here, so `nobody`) with setpriv, as systemd
 *   does before exec; as another user, it runs as that user (it cannot switch).
 * - StateDirectory=: a directory owned by that user, mode StateDirectoryMode=,
 *   standing in for /var/lib/rollcall/agent (the test must not write /var/lib):
 *   the unit's path in ExecStart= and WorkingDirectory= is mapped onto it, and
 *   STATE_DIRECTORY names it.
 * - LoadCredential=token:FILE: FILE (root's, mode 0600) copied into a
 *   credentials directory readable by the user, named by CREDENTIALS_DIRECTORY.
 * - Environment=, and the variables systemd sets (PATH, HOME, USER,
 *   NOTIFY_SOCKET for Type=notify, JOURNAL_STREAM for the journal on stdout,
 *   INVOCATION_ID); nothing inherited from the test's own environment.
 * - NOTIFY_SOCKET: a unix datagram socket (python3, as Node has none) that
 *   records READY=1 and STOPPING=1. stdout: a file whose device:inode is
 *   JOURNAL_STREAM, as systemd's stream to journald would be, so the agent
 *   must log journal lines there.
 *
 * What only systemd can show (the sandbox of ProtectSystem=, the system call
 * filter) is not exercised here: `systemd-analyze verify` checks the unit in
 * service.units.test.ts, and docs/services.md says how to check a real one.
 */

const DEVICE = 'svc-unit-01'
/** The unit's own user, when this test cannot create it (it does not create users). */
const STAND_IN_USER = 'nobody'

/** systemd's PATH for system services (systemd.exec(5), "Environment Variables in Spawned Processes"). */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * The environment the service gets. Until the agent reads its token from
 * $CREDENTIALS_DIRECTORY/token by itself (the config change of issue #13's
 * config part), the token is also passed as ROLLCALL_TOKEN here; the unit
 * itself never passes it. At the merge, the `ROLLCALL_TOKEN` line goes.
 */
function serviceEnv(unit: Unit, sys: { stateDir: string; credDir: string; notifySocket: string; journalStream: string; user: string; home: string }, token: string): Record<string, string> {
  return {
    PATH: SYSTEMD_PATH,
    LANG: 'C.UTF-8',
    USER: sys.user,
    LOGNAME: sys.user,
    HOME: sys.home,
    SHELL: '/usr/sbin/nologin',
    INVOCATION_ID: '0123456789abcdef0123456789abcdef',
    STATE_DIRECTORY: sys.stateDir,
    CREDENTIALS_DIRECTORY: sys.credDir,
    NOTIFY_SOCKET: sys.notifySocket,
    JOURNAL_STREAM: sys.journalStream,
    ...unitEnvironment(unit),
    ROLLCALL_TOKEN: token,
  }
}

/** Records the datagrams sent to a unix socket, one line each (sd_notify's messages are KEY=value lines). */
const NOTIFY_LISTENER = `
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
print('LISTENING', flush=True)
s.settimeout(300)
while True:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    for line in data.decode('utf-8', 'replace').split('\\n'):
        if line:
            print(line, flush=True)
`

interface Account { readonly name: string; readonly uid: number; readonly gid: number; readonly home: string }

function account(name: string): Account {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' })
  const f = r.stdout.trim().split(':')
  if (r.status !== 0 || f.length < 7) throw new Error(`no user ${name}`)
  return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! }
}

describe('the agent, started as rollcall-agent.service starts it', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('runs as the unit\'s user with its credential, state dir and environment, notifies readiness, stores telemetry, and stops cleanly on SIGTERM within 5 s', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const token = await hub.addDevice(DEVICE)
    const tmp = tempDir('svc-unit')
    cleanups.push(tmp.remove)
    // The unprivileged user must reach the config and the sockets below (mkdtemp makes 0700).
    chmodSync(tmp.dir, 0o755)

    const isRoot = process.getuid?.() === 0
    const self = account(spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim())
    const user = isRoot ? account(STAND_IN_USER) : self

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
    const unit = readUnit(join(unitDir, 'rollcall-agent.service'))
    expect(value(unit, 'Service', 'Type')).toBe('notify')
    expect(value(unit, 'Service', 'User')).toBe('rollcall')

    // StateDirectory=rollcall/agent: systemd creates /var/lib/rollcall/agent for the user.
    const stateName = value(unit, 'Service', 'StateDirectory')
    const unitStateDir = `/var/lib/${stateName}`
    const stateDir = join(tmp.dir, 'state', stateName)
    mkdirSync(stateDir, { recursive: true, mode: 0o755 })
    chmodSync(stateDir, parseInt(value(unit, 'Service', 'StateDirectoryMode'), 8))
    chownSync(stateDir, user.uid, user.gid)
    const mapPath = (p: string) => (p === unitStateDir ? stateDir : p)

    // LoadCredential=token:FILE: PID 1 (root) reads FILE and hands the service a private, read-only copy.
    const [credName, credSource] = value(unit, 'Service', 'LoadCredential').split(/:(.*)/s)
    expect(credName).toBe('token')
    expect(credSource).toBe(tokenPath)
    const credDir = join(tmp.dir, 'credentials')
    mkdirSync(credDir, { mode: 0o500 })
    copyFileSync(credSource!, join(credDir, credName!))
    chmodSync(join(credDir, credName!), 0o400)
    chownSync(join(credDir, credName!), user.uid, user.gid)
    chownSync(credDir, user.uid, user.gid)

    // NOTIFY_SOCKET, as PID 1 listens on it.
    const notifySocket = join(tmp.dir, 'notify.sock')
    writeFileSync(join(tmp.dir, 'listener.py'), NOTIFY_LISTENER)
    const notices: string[] = []
    const listener = spawn('python3', [join(tmp.dir, 'listener.py'), notifySocket], { stdio: ['ignore', 'pipe', 'inherit'] })
    cleanups.push(() => stop(listener))
    listener.stdout.setEncoding('utf8').on('data', (d: string) => notices.push(...d.split('\n').filter((l) => l !== '')))
    await waitFor(() => notices.includes('LISTENING'), 'the notify socket')

    // stdout: the journal's stream, identified by JOURNAL_STREAM=DEV:INODE.
    const journalPath = join(tmp.dir, 'journal.log')
    const journalFd = openSync(journalPath, 'w', 0o600)
    const st = fstatSync(journalFd, { bigint: true })

    const argv = execArgv(value(unit, 'Service', 'ExecStart')).map(mapPath)
    const env = serviceEnv(unit, { stateDir, credDir, notifySocket, journalStream: `${st.dev}:${st.ino}`, user: user.name, home: user.home }, token)
    // Dropping to the user as systemd does: real and effective ids, no supplementary groups.
    const [command, args] = isRoot
      ? ['setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', ...argv]] as const
      : [argv[0]!, argv.slice(1)] as const
    const agent = spawn(command, args, { cwd: mapPath(value(unit, 'Service', 'WorkingDirectory')), env, stdio: ['ignore', journalFd, 'pipe'] })
    closeSync(journalFd)
    let stderr = ''
    agent.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => agent.on('exit', (code, signal) => resolve({ code, signal })))
    cleanups.push(() => stop(agent))
    const journal = () => readFileSync(journalPath, 'utf8')

    // Ready: told systemd, is online, and its telemetry is stored.
    await waitFor(() => notices.includes('READY=1') || agent.exitCode !== null, 'READY=1 on the notify socket', 60_000)
    expect(notices, `${stderr}\n${journal()}`).toContain('READY=1')
    expect(notices.find((n) => n.startsWith('STATUS='))).toContain(DEVICE)
    await waitFor(() => hub.running.services.presence.isReachable(DEVICE), 'the agent online', 60_000)
    const stored = await waitFor(async () => {
      const r = await hub.api<{ samples: Array<{ sensor: string }> }>('GET', `/api/devices/${DEVICE}/telemetry?since=0&limit=100`)
      return r.body.samples.length >= 3 ? r.body.samples : undefined
    }, 'telemetry stored', 60_000)
    expect(new Set(stored.map((s) => s.sensor))).toContain('cpu.load')

    // It ran as the user, and wrote its ledger where the unit says, owned by that user.
    const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8')
    expect(status).toMatch(new RegExp(`^Uid:\\s+${user.uid}\\s+${user.uid}\\s`, 'm'))
    const ledger = fstatOwner(join(stateDir, 'ledger.db'))
    expect(ledger.uid).toBe(user.uid)

    // Logs: journal lines on stdout, no timestamps, a priority prefix.
    const firstLines = journal().split('\n').filter((l) => l !== '')
    expect(firstLines.length).toBeGreaterThan(0)
    for (const line of firstLines) expect(line).toMatch(/^<[0-7]>\S/)
    expect(firstLines.some((l) => l.startsWith(`<6>${DEVICE} agent: agent started `))).toBe(true)
    expect(journal()).not.toContain(token)

    // SIGTERM, as `systemctl stop` sends it (KillMode=mixed: to the main process only).
    expect(value(unit, 'Service', 'KillMode')).toBe('mixed')
    const sentAt = Date.now()
    agent.kill('SIGTERM')
    const end = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000))])
    const stopMs = Date.now() - sentAt
    expect(end, `${stderr}\n${journal()}`).toEqual({ code: 0, signal: null })
    // The bound for a clean stop; well inside TimeoutStopSec=.
    expect(stopMs).toBeLessThan(5_000)
    expect(stopMs).toBeLessThan(parseInt(values(unit, 'Service', 'TimeoutStopSec')[0]!, 10) * 1000)
    await waitFor(() => notices.includes('STOPPING=1'), 'STOPPING=1 on the notify socket', 10_000)
    // A clean stop: its death arrived while its connection was up (not the broker's Will).
    await waitFor(() => !hub.running.services.presence.isReachable(DEVICE), 'the agent offline')
    expect(hub.running.services.presence.get(DEVICE)?.reason).toBe('shutdown')
    expect(stderr).toBe('')
  })
})

function fstatOwner(path: string): { uid: number } {
  const fd = openSync(path, 'r')
  try {
    return { uid: fstatSync(fd).uid }
  } finally {
    closeSync(fd)
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))])
}
