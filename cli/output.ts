import { formatDurationMs } from '../common/duration.js'

/**
 * How the CLI prints: lines, JSON, tables and times.
 *
 * Times (issue #11): in the terminal, local time as `YYYY-MM-DD HH:MM:SS`
 * (with milliseconds where steps are milliseconds apart, as in a command's
 * timeline); with --json, whatever the HTTP API returns (epoch milliseconds).
 */

let jsonOnStdout = false

export const out = (s: string): void => { process.stdout.write(`${s}\n`) }

export const printJson = (v: unknown): void => {
  jsonOnStdout = true
  out(JSON.stringify(v, null, 2))
}

/** Whether this run printed a JSON document on stdout already: an error then goes to stderr only, so stdout stays one document. */
export function printedJson(): boolean {
  return jsonOnStdout
}

/** Columns padded to their widest cell; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

/** At most `max` characters; a cut shows as "…", after a whole word when one ends near the cut. */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text
  const head = text.slice(0, max - 1)
  const space = head.lastIndexOf(' ')
  return `${(space >= max * 0.6 ? head.slice(0, space) : head).trimEnd()}…`
}

/** "3m 2s ago", or "-" for no time. */
export function ago(ts: number | null | undefined): string {
  return ts == null ? '-' : `${formatDurationMs(Math.max(0, Date.now() - ts))} ago`
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0')

/** "2026-05-01 14:03:07" in this machine's time zone, or "-" for no time. */
export function localTime(ts: number | null | undefined): string {
  if (ts == null) return '-'
  const d = new Date(ts)
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
}

/** "2026-05-01 14:03:07.042": for steps milliseconds apart. */
export function localTimeMs(ts: number | null | undefined): string {
  return ts == null ? '-' : `${localTime(ts)}.${pad(new Date(ts).getMilliseconds(), 3)}`
}
