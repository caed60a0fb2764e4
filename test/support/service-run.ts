import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, closeSync, copyFileSync, fstatSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { waitFor } from './hub.js'
import { execArgv, readUnit, unitEnvironment, value, values, type Unit } from './systemd-unit.js'
import { within } from './leaks.js'

/**
 * Starts a unit's ExecStart= as systemd would, without systemd (none runs in
 * CI), for the service tests:
 *
 * - User=: as root, the process drops to an unprivileged user with setpriv
 *   (real and effective ids, no supplementary groups), as systemd does before
 *   exec. The unit's own user (`rollcall`) is not created by tests, so
 *   `nobody` stands in. A test not run as root cannot switch users: the
 *   process then runs as the test's user.
 * - StateDirectory=: a directory owned by that user, mode
 *   StateDirectoryMode=, in place of /var/lib/NAME (tests must not write
 *   /var/lib); the unit's path in ExecStart= and WorkingDirectory= is mapped
 *   onto it, and STATE_DIRECTORY names it.
 * - LoadCredential=NAME:FILE: FILE copied (as PID 1, root, reads it) into a
 *   credentials directory readable only by the user, CREDENTIALS_DIRECTORY.
 * - The environment systemd gives a system service (PATH, HOME, USER, ...,
 *   INVOCATION_ID), NOTIFY_SOCKET and JOURNAL_STREAM, then Environment=;
 *   nothing inherited from the test's own environment.
 * - stdout and stderr: one file whose device:inode is JOURNAL_STREAM, as
 *   systemd's stream to journald would be.
 * - NOTIFY_SOCKET: a unix datagram socket in python3 (Node has none) that
 *   records every sd_notify line.
 * - MemoryDenyWriteExecute=yes: the kernel's own form of it, PR_SET_MDWE
 *   (Linux 6.3+), set by a python3 shim that then execs the command; like
 *   systemd's filter it refuses memory that is writable and executable, or
 *   becomes executable, and holds across fork and exec. On an older kernel it
 *   is not modelled, and the run says so (`memoryDenyWriteExecute`).
 */

/** systemd's PATH for system services (systemd.exec(5), "Environment Variables in Spawned Processes"). */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const STAND_IN_USER = 'nobody'

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

