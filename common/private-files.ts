import { chmodSync, closeSync, constants, fchmodSync, fstatSync, mkdirSync, openSync, statSync, type Stats } from 'node:fs'
import { dirname } from 'node:path'
import type { Logger } from './logger.js'

/**
 * Private files (issue #12, section 4). The hub's data dir holds all telemetry,
 * job payloads and results and the token hashes; the agent's ledger holds job
 * results including shell output. A directory made by `mkdir -p` is 0755 and a
 * file opened under the usual umask 022 is 0644: readable by every local user.
 *
 * The rules, the same for hub and agent:
 * - a data dir we create is 0700. Only the last component: parents that
 *   `recursive` has to make stay as the umask makes them (like `mkdir -p`),
 *   because they are paths like /var/lib/x that may be shared.
 * - a data dir that already exists is left as the operator made it, with a
 *   warning when group or others have any access: it may be a directory the
 *   operator shares on purpose, and the files in it are 0600 anyway. The
 *   warning says the fix (`chmod 700 DIR`): with write access others could
 *   rename or replace the database, and with read access they see its names.
 * - a private file is created 0600; one that exists with looser bits is
 *   tightened to 0600 and the change is logged (it is ours, nobody shares a
 *   database file).
 */

export const PRIVATE_DIR_MODE = 0o700
export const PRIVATE_FILE_MODE = 0o600
/** Bits for group and others. */
const SHARED_BITS = 0o077

/** What `ensurePrivateDir` did, for logs and tests. */
export type PrivateDirOutcome = 'created' | 'private' | 'shared'

/** Pure: does this mode give group or others any access? */
export function isShared(mode: number): boolean {
  return (mode & SHARED_BITS) !== 0
}

/** `0o755` → `"0755"`, the way chmod spells it. */
export function octalMode(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`
}

/**
 * Makes `dir` (0700) if it is missing; warns if it exists and group or others
 * may use it. Throws when `dir` exists and is not a directory.
 */
export function ensurePrivateDir(dir: string, logger?: Logger): PrivateDirOutcome {
  const before = statOrUndefined(dir)
  if (before === undefined) {
    // Parents first with the umask's mode (mkdir -p), then the dir itself.
    mkdirSync(dirname(dir), { recursive: true })
    try {
      mkdirSync(dir, { mode: PRIVATE_DIR_MODE })
    } catch (err) {
      // Another process (the CLI, a second agent in the simulator) made it first.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      return ensurePrivateDir(dir, logger)
    }
    // The umask can only remove bits; a umask like 0277 would leave us a dir we
    // cannot write, so set the mode of the dir we just made outright.
    chmodSync(dir, PRIVATE_DIR_MODE)
    return 'created'
  }
  if (!before.isDirectory()) throw new Error(`${dir} exists and is not a directory; point the data dir elsewhere or move that file away`)
  if (!isShared(before.mode)) return 'private'
  logger?.warn({ dir, mode: octalMode(before.mode) },
    `data dir ${dir} is open to other users (mode ${octalMode(before.mode)}); its files are 0600, but others can see or replace them: run "chmod 700 ${dir}" unless you share this directory on purpose`)
  return 'shared'
}

/**
 * Makes `path` exist with mode 0600: creates it empty (0600) if it is missing,
 * tightens it (with a log line) if it has looser bits. Call it before a
 * library such as SQLite creates the file with the umask's 0644.
 */
export function ensurePrivateFile(path: string, logger?: Logger): 'created' | 'private' | 'tightened' {
  let fd: number
  try {
    fd = openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_RDWR, PRIVATE_FILE_MODE)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return tightenIfExists(path, logger) === 'tightened' ? 'tightened' : 'private'
  }
  try {
    // A umask like 0277 would have left 0400; we need read and write.
    if ((fstatSync(fd).mode & 0o777) !== PRIVATE_FILE_MODE) fchmodSync(fd, PRIVATE_FILE_MODE)
    return 'created'
  } finally {
    closeSync(fd)
  }
}

/**
 * Tightens `path` to 0600 (with a log line) when group or others have any bit;
 * never creates it. A stricter mode the operator set (0400) is left alone.
 */
export function tightenIfExists(path: string, logger?: Logger): 'missing' | 'private' | 'tightened' {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing'
    throw err
  }
  try {
    const mode = fstatSync(fd).mode & 0o777
    if (!isShared(mode)) return 'private'
    fchmodSync(fd, PRIVATE_FILE_MODE)
    logger?.info({ path, from: octalMode(mode), to: octalMode(PRIVATE_FILE_MODE) }, `tightened ${path} from ${octalMode(mode)} to 0600: it holds private data`)
    return 'tightened'
  } finally {
    closeSync(fd)
  }
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}
