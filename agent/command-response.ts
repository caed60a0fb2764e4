import { nestsDeeperThan } from '../protocol/json-bounds.js'
import { LIMITS } from '../protocol/limits.js'
import type { CommandRequest } from '../protocol/messages.js'
import { isErrorCode, type OutcomeCode } from '../protocol/outcome-codes.js'
import { thrownError } from './job-handlers.js'

/**
 * What a command request is answered with, decided apart from the running
 * (agent/command-runner.ts records and sends it): whether a new request runs
 * at all or is refused (EXPIRED, UNKNOWN_COMMAND, BUSY), how a thrown value
 * becomes the response's error, and the `cmd/res` text itself, with a result
 * that cannot be sent turned into BAD_RESULT. Pure: no clock, no I/O.
 */

export interface CommandError {
  readonly code: string
  readonly message: string
}

export type CommandOutcome = { readonly result: unknown } | { readonly error: CommandError }

/** A response's JSON text, with its error when it is not ok. */
export interface ResponseText {
  readonly json: string
  readonly error?: CommandError
}

export const INTERRUPTED_COMMAND_MESSAGE = 'the agent stopped (crash, power cut or shutdown) while this command ran; it was not run to completion and is not run again'

/** How a command ends that did not run to completion: the agent stopped, or crashed and started again. */
export const INTERRUPTED: CommandOutcome = { error: { code: 'INTERRUPTED' satisfies OutcomeCode, message: INTERRUPTED_COMMAND_MESSAGE } }

export interface RefusalInput {
  /** The hub's time as the device knows it, or its own clock before it knows (`clock` says which). */
  readonly now: number
  /** Which clock `now` is on; 'hub' when absent. */
  readonly clock?: 'hub' | 'device'
  /** Whether the device has a handler for the name. */
  readonly known: boolean
  readonly running: number
  readonly maxRunning: number
  /** The names the device has, for the UNKNOWN_COMMAND message (called only then). */
  readonly names: () => readonly string[]
}

/**
 * Why a new request is answered without running it, or undefined to run it.
 * Pure: the runner records and sends what this decides.
 */
export function refusal(req: Pick<CommandRequest, 'name' | 'expiresAt'>, input: RefusalInput): CommandError | undefined {
  const { now } = input
  if (req.expiresAt <= now) {
    const on = input.clock === 'device' ? 'device clock: the hub\'s time was not known yet' : 'hub clock as the device knows it'
    return { code: 'EXPIRED' satisfies OutcomeCode, message: `the command expired ${Math.round(now - req.expiresAt)} ms before it arrived (${on}); it was not run` }
  }
  if (!input.known) {
    return { code: 'UNKNOWN_COMMAND' satisfies OutcomeCode, message: capMessage(`this device has no command ${JSON.stringify(req.name)}; it has: ${input.names().join(', ')}`) }
  }
  if (input.running >= input.maxRunning) {
    return { code: 'BUSY' satisfies OutcomeCode, message: `${input.running} commands are running on this device, its limit (commandConcurrency); try again shortly` }
  }
  return undefined
}

/** How a thrown value becomes a response's error (as for jobs: err.code when it is a valid code). */
export function commandErrorFrom(err: unknown): CommandError {
  const { code, message } = thrownError(err)
  return { code, message: capMessage(message) }
}

function capMessage(message: string): string {
  return message.length > LIMITS.maxJobErrorChars ? message.slice(0, LIMITS.maxJobErrorChars) : message
}

/**
 * The response's JSON text. Command ids match ^c[a-z0-9]+$ and need no
 * escaping, so the result's JSON is spliced in rather than stringified twice.
 * A result that is not JSON fails the command (BAD_RESULT); one over
 * LIMITS.maxCommandResultBytes is replaced by `{truncated: true, bytes}`.
 */
export function responseJson(id: string, outcome: CommandOutcome): ResponseText {
  const head = `{"type":"cmd.res","v":1,"id":"${id}"`
  if ('error' in outcome) {
    const error = { code: isErrorCode(outcome.error.code) ? outcome.error.code : 'HANDLER_FAILED' satisfies OutcomeCode, message: capMessage(outcome.error.message) }
    return { json: `${head},"ok":false,"error":${JSON.stringify(error)}}`, error }
  }
  if (outcome.result === undefined) return { json: `${head},"ok":true}` }
  // The hub dead-letters a result nested past the limit (M19b): its caller would wait for nothing.
  if (nestsDeeperThan(outcome.result, LIMITS.maxJsonDepth)) {
    return responseJson(id, { error: { code: 'BAD_RESULT' satisfies OutcomeCode, message: `the handler's result nests arrays and objects deeper than ${LIMITS.maxJsonDepth} levels` } })
  }
  let json: string | undefined
  try {
    json = JSON.stringify(outcome.result)
  } catch (err) {
    return responseJson(id, { error: { code: 'BAD_RESULT' satisfies OutcomeCode, message: `the handler's result is not JSON: ${(err as Error).message}` } })
  }
  if (json === undefined) return responseJson(id, { error: { code: 'BAD_RESULT' satisfies OutcomeCode, message: 'the handler\'s result is not JSON (a function or symbol)' } })
  const bytes = json.length * 3 <= LIMITS.maxCommandResultBytes ? json.length : Buffer.byteLength(json)
  if (bytes > LIMITS.maxCommandResultBytes) json = `{"truncated":true,"bytes":${bytes}}`
  return { json: `${head},"ok":true,"result":${json}}` }
}
