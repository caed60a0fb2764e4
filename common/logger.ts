import { pino, type Logger, type LoggerOptions } from 'pino'

export type { Logger }

export interface LoggerConfig {
  readonly level: string
  /** Where JSON lines go: stdout by default, stderr for CLI commands whose stdout is data. */
  readonly destination?: 1 | 2
}

/**
 * The one pino root of a process. Components take `root.child({ component })`
 * and per-device code `child({ deviceId })`; untrusted data is nested in the
 * object, never interpolated into the message.
 */
export function createLogger(config: LoggerConfig): Logger {
  const options: LoggerOptions = { level: config.level, base: { pid: process.pid } }
  return pino(options, pino.destination({ fd: config.destination ?? 1, sync: false }))
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
