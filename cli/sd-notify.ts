import { spawn } from 'node:child_process'

/**
 * Readiness and stop notices for systemd (Type=notify), sd_notify(3)'s
 * protocol: a datagram such as "READY=1" on the unix socket named by
 * NOTIFY_SOCKET. Node has no unix datagram sockets, and a native addon would
 * cost the device a compiler, so the agent runs systemd's own
 * `systemd-notify`, which the systemd package always installs.
 *
 * The message then comes from a child process, not the main one, so the unit
 * needs NotifyAccess=all. systemd-notify (as in systemd 252, Debian Bookworm's, and
 * later) waits by default until PID 1 has processed the message
 * (a BARRIER=1 handshake), so it is still alive when PID 1 looks up which unit
 * it belongs to: the race the systemd-notify(1) man page warns of for helper
 * processes applies only with --no-block, which is not used here.
 *
 * Without NOTIFY_SOCKET (not under systemd, or Type= other than notify),
 * nothing is run.
 */

export interface Notifier {
  /** READY=1 with a STATUS= line; resolves once systemd-notify has exited. */
  ready(status: string): Promise<void>
  /** STOPPING=1: systemctl shows "deactivating" while the stop runs. */
  stopping(): Promise<void>
}

export interface NotifyDeps {
  /** Where NOTIFY_SOCKET and PATH are read; process.env by default, which then loses NOTIFY_SOCKET. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** The program to run; `systemd-notify` from PATH by default. */
  readonly command?: string
  /** Told when a notice could not be sent (systemd-notify missing or failing). */
  readonly onError?: (message: string) => void
}

/** How long one systemd-notify may take: its own barrier waits up to 5 s. */
const NOTIFY_TIMEOUT_MS = 10_000

export function systemdNotifier(deps: NotifyDeps = {}): Notifier {
  const env = deps.env ?? process.env
  const socket = env.NOTIFY_SOCKET
  // As sd_notify(3)'s unset_environment: the process's own children (a shell
  // job) do not inherit the socket, so they cannot send notices in its name
  // by accident.
  if (deps.env === undefined) delete process.env.NOTIFY_SOCKET
  const command = deps.command ?? 'systemd-notify'
  const onError = deps.onError ?? (() => {})

  function send(args: string[]): Promise<void> {
    if (socket === undefined || socket === '') return Promise.resolve()
    return new Promise((resolve) => {
      // Only what systemd-notify needs: NOTIFY_SOCKET, and PATH to find it.
      const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { NOTIFY_SOCKET: socket, PATH: env.PATH ?? '/usr/bin:/bin' }, timeout: NOTIFY_TIMEOUT_MS })
      let stderr = ''
      child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-500) })
      child.on('error', (err) => { onError(`${command}: ${err.message}`); resolve() })
      child.on('close', (code, signal) => {
        if (code !== 0) onError(`${command} ${args.join(' ')} exited with ${code ?? signal}: ${stderr.trim()}`)
        resolve()
      })
    })
  }

  return {
    ready: (status) => send(['--ready', `--status=${status.replace(/[\r\n]+/g, ' ')}`]),
    stopping: () => send(['STOPPING=1']),
  }
}
