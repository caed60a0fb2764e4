/**
 * One catalogue of error codes with their HTTP status. Code is the stable part
 * users and tests match on; the message is for humans and may change.
 */
export const ERROR_CODES = {
  BAD_REQUEST: 400,
  INVALID_DEVICE_ID: 400,
  INVALID_NAME: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  DEVICE_NOT_FOUND: 404,
  OBSERVER_NOT_FOUND: 404,
  JOB_NOT_FOUND: 404,
  EXECUTION_NOT_FOUND: 404,
  SCHEDULE_NOT_FOUND: 404,
  SCHEDULE_EXISTS: 409,
  JOB_FINISHED: 409,
  TARGET_EMPTY: 400,
  DEVICE_EXISTS: 409,
  OBSERVER_EXISTS: 409,
  PAYLOAD_TOO_LARGE: 413,
  /** Free-form JSON (a job payload, command args) nested past LIMITS.maxJsonDepth (H05). */
  TOO_DEEP: 400,
  DEVICE_OFFLINE: 409,
  COMMAND_TIMEOUT: 504,
  DEVICE_DISCONNECTED: 502,
  COMMAND_NOT_FOUND: 404,
  COMMANDS_NOT_SUPPORTED: 409,
  UNAVAILABLE: 503,
  /** `rollcall service install`: a different unit file is in the way (--force replaces it). */
  UNIT_EXISTS: 409,
  RULE_NOT_FOUND: 404,
  RULE_EXISTS: 409,
  FIRING_NOT_FOUND: 404,
  INTERNAL: 500,
  /** What this hub's set-up does not offer (rules on a hub whose state is in PostgreSQL, so far). */
  NOT_SUPPORTED: 501,
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class RollcallError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message)
    this.name = 'RollcallError'
    this.code = code
    this.details = details
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code]
  }
}

export function isRollcallError(err: unknown): err is RollcallError {
  return err instanceof RollcallError
}
