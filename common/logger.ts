import type { DestinationStream, Logger, LoggerOptions } from 'pino'
import { requireCjs } from './cjs.js'
import { pino } from './pino.js'
import type { PrettyOptions } from 'pino-pretty'
import { isJournalStream, journalDestination } from './journal-log.js'

export type { Logger }

/**
 * `json`: one JSON object a line, for files and log shippers; `pretty`: one
 * readable line, for a person at a terminal; `journal`: one readable line
 * with a syslog priority prefix and no time, for the systemd journal
 * (common/journal-log.ts).
 */
export const LOG_FORMATS = ['auto', 'pretty', 'json', 'journal'] as const
export type LogFormat = typeof LOG_FORMATS[number]

/** A --log-format flag's value as a LogFormat (commander has checked the choices); absent is `auto`. */
export function logFormat(flag: string | undefined): LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(flag ?? '') ? flag as LogFormat : 'auto'
}

export interface LoggerConfig {
  readonly level: string
  /** Where lines go: stdout by default, stderr for CLI commands whose stdout is data. */
  readonly destination?: 1 | 2
  /** `auto` (the default): journal when the destination is systemd's journal stream, pretty on a terminal, JSON otherwise. */
  readonly format?: LogFormat
  /** Where `auto` reads JOURNAL_STREAM; process.env by default. */
  readonly env?: Readonly<Record<string, string | undefined>>
}

/**
 * The one pino root of a process. Components take `root.child({ component })`
 * and per-device code `child({ deviceId })`; untrusted data is nested in the
 * object, never interpolated into the message.
 */
export function createLogger(config: LoggerConfig): Logger {
  const fd = config.destination ?? 1
  const options: LoggerOptions = { level: config.level, base: { pid: process.pid } }
  switch (chosenFormat(config.format ?? 'auto', fd, config.env ?? process.env)) {
    case 'pretty': return pino(options, prettyStream(fd))
    case 'journal': return pino(options, journalDestination(fd))
    case 'json': return pino(options, pino.destination({ fd, sync: false }))
  }
}

/** What `auto` means for this destination: the journal under systemd, pretty on a terminal, else JSON. */
export function chosenFormat(format: LogFormat, fd: 1 | 2, env: Readonly<Record<string, string | undefined>>): Exclude<LogFormat, 'auto'> {
  if (format !== 'auto') return format
  if (isJournalStream(fd, env.JOURNAL_STREAM)) return 'journal'
  return (fd === 1 ? process.stdout : process.stderr).isTTY === true ? 'pretty' : 'json'
}

/**
 * pino-pretty as a stream in this process (not pino's worker-thread
 * transport, which costs a thread and can lose the last lines at exit):
 * `2026-05-01 14:03:07 WARN demo-17 job-runner: job did not succeed {...}`.
 * It is loaded only here, so a process that logs JSON (an agent under
 * systemd) never loads it.
 */
function prettyStream(fd: 1 | 2): DestinationStream {
  const pretty = requireCjs('pino-pretty') as (o: PrettyOptions) => DestinationStream
  return pretty({
    destination: fd,
    sync: true,
    singleLine: true,
    // The terminal's convention everywhere in the CLI: local time, to the second.
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss',
    ignore: 'pid,hostname,deviceId,component',
    // Only `err` (a thrown Error, with its stack) gets lines of its own; a job's or command's `error` is data.
    errorLikeObjectKeys: ['err'],
    messageFormat: '{if deviceId}{deviceId} {end}{if component}{component}: {end}{msg}',
  })
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
