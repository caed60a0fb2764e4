/**
 * Error codes in job and command outcomes. A handler chooses its own (any
 * code that matches ERROR_CODE_PATTERN); the codes below are the ones
 * rollcall itself sets, on the agent or the hub. They are one catalogue so
 * that both sides, and the operators filtering on them, mean the same thing:
 * write them as `'TIMEOUT' satisfies OutcomeCode`, and the compiler checks the
 * name against this list.
 */
export const ERROR_CODE_PATTERN = '^[A-Z][A-Z0-9_]{0,63}$'
const ERROR_CODE_RE = new RegExp(ERROR_CODE_PATTERN)

/** A code an outcome may carry: `DISK_FULL`, `BOOM`, `HTTP_503`. */
export function isErrorCode(value: unknown): value is string {
  return typeof value === 'string' && ERROR_CODE_RE.test(value)
}

export const OUTCOME_CODES = {
  /** A job ran past its timeout (agent), or its device never reported a result in time (the hub's sweeper); a command ran past its expiresAt. */
  TIMEOUT: 'no result in time',
  /** The handler threw, or failed with a code that is not a valid code. */
  HANDLER_FAILED: 'the handler failed',
  /** The handler's result is not JSON, or nests deeper than the limit. */
  BAD_RESULT: 'the result could not be sent',
  /** The agent stopped (crash, power cut, shutdown) while it ran; it is not run again on that device. */
  INTERRUPTED: 'the agent stopped while it ran',
  /** A command: the hub stopped before the device replied. */
  HUB_STOPPING: 'the hub stopped before the reply',
  /** A command: a previous hub process sent it and stopped before the reply. */
  HUB_RESTART: 'the hub restarted before the reply',
} as const

export type OutcomeCode = keyof typeof OUTCOME_CODES