const MDWE_SHIM = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_MDWE = 65, PR_MDWE_REFUSE_EXEC_GAIN = 1
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit('PR_SET_MDWE: errno %d' % ctypes.get_errno())
os.execvp(sys.argv[1], sys.argv[1:])
`

/** The argv that runs `argv` with MemoryDenyWriteExecute in force (see MDWE_SHIM). */
export function underMdwe(argv: readonly string[]): string[] {
  return ['python3', '-c', MDWE_SHIM, ...argv]
}

/** Whether this kernel has PR_SET_MDWE (Linux 6.3+). */
export function mdweSupported(): boolean {
  const [cmd, ...args] = underMdwe(['true'])
  return spawnSync(cmd!, args, { stdio: 'ignore' }).status === 0
}

export interface Account { readonly name: string; readonly uid: number; readonly gid: number; readonly home: string }

export function account(name: string): Account {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' })
  const f = r.stdout.trim().split(':')
  if (r.status !== 0 || f.length < 7) throw new Error(`no user ${name}`)
  return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! }
}

export interface UnitRun {
  readonly unit: Unit
  readonly child: ChildProcess
  readonly pid: number
  /** Who it runs as. */
  readonly user: Account
  /** Whether it was dropped to another user (the test runs as root). */
  readonly switchedUser: boolean
  /** How MemoryDenyWriteExecute=yes was applied: 'enforced' (PR_SET_MDWE), 'unsupported' (kernel before 6.3), or 'off' (not set). */
  readonly memoryDenyWriteExecute: 'enforced' | 'unsupported' | 'off'
  /** The stand-in for /var/lib/<StateDirectory>. */
  readonly stateDir: string
  /** Lines received on NOTIFY_SOCKET, in order. */
  readonly notices: readonly string[]
  /** What it wrote to stdout and stderr: the journal stream. */
  journal(): string
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Kills what is still running (SIGKILL): the process and the notify listener. */
  close(): Promise<void>
}

/**
 * Starts `unitPath`'s ExecStart= in `workDir` (a temp dir the caller removes),
 * with `extraEnv` on top of what systemd would set.
 */
export async function startAsUnit(unitPath: string, workDir: string, extraEnv: Record<string, string> = {}): Promise<UnitRun> {
  const unit = readUnit(unitPath)
  // The unprivileged user must reach the notify socket in here (mkdtemp makes 0700).
  chmodSync(workDir, 0o755)
  const isRoot = process.getuid?.() === 0
  const user = isRoot ? account(STAND_IN_USER) : account(spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim())

  const stateName = value(unit, 'Service', 'StateDirectory')
  const stateDir = join(workDir, 'state', stateName)
  mkdirSync(stateDir, { recursive: true, mode: 0o755 })
  chmodSync(stateDir, parseInt(value(unit, 'Service', 'StateDirectoryMode'), 8))
  chownSync(stateDir, user.uid, user.gid)
  const mapPath = (p: string) => (p === `/var/lib/${stateName}` ? stateDir : p)

  const credDir = join(workDir, 'credentials')
  mkdirSync(credDir, { mode: 0o500 })
  for (const line of values(unit, 'Service', 'LoadCredential')) {
    const [name, source] = line.split(/:(.*)/s)
    copyFileSync(source!, join(credDir, name!))
    chmodSync(join(credDir, name!), 0o400)
    chownSync(join(credDir, name!), user.uid, user.gid)
  }
  chownSync(credDir, user.uid, user.gid)

  const notifySocket = join(workDir, 'notify.sock')
  writeFileSync(join(workDir, 'listener.py'), NOTIFY_LISTENER)
  const notices: string[] = []
  const listener = spawn('python3', [join(workDir, 'listener.py'), notifySocket], { stdio: ['ignore', 'pipe', 'inherit'] })
  listener.stdout.setEncoding('utf8').on('data', (d: string) => notices.push(...d.split('\n').filter((l) => l !== '')))
  try {
    await waitFor(() => notices.includes('LISTENING') || listener.exitCode !== null, 'the notify socket', 30_000)
  } catch (err) {
    await kill(listener)
    throw err
  }

  const journalPath = join(workDir, 'journal.log')
  const journalFd = openSync(journalPath, 'w', 0o600)
  const st = fstatSync(journalFd, { bigint: true })
  const env: Record<string, string> = {
    PATH: SYSTEMD_PATH,
    LANG: 'C.UTF-8',
    USER: user.name,
    LOGNAME: user.name,
    HOME: user.home,
    SHELL: '/usr/sbin/nologin',
    INVOCATION_ID: '0123456789abcdef0123456789abcdef',
    STATE_DIRECTORY: stateDir,
    CREDENTIALS_DIRECTORY: credDir,
    NOTIFY_SOCKET: notifySocket,
    JOURNAL_STREAM: `${st.dev}:${st.ino}`,
    ...unitEnvironment(unit),
    ...extraEnv,
  }
  const exec = execArgv(value(unit, 'Service', 'ExecStart')).map(mapPath)
  const mdwe = values(unit, 'Service', 'MemoryDenyWriteExecute').at(-1) === 'yes' ? (mdweSupported() ? 'enforced' : 'unsupported') : 'off'
  const dropped = isRoot ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', ...exec] : exec
  const [command, ...args] = mdwe === 'enforced' ? underMdwe(dropped) : dropped
  // StandardOutput=journal and StandardError=inherit, systemd's defaults: both to the one journal stream.
  if (values(unit, 'Service', 'StandardOutput').length + values(unit, 'Service', 'StandardError').length > 0) throw new Error('StandardOutput=/StandardError= are not modelled')
  const child = spawn(command!, args, { cwd: mapPath(value(unit, 'Service', 'WorkingDirectory')), env, stdio: ['ignore', journalFd, journalFd] })
  closeSync(journalFd)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  return {
    unit, child, pid: child.pid!, user, switchedUser: isRoot, stateDir, notices, memoryDenyWriteExecute: mdwe,
    journal: () => readFileSync(journalPath, 'utf8'),
    exited,
    async close() {
      await kill(child)
      await kill(listener)
    },
  }
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await within(gone, 10_000, undefined)
}

/** Sends SIGTERM (as `systemctl stop` does with KillMode=mixed) and waits up to `guardMs` for the exit; returns how it ended and how long it took. */
export async function stopAsSystemd(run: UnitRun, guardMs = 30_000): Promise<{ end: { code: number | null; signal: NodeJS.Signals | null } | 'hung'; ms: number }> {
  const sentAt = Date.now()
  run.child.kill('SIGTERM')
  const end = await within(run.exited, guardMs, 'hung' as const)
  return { end, ms: Date.now() - sentAt }
}

/** The real uid of a running process (its real and effective uids must agree). */
export function procUid(pid: number): number {
  const m = /^Uid:\s+(\d+)\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m || m[1] !== m[2]) throw new Error(`/proc/${pid}/status: no Uid line with equal real and effective ids`)
  return Number(m[1])
}

export function ownerOf(path: string): number {
  const fd = openSync(path, 'r')
  try {
    return fstatSync(fd).uid
  } finally {
    closeSync(fd)
  }
}
