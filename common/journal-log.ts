import { fstatSync } from 'node:fs'
import type { DestinationStream } from 'pino'
import { pino } from './pino.js'

/**
 * Log lines for the systemd journal. Under systemd, stdout is a stream to
 * journald, which stamps each line with the time, unit, PID and host, and
 * reads a leading `<N>` as the line's syslog priority (SyslogLevelPrefix=,
 * on by default). So one entry becomes one line with no time, pid or
 * hostname of its own, and its priority in front, so that
 * `journalctl -u rollcall-agent -p warning` filters by level:
 *
 *   <4>greenhouse-01 link: connection lost reason=timeout attempt=3
 *
 * systemd sets JOURNAL_STREAM to "DEV:INODE" of that stream; matching it
 * against the descriptor's own fstat() tells a stream that really is the
 * journal from one that a child inherited the variable with and points
 * elsewhere (a pipe, a file), as sd_journal_stream_fd(3) advises.
 */

/** Whether `fd` is the journal stream that `journalStream` (the JOURNAL_STREAM variable) names. */
export function isJournalStream(fd: number, journalStream: string | undefined): boolean {
  if (journalStream === undefined || !/^\d+:\d+$/.test(journalStream)) return false
  try {
    const st = fstatSync(fd, { bigint: true })
    return `${st.dev}:${st.ino}` === journalStream
  } catch {
    return false
  }
}

/** pino's numeric level as a syslog priority: crit, err, warning, info, debug. */
export function syslogPriority(level: unknown): number {
  const n = typeof level === 'number' ? level : 30
  if (n >= 60) return 2
  if (n >= 50) return 3
  if (n >= 40) return 4
  if (n >= 30) return 6
  return 7
}

/** Fields journald records by itself, and those the line's head shows. */
const OMITTED = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'deviceId', 'component'])

/** A value as it follows `key=`: bare when that is unambiguous, else as a JSON string (quotes, escapes, no newline). */
function formatValue(v: unknown): string {
  if (typeof v === 'string') return /^[\x21-\x7e]+$/.test(v) && !/["=\\]/.test(v) ? v : JSON.stringify(v)
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v)
  // From JSON.parse: objects and arrays only; JSON.stringify of them is never undefined.
  return JSON.stringify(v) ?? ''
}

/**
 * One pino entry (parsed JSON) as one journal line, without the newline.
 * A thrown error (`err`, pino's serialised Error) shows its message, and its
 * stack as one escaped string: a multi-line stack would become several
 * journal entries, all but the first at the default priority.
 */
export function journalLine(entry: Record<string, unknown>): string {
  const head: string[] = []
  if (typeof entry.deviceId === 'string') head.push(formatValue(entry.deviceId))
  if (typeof entry.component === 'string') head.push(`${formatValue(entry.component)}:`)
  const msg = typeof entry.msg === 'string' ? entry.msg.replace(/[\r\n]+/g, ' ') : ''
  const parts = [...head, ...(msg === '' ? [] : [msg])]
  for (const [key, value] of Object.entries(entry)) {
    if (OMITTED.has(key) || value === undefined) continue
    if (key === 'err' && typeof value === 'object' && value !== null && 'message' in value) {
      const e = value as { type?: unknown; message?: unknown; stack?: unknown }
      parts.push(`err=${formatValue(`${typeof e.type === 'string' ? `${e.type}: ` : ''}${String(e.message)}`)}`)
      if (typeof e.stack === 'string') parts.push(`stack=${JSON.stringify(e.stack)}`)
      continue
    }
    parts.push(`${key}=${formatValue(value)}`)
  }
  return `<${syslogPriority(entry.level)}>${parts.join(' ')}`
}

/**
 * A pino destination writing journal lines to `fd`. Synchronous writes: the
 * journal's stream socket is local and an agent logs little, and a fatal
 * line written just before exit must not be lost in a buffer.
 */
export function journalDestination(fd: 1 | 2): DestinationStream {
  const out = pino.destination({ fd, sync: true })
  return {
    write(line: string) {
      let entry: Record<string, unknown>
      try {
        entry = JSON.parse(line) as Record<string, unknown>
      } catch {
        out.write(`<6>${line.replace(/[\r\n]+/g, ' ')}\n`)
        return
      }
      out.write(`${journalLine(entry)}\n`)
    },
  }
}
