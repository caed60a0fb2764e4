import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

/**
 * How the user reached this CLI, so that the commands it suggests work when
 * pasted into the same shell (issue #11): in a clone `rollcall` is not on the
 * PATH and `npx rollcall` is; a hub found through --api and --data is found
 * again only with the same flags; and options go to `npm start` after `--`.
 * Like admin-config.ts, this module reads the environment (npm's variables
 * and PATH), nothing else does.
 */

/** What to type for `rollcall`: `rollcall` where it is on the PATH (installed), `npx rollcall` otherwise (a clone). */
export function cliCommand(env: NodeJS.ProcessEnv = process.env): string {
  // npx puts its own bin folder first on the PATH of what it runs: that one does not count.
  if (env.npm_command === 'exec') return 'npx rollcall'
  return onPath('rollcall', env.PATH ?? '') ? 'rollcall' : 'npx rollcall'
}

/** Whether this process was started by `npm start`, whose own options are not ours (ours go after `--`). */
export function startedByNpmStart(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.npm_lifecycle_event === 'start'
}

function onPath(name: string, path: string): boolean {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue
    try {
      accessSync(join(dir, name), constants.X_OK)
      return true
    } catch {
      // not in this folder
    }
  }
  return false
}

/** A word as the shell reads it back: quoted when it holds anything but safe characters. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`
}

/** The flags that found the hub on this run, to repeat in a suggested command. */
export interface HubFlags { readonly api?: string | undefined; readonly data?: string | undefined; readonly adminToken?: string | undefined }

/**
 * A rollcall command to suggest, e.g. hint(opts, 'job', 'show', id) gives
 * `npx rollcall job show j123 --api http://127.0.0.1:41533 --data /tmp/demo`:
 * the words as given, then the --api, --data and --admin-token flags this run
 * was given (none when the hub was found through the environment or the
 * defaults, which the next command finds the same way).
 */
export function hint(flags: HubFlags, ...words: string[]): string {
  const parts = [cliCommand(), ...words.map(shellWord)]
  if (flags.api !== undefined) parts.push('--api', shellWord(flags.api))
  if (flags.data !== undefined) parts.push('--data', shellWord(flags.data))
  if (flags.adminToken !== undefined) parts.push('--admin-token', shellWord(flags.adminToken))
  return parts.join(' ')
}
