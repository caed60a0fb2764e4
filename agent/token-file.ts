import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs'
import { isShared, octalMode } from '../common/private-files.js'

/**
 * Reading the agent's token from a file (issue #13): --token-file,
 * ROLLCALL_TOKEN_FILE, "tokenFile" in the config file, or systemd's
 * credential. A token file loses its trailing newline; a missing, empty or
 * unreadable one is a config problem, one that other users may read is a
 * warning. Problems are added to the caller's lists, each naming the file
 * and what to do, so they are reported with the rest of the config's.
 */

/** A token never holds whitespace or control characters; a file with more than one line is a mistake worth naming. */
const TOKEN_TEXT = /^[\x21-\x7e]+$/

/**
 * Reads a token file: its text without the trailing newline (or CRLF). Adds an
 * issue when it is missing, unreadable, not a file, empty or not one token; a
 * warning when group or others may read it.
 */
export function readTokenFile(path: string, what: string, issues: string[], warnings: string[]): string | undefined {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    issues.push(code === 'ENOENT'
      ? `${what}: ${path} does not exist; write the token from \`rollcall device add\` there (chmod 600)`
      : `${what}: cannot read ${path} (${code ?? (err as Error).message}); the agent's user must be able to read it`)
    return undefined
  }
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) {
      issues.push(`${what}: ${path} is not a file`)
      return undefined
    }
    if (stat.size > 64 * 1024) {
      issues.push(`${what}: ${path} is ${stat.size} bytes; a token file holds one token`)
      return undefined
    }
    const text = readFileSync(fd, 'utf8').replace(/(\r?\n)+$/, '')
    if (text === '') {
      issues.push(`${what}: ${path} is empty; write the token from \`rollcall device add\` there`)
      return undefined
    }
    if (!TOKEN_TEXT.test(text) || text.length > 1024) {
      issues.push(`${what}: ${path} does not hold one token (one line of at most 1024 printable characters, no spaces)`)
      return undefined
    }
    if (isShared(stat.mode)) warnings.push(`the token file ${path} can be read by other users (mode ${octalMode(stat.mode)}): chmod 600 ${path}`)
    return text
  } catch (err) {
    issues.push(`${what}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    return undefined
  } finally {
    closeSync(fd)
  }
}
