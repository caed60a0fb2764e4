import { spawn } from 'node:child_process'
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { isTaskName, TASK_NAME_PATTERN } from '../protocol/ids.js'
import { LIMITS } from '../protocol/limits.js'
import { isErrorCode, type OutcomeCode } from '../protocol/outcome-codes.js'
import { compileShellAllow, matchShellAllow, refusalMessage, type ShellAllowEntry, type ShellAllowRule } from './shell-allow.js'

/**
 * Job handlers: what a task name runs. A handler gets a JobContext and
 * returns a JSON value (or a promise of one), which becomes the job's result.
 *
 * Outcomes a handler decides (the runner decides timed_out and canceled):
 *   returns          -> succeeded, with the value as the result
 *   throws JobError  -> its outcome ('failed' or 'rejected') and code
 *   throws anything  -> failed, with `err.code` when it is a valid error code
 *                       (^[A-Z][A-Z0-9_]{0,63}$), else HANDLER_FAILED
 * `rejected` means "this device will not run this job as given" (unknown
 * task, command not allowed, bad payload): retrying it cannot help.
 *
 * Built-ins: echo, sleep, sensors.sample, shell. User handlers come from the
 * agent config's `handlersModule` or from AgentDeps.handlers, and replace a
 * built-in of the same name.
 */

export interface JobContext {
  readonly execId: string
  readonly jobId: string
  readonly attempt: number
  readonly name: string
  /** Untrusted: check its shape before using it (throw rejectJob('BAD_PAYLOAD', ...)). */
  readonly payload: unknown
  /** Aborted on timeout and on cancellation; a long handler must watch it. */
  readonly signal: AbortSignal
  readonly deviceId: string
  readonly logger: Logger
  /** One reading of every sensor the agent has (names to values; sensors with nothing to say are left out). */
  sampleSensors(): Record<string, number>
}

export type JobHandler = (ctx: JobContext) => unknown

export type JobHandlers = Readonly<Record<string, JobHandler>>

/** An error that says how the job ends and with which stable code. */
export class JobError extends Error {
  readonly code: string
  readonly outcome: 'failed' | 'rejected'
  /** Optional JSON result reported with the error (e.g. a command's output). */
  readonly result: unknown

  constructor(code: string, message: string, options: { outcome?: 'failed' | 'rejected'; result?: unknown } = {}) {
    super(message)
    this.name = 'JobError'
    this.code = code
    this.outcome = options.outcome ?? 'failed'
    this.result = options.result
  }
}

/** The device will not run this job as given; the hub does not retry a rejection. */
export function rejectJob(code: string, message: string): JobError {
  return new JobError(code, message, { outcome: 'rejected' })
}

export interface BuiltinOptions {
  /** What the shell task may run, in the forms of agent/shell-allow.ts. */
  readonly shellAllow: readonly ShellAllowEntry[]
  /** Each of stdout and stderr is capped at this many bytes (the head is kept). */
  readonly shellMaxOutputBytes: number
}

export const BUILTIN_TASKS = ['echo', 'sleep', 'sensors.sample', 'shell'] as const

/** The shell task's allowlist, compiled, and its output cap. */
export interface ShellSettings {
  readonly rules: readonly ShellAllowRule[]
  readonly shellMaxOutputBytes: number
}

/** Compiles the options; throws on entries resolveAgentConfig would have refused. */
export function shellSettings(options: BuiltinOptions): ShellSettings {
  const compiled = compileShellAllow(options.shellAllow)
  // resolveAgentConfig reports these with the other config problems; a caller that skipped it learns here.
  if (compiled.issues.length > 0) throw new Error(`invalid shellAllow: ${compiled.issues.join('; ')}`)
  return { rules: compiled.rules, shellMaxOutputBytes: options.shellMaxOutputBytes }
}

/**
 * The built-in tasks. Given a function, the shell task asks it for the
 * settings at each run, so a reloaded config (SIGHUP) applies to the next job.
 */
