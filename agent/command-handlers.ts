import type { Logger } from '../common/logger.js'
import { QUEUED_COMMAND_TASK_PREFIX } from '../protocol/ids.js'
import type { HandlerRegistry, JobHandler } from './job-handlers.js'

/**
 * Command handlers: what a command name runs (DESIGN.md, "Commands": push).
 * Same shape as a job handler: it gets a context and returns a JSON value
 * (or a promise of one), which becomes the response's `result`.
 *
 *   returns          -> {ok: true, result}
 *   throws anything  -> {ok: false, error}, with `err.code` when it is a
 *                       valid error code (^[A-Z][A-Z0-9_]{0,63}$), else
 *                       HANDLER_FAILED (so a JobError's code works too)
 *
 * A command is for now: its signal fires at the request's `expiresAt`,
 * when the hub has stopped waiting for the answer.
 *
 * Built-ins: ping, sys.info, sensors.sample, config.get, jobs.pull. User
 * commands come from the handlersModule's `commands` export or from
 * AgentDeps.commands, and replace a built-in of the same name.
 */

export interface CommandContext {
  /** The command id the hub made; unique, so also an idempotency key. */
  readonly id: string
  readonly name: string
  /** Untrusted: check its shape before using it (throw an error with code BAD_ARGS). */
  readonly args: unknown
  /** Hub clock, ms since the epoch: the hub stops waiting then. */
  readonly expiresAt: number
  /** Fires at expiresAt, and when the agent stops; a long handler must watch it. */
  readonly signal: AbortSignal
  readonly deviceId: string
  readonly logger: Logger
  /** One reading of every sensor (names to values), not stored; `sensors.sample` also stores them. */
  sampleSensors(): Record<string, number>
}

export type CommandHandler = (ctx: CommandContext) => unknown

export type CommandHandlers = Readonly<Record<string, CommandHandler>>

export const BUILTIN_COMMANDS = ['ping', 'sys.info', 'sensors.sample', 'config.get', 'jobs.pull'] as const

/** A sampling through the sampler: what was read, and whether it went into the outbox as telemetry. */
export interface CommandSample {
  readonly ts: number
  readonly values: Record<string, number>
  /** Samples appended to the outbox (0 when nothing was read, or the append failed). */
  readonly stored: number
}

/** What the built-ins read from the running agent; the composition root provides it. */
export interface AgentView {
  now(): number
  sysInfo(): Record<string, unknown>
  /** Samples every sensor now through the sampler (the samples also go out as telemetry). */
  sample(): CommandSample
  /** The effective config, token redacted. */
  config(): Record<string, unknown>
  /** Asks the job puller to pull now. */
  pullJobs(): Record<string, unknown>
}

export function builtinCommands(view: AgentView): Record<string, CommandHandler> {
  return {
    'ping': () => ({ pong: true, ts: view.now() }),
    'sys.info': () => view.sysInfo(),
    'sensors.sample': () => view.sample(),
    'config.get': () => view.config(),
    'jobs.pull': () => view.pullJobs(),
  }
}

/** Shown instead of secrets in config.get. */
export const REDACTED = '[redacted]'

/** The config as config.get answers it: the token, and a password in the hub URL, are never sent. */
export function redactedConfig<C extends { readonly token: string; readonly hub: string }>(config: C): Record<string, unknown> {
  let hub = config.hub
  try {
    const url = new URL(hub)
    if (url.password !== '') {
      url.password = REDACTED
      hub = url.toString()
    }
  } catch {
    // Not a URL (the config validated it, so this does not happen); keep it.
  }
  return { ...config, hub, token: REDACTED }
}

/**
 * Command handlers as job task handlers, named "cmd.<name>": the job's
 * execution id stands for the command id, its payload for the args; a job has
 * no hub-side deadline, only its timeout, which its signal already carries.
 */
export function commandsAsTasks(commands: HandlerRegistry<CommandHandler>): Record<string, JobHandler> {
  const tasks: Record<string, JobHandler> = {}
  for (const name of commands.names) {
    const run = commands.get(name)!
    const task = `${QUEUED_COMMAND_TASK_PREFIX}${name}`
    if (task.length > 64) continue
    tasks[task] = (ctx) => run({
      id: ctx.execId, name, args: ctx.payload, expiresAt: Number.MAX_SAFE_INTEGER,
      signal: ctx.signal, deviceId: ctx.deviceId, logger: ctx.logger, sampleSensors: () => ctx.sampleSensors(),
    })
  }
  return tasks
}
