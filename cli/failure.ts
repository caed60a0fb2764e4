import { CommanderError, InvalidArgumentError } from './commander.js'
import { ApiError } from './http.js'

/**
 * What a failed `rollcall` run prints and exits with (issue #11), decided
 * apart from the printing (cli/main.ts) so it is tested as a table.
 *
 *   0  help or version asked for
 *   1  a runtime error: the hub's answer (DEVICE_NOT_FOUND, DEVICE_OFFLINE,
 *      ...), an unreachable hub, a port in use, a missing admin token
 *   2  a usage error: the command line was refused, here (an unknown flag,
 *      a bad value) or by the hub as malformed (HTTP 400)
 *
 * `rollcall cmd` adds 3 for a command queued as a job (cmd-command.ts), and
 * `rollcall sim` 130 for an interrupted run.
 */

export const EXIT_FAILED = 1
export const EXIT_USAGE = 2

export interface Failure {
  /** Stable, for scripts: the hub's code, a system code (EADDRINUSE), or USAGE. */
  readonly code: string
  readonly message: string
  readonly exitCode: number
  /** Commander printed it already (its own parse errors, help, version). */
  readonly printed: boolean
}

export function describeFailure(err: unknown, how: { startedByNpmStart: boolean }): Failure {
  if (err instanceof CommanderError && !(err instanceof InvalidArgumentError)) {
    // Commander printed it: help or version (exit 0), or a parse error such as an unknown option.
    // A command group without its subcommand (`rollcall device`) shows help with exit 1: a usage error.
    if (err.exitCode === 0) return { code: 'OK', message: '', exitCode: 0, printed: true }
    const message = err.code === 'commander.help' ? 'a subcommand is missing' : err.message.replace(/^error: /, '')
    return { code: 'USAGE', message, exitCode: EXIT_USAGE, printed: true }
  }
  // Thrown by our own flag checks, inside an action: commander has not printed it.
  if (err instanceof InvalidArgumentError) return { code: 'USAGE', message: err.message, exitCode: EXIT_USAGE, printed: false }
  if (err instanceof ApiError) {
    // The hub's words are for HTTP clients ("send Authorization: Bearer ..."); a CLI user passes a flag.
    const message = err.code === 'UNAUTHORIZED'
      ? 'the hub refused the admin token: pass the right one with --admin-token (or ROLLCALL_ADMIN_TOKEN), or point --data at the hub\'s data dir, which holds it in the file admin-token'
      : err.message
    return { code: err.code, message, exitCode: err.status === 400 ? EXIT_USAGE : EXIT_FAILED, printed: false }
  }
  const e = err as { code?: unknown; message?: unknown; port?: unknown; address?: unknown }
  const code = typeof e.code === 'string' ? e.code : 'ERROR'
  if (code === 'EADDRINUSE') {
    // `npm start --mqtt-port 0` is npm's own option, and npm refuses it: ours go after `--`.
    const flags = how.startedByNpmStart ? 'npm start -- --mqtt-port 0 --http-port 0' : '--mqtt-port 0 --http-port 0'
    const message = `port ${String(e.port)} on ${String(e.address)} is already in use (another hub, or a Mosquitto?): stop it, or choose other ports (0 picks a free one): ${flags}`
    return { code, message, exitCode: EXIT_FAILED, printed: false }
  }
  return { code, message: typeof e.message === 'string' ? e.message : String(err), exitCode: EXIT_FAILED, printed: false }
}

/** The stderr line: "rollcall: CODE: message"; usage errors need no code, the message names the flag. */
export function failureLine(f: Failure): string {
  return `rollcall: ${f.code === 'USAGE' || f.code === 'ERROR' ? '' : `${f.code}: `}${f.message}`
}

/** Whether --json was among the arguments (before a `--`): a failure is then also printed on stdout as JSON. */
export function jsonRequested(argv: readonly string[]): boolean {
  const end = argv.indexOf('--')
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json')
}