export function builtinHandlers(options: BuiltinOptions | (() => ShellSettings)): Record<string, JobHandler> {
  const fixed = typeof options === 'function' ? undefined : shellSettings(options)
  const shell = typeof options === 'function' ? options : () => fixed!
  return {
    'echo': (ctx) => ctx.payload,
    'sleep': sleepHandler,
    'sensors.sample': (ctx) => ctx.sampleSensors(),
    'shell': (ctx) => shellHandler(ctx, shell()),
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function sleepHandler(ctx: JobContext): Promise<{ sleptMs: number }> {
  const p = ctx.payload
  const ms = isRecord(p) ? p.ms : undefined
  if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > LIMITS.maxJobTimeoutMs) {
    throw rejectJob('BAD_PAYLOAD', `sleep takes {"ms": N} with N an integer from 0 to ${LIMITS.maxJobTimeoutMs}`)
  }
  return new Promise((resolvePromise, rejectPromise) => {
    const { signal } = ctx
    if (signal.aborted) {
      rejectPromise(new JobError('ABORTED', 'aborted before it slept'))
      return
    }
    const onAbort = () => {
      clearTimeout(timer)
      rejectPromise(new JobError('ABORTED', 'aborted while sleeping'))
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolvePromise({ sleptMs: ms })
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

export interface ShellResult {
  readonly exitCode: number | null
  readonly signal?: string
  readonly stdout: string
  readonly stderr: string
  readonly truncated: boolean
}

/**
 * Runs an allowed command without a shell (no interpolation, no globbing):
 * the argv goes to the OS as given. spawn rather than execFile: execFile
 * either buffers all output or kills the command at its maxBuffer, while this
 * keeps the head of each stream, reads and discards the rest, and lets the
 * command finish.
 */
function shellHandler(ctx: JobContext, options: { readonly rules: readonly ShellAllowRule[]; readonly shellMaxOutputBytes: number }): Promise<ShellResult> {
  const p = ctx.payload
  if (!isRecord(p) || typeof p.cmd !== 'string' || p.cmd === '' ||
      (p.args !== undefined && (!Array.isArray(p.args) || !p.args.every((a) => typeof a === 'string'))) ||
      Object.keys(p).some((k) => k !== 'cmd' && k !== 'args')) {
    throw rejectJob('BAD_PAYLOAD', 'shell takes {"cmd": "/path/to/command", "args": ["..."]} (args optional, all strings)')
  }
  const cmd = p.cmd
  const args: readonly string[] = p.args ?? []
  const verdict = matchShellAllow(options.rules, cmd, args)
  if (!verdict.allowed) throw rejectJob('COMMAND_NOT_ALLOWED', refusalMessage(cmd, args, verdict))
  const cap = options.shellMaxOutputBytes
  return new Promise((resolvePromise, rejectPromise) => {
    const child = spawn(cmd, args, { shell: false, stdio: ['ignore', 'pipe', 'pipe'], signal: ctx.signal, windowsHide: true })
    let truncated = false
    const collect = (stream: NodeJS.ReadableStream) => {
      const chunks: Buffer[] = []
      let size = 0
      stream.on('data', (chunk: Buffer) => {
        if (size >= cap) {
          truncated = true
          return
        }
        const room = cap - size
        if (chunk.length > room) {
          truncated = true
          chunk = chunk.subarray(0, room)
        }
        chunks.push(chunk)
        size += chunk.length
      })
      return () => Buffer.concat(chunks).toString('utf8')
    }
    const stdout = collect(child.stdout)
    const stderr = collect(child.stderr)
    let settled = false
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return
      settled = true
      if (err.name === 'AbortError') {
        rejectPromise(new JobError('ABORTED', 'the command was killed (the job was aborted)'))
        return
      }
      rejectPromise(new JobError(err.code === 'ENOENT' ? 'COMMAND_NOT_FOUND' : 'SPAWN_FAILED', `could not run ${cmd}: ${err.message}`))
    })
    child.on('close', (exitCode, signal) => {
      if (settled) return
      settled = true
      const result = fitResult(signal
        ? { exitCode, signal, stdout: stdout(), stderr: stderr(), truncated }
        : { exitCode, stdout: stdout(), stderr: stderr(), truncated })
      if (exitCode === 0) {
        resolvePromise(result)
        return
      }
      const tail = result.stderr.trim().slice(-400)
      const how = signal ? `was killed by ${signal}` : `exited with ${exitCode}`
      rejectPromise(new JobError('EXIT_NONZERO', `${cmd} ${how}${tail ? `: ${tail}` : ''}`, { result }))
    })
  })
}

/**
 * Shortens the output (keeping each stream's head) until the result fits
 * LIMITS.maxJobResultBytes, so a chatty command still reports the start of
 * its output rather than only a note that the result was too big.
 */
function fitResult(result: ShellResult): ShellResult {
  const limit = LIMITS.maxJobResultBytes - 64
  let r = result
  for (let i = 0; i < 20; i++) {
    const excess = Buffer.byteLength(JSON.stringify(r)) - limit
    if (excess <= 0) return r
    // Cut the longer stream by the excess (in characters; escaping makes bytes >= characters, so this converges).
    const cut = Math.max(excess, 16)
    r = r.stdout.length >= r.stderr.length
      ? { ...r, stdout: r.stdout.slice(0, Math.max(0, r.stdout.length - cut)), truncated: true }
      : { ...r, stderr: r.stderr.slice(0, Math.max(0, r.stderr.length - cut)), truncated: true }
  }
  return { ...r, stdout: '', stderr: '', truncated: true }
}

/** Any handler: takes one context object, returns a JSON value or a promise of one. */
export type AnyHandler = (ctx: never) => unknown

/** What the job runner and the command runner take from the agent: the parts of a handler's context, and the clock deadlines are judged on. */
export interface HandlerHost {
  readonly deviceId: string
  /** Hub time once the agent knows it (agent/hub-clock.ts): expiresAt is on the hub's clock. */
  readonly clock: Clock
  /** Whether `clock` is the hub's time yet (issue #13); absent: it is taken to be. */
  readonly clockSynced?: () => boolean
  readonly logger: Logger
  /** One reading of every sensor, for the contexts (and the sensors.sample task). */
  readonly sampleSensors: () => Record<string, number>
}

/** Whether a handler returned a promise (any thenable, as `await` takes it) whose ending its runner waits for. */
export function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
}

/** The error a thrown value ends a job or a command with: `err.code` when it is a valid error code, else HANDLER_FAILED. */
export function thrownError(err: unknown): { code: string; message: string } {
  const code = (err as { code?: unknown } | null)?.code
  return {
    code: isErrorCode(code) ? code : 'HANDLER_FAILED' satisfies OutcomeCode,
    message: err instanceof Error ? err.message : String(err),
  }
}

/**
 * Checks a handler map from a user module or AgentDeps (job tasks or
 * commands: both are named like tasks); throws naming what is wrong.
 */
export function checkHandlers<H extends AnyHandler = JobHandler>(handlers: unknown, source: string, kind: 'task' | 'command' = 'task'): Record<string, H> {
  const what = kind === 'task' ? 'handler' : 'command'
  if (!isRecord(handlers)) throw new Error(`${source}: ${what}s must be an object of ${kind} name -> function`)
  const out: Record<string, H> = {}
  for (const [name, fn] of Object.entries(handlers)) {
    if (!isTaskName(name)) throw new Error(`${source}: ${what} name ${JSON.stringify(name)} is not a ${kind} name (${TASK_NAME_PATTERN})`)
    if (typeof fn !== 'function') throw new Error(`${source}: ${what} ${name} is not a function`)
    out[name] = fn as H
  }
  return out
}

/** What a handlersModule provides: job handlers and command handlers, by name (either may be empty). */
export interface HandlersModule<C extends AnyHandler> {
  readonly handlers: Record<string, JobHandler>
  readonly commands: Record<string, C>
}

/**
 * Loads the agent config's handlersModule: an ES module exporting `handlers`
 * (or a default export) as an object of task name -> job handler, and/or
 * `commands` as an object of command name -> command handler. A relative
 * path is resolved against `baseDir`. Throws with a message that says what to fix.
 */
export async function loadHandlersModule<C extends AnyHandler>(path: string, baseDir = process.cwd()): Promise<HandlersModule<C>> {
  const full = isAbsolute(path) ? path : resolve(baseDir, path)
  let mod: Record<string, unknown>
  try {
    mod = (await import(pathToFileURL(full).href)) as Record<string, unknown>
  } catch (err) {
    throw new Error(`handlersModule ${full}: cannot load it: ${(err as Error).message}`)
  }
  const handlers = mod.handlers ?? mod.default
  const commands = mod.commands
  if (handlers === undefined && commands === undefined) {
    throw new Error(`handlersModule ${full}: export "handlers" (or a default export) as an object of task name -> function, and/or "commands" as an object of command name -> function`)
  }
  return {
    handlers: handlers === undefined ? {} : checkHandlers(handlers, `handlersModule ${full}`),
    commands: commands === undefined ? {} : checkHandlers<C>(commands, `handlersModule ${full}`, 'command'),
  }
}

/** The name -> handler table the job runner (tasks) and the command runner (commands) look names up in. */
export class HandlerRegistry<H extends AnyHandler = JobHandler> {
  private readonly handlers = new Map<string, H>()

  constructor(...layers: ReadonlyArray<Readonly<Record<string, H>>>) {
    for (const layer of layers) for (const [name, fn] of Object.entries(layer)) this.handlers.set(name, fn)
  }

  get(name: string): H | undefined {
    return this.handlers.get(name)
  }

  get names(): string[] {
    return [...this.handlers.keys()].sort()
  }
}
