/**
 * Error codes in job and command outcomes. A handler chooses its own (any
 * code that matches ERROR_CODE_PATTERN); the codes below are the ones
 * rollcall itself sets, on the agent or the hub (some are also the codes of
 * the API's errors, common/errors.ts, for the same events). They are one catalogue so
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
  /** A command: no reply by its deadline (the hub), or a group member whose turn came after it. */
  COMMAND_TIMEOUT: 'no reply by the deadline',
  /** A command: the device's connection ended before it replied, or the command could not be sent. */
  DEVICE_DISCONNECTED: 'the device disconnected before the reply',
  /** A command: the device was not reachable when it was sent. */
  DEVICE_OFFLINE: 'the device was not reachable',
  /** A command: the device said it failed and gave no error of its own. */
  FAILED: 'the device failed without details',
  /** A command that reached the device after its expiresAt: not run. */
  EXPIRED: 'arrived after its deadline',
  /** A command the device has no handler for. */
  UNKNOWN_COMMAND: 'no such command on the device',
  /** A command refused because the device runs its limit of commands (commandConcurrency). */
  BUSY: 'the device is running its limit of commands',
  /** A command the device could not record in its ledger, so did not run. */
  LEDGER_FAILED: 'the device could not record it',
  /** A job whose task the device has no handler for. */
  UNKNOWN_TASK: 'no such task on the device',
} as const

export type OutcomeCode = keyof typeof OUTCOME_CODES
