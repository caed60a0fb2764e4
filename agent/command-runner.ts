import type { ClockTimer } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { LIMITS } from '../protocol/limits.js'
import type { CommandRequest } from '../protocol/messages.js'
import type { OutcomeCode } from '../protocol/outcome-codes.js'
import { topics } from '../protocol/topics.js'
import type { CommandContext, CommandHandler } from './command-handlers.js'
import { CommandRecords, PRUNE_INTERVAL_MS, type CommandRow } from './command-records.js'
import { commandErrorFrom, INTERRUPTED, refusal, responseJson, type CommandOutcome } from './command-response.js'
import { isPromiseLike, type HandlerHost, type HandlerRegistry } from './job-handlers.js'
import type { Ledger } from './ledger.js'
import { IdleWaiters } from './stop-wait.js'

/**
 * Runs the commands the hub pushes on `cmd/req` and answers on `cmd/res`
 * (DESIGN.md, "Commands": push only to the reachable), recording each id in
 * the ledger's `commands` table (agent/command-records.ts) and answering with
 * what agent/command-response.ts decides.
 *
 * A command id, from request to response:
 *   new       -> running   recorded `running` (one committed INSERT) before
 *                          the handler starts: whatever happens next, the
 *                          id is never run again
 *   new       -> done      refused without running (EXPIRED, UNKNOWN_COMMAND,
 *                          BUSY), the refusal recorded as its response
 *   running   -> done      the handler returned or threw; or expiresAt passed
 *                          (TIMEOUT: its signal fires, it is not waited for);
 *                          or the agent stopped, or crashed and started again
 *                          (INTERRUPTED): the response is recorded, then sent
 *   done      -> (gone)    pruned after COMMAND_KEEP_MS, or beyond the newest
 *                          COMMAND_KEEP_ROWS, once its expiresAt has passed
 *                          (a repeat would be refused as EXPIRED anyway)
 * A repeat of a done id gets the recorded response again; a repeat of a
 * running id is ignored (its response goes out when it ends).
 *
 * Commands are push: a response is published once, QoS 1, straight on the
 * link, with no outbox. If the link is down the response is lost and the hub
 * reports the command as timed out; a repeat of the request gets it again.
 *
 * This is the latency path (hub -> agent -> hub round trips in
 * milliseconds): no timer or coalescing between request and response, one
 * small synchronous write before the handler and one after. Under
 * synchronous=NORMAL a power cut may lose those writes; a command lost that
 * way was simply not answered.
 */

export interface CommandTransport {
  /** QoS 1 publish on the current connection; false when there is none (the response is then lost). */
  publish(topic: string, payload: string | Buffer): boolean
}

export interface CommandRunnerOptions extends HandlerHost {
  /** Commands running at once; a request beyond it is answered BUSY. */
  readonly maxRunning: number
}

export interface CommandRunnerStats {
  /** Requests for this device, repeats included. */
  readonly received: number
  /** Handlers started. */
  readonly ran: number
  /** Repeats of an id already recorded (answered again, or ignored while it runs). */
  readonly duplicates: number
  /** Refused on arrival because expiresAt had passed. */
  readonly expired: number
  readonly unknown: number
  /** Runs that ended with ok: false (threw, bad result, TIMEOUT, INTERRUPTED). */
  readonly failed: number
  /** Refused because maxRunning commands were running. */
  readonly busy: number
  readonly running: number
  /** Handlers that finished after their run had timed out or been interrupted; their result was dropped. */
  readonly lateResults: number
}

interface ActiveRun {
  readonly id: string
  readonly name: string
  controller: AbortController | undefined
  /** Set when the run was ended from outside (expiry or stop): a signal made later is made aborted. */
  abortReason: 'expired' | 'shutdown' | undefined
  timer: ClockTimer | undefined
  settled: boolean
}

export class CommandRunner {
  private readonly handlers: HandlerRegistry<CommandHandler>
  private readonly transport: CommandTransport
  private readonly options: CommandRunnerOptions
  private readonly log: Logger
  private readonly resTopic: string
  private readonly active = new Map<string, ActiveRun>()
  private readonly records: CommandRecords
  private phase: 'new' | 'started' | 'stopped' = 'new'
  private pruneTimer: ClockTimer | undefined
  private readonly idleWaiters = new IdleWaiters()
  private received = 0
  private ran = 0
  private duplicates = 0
  private expired = 0
  private warnedDeviceClock = false
  private unknown = 0
  private failed = 0
  private busy = 0
  private lateResults = 0
  private maxRunning: number

  constructor(ledger: Ledger, handlers: HandlerRegistry<CommandHandler>, transport: CommandTransport, options: CommandRunnerOptions) {
    this.handlers = handlers
    this.transport = transport
    this.options = options
    this.maxRunning = options.maxRunning
    this.log = options.logger.child({ component: 'command-runner' })
    this.resTopic = topics.cmdRes(options.deviceId)
    this.records = new CommandRecords(ledger, this.log)
  }

  /** Records INTERRUPTED for ids a previous run left running, prunes, and starts taking requests. */
  start(): void {
    if (this.phase !== 'new') return
    const now = this.options.clock.now()
    const interrupted = this.records.recoverInterrupted(now)
    if (interrupted > 0) this.log.warn({ commands: interrupted }, 'commands that were running when the agent last stopped are recorded as INTERRUPTED (a repeat is answered so, not run)')
    this.prune(now)
    this.pruneTimer = this.options.clock.setInterval(() => { this.prune(this.options.clock.now()) }, PRUNE_INTERVAL_MS).unref()
    this.phase = 'started'
  }

  /** A new limit (config reload); commands running beyond it finish, new ones are answered BUSY until below it. */
  setMaxRunning(maxRunning: number): void {
    this.maxRunning = maxRunning
  }

  /** Handles one decoded cmd.req for this device. Never throws. */
  onRequest(req: CommandRequest): void {
    if (this.phase !== 'started') return
    this.received++
    const now = this.options.clock.now()
    const clock = this.options.clockSynced === undefined || this.options.clockSynced() ? 'hub' : 'device'
    // Worth knowing (a Pi's clock may be hours off before NTP), once: a hub older than
    // hubTime never tells its time, and every command then takes this path.
    if (clock === 'device') {
      this.log[this.warnedDeviceClock ? 'debug' : 'warn']({ id: req.id, expiresAt: req.expiresAt, now }, 'command deadline judged on the device clock: the hub\'s time is not known (yet)')
      this.warnedDeviceClock = true
    }
    const handler = this.handlers.get(req.name)
    const refused = refusal(req, { now, clock, known: handler !== undefined, running: this.active.size, maxRunning: this.maxRunning, names: () => this.handlers.names })
    const response = refused ? responseJson(req.id, { error: refused }).json : null
    let inserted: boolean
    try {
      inserted = this.records.add(req, Math.floor(now), response)
    } catch (err) {
      // Not recorded, so not run: running it could run it twice. The hub sees the error.
      this.log.error({ err, id: req.id }, 'could not record a command in the ledger; it is not run')
      this.failed++
      this.send(responseJson(req.id, { error: { code: 'LEDGER_FAILED' satisfies OutcomeCode, message: `the device could not record the command, so it did not run it: ${(err as Error).message}` } }).json)
      return
    }
    if (!inserted) {
      this.repeat(req.id)
      return
    }
    if (this.records.noteRow()) {
      // After the response, not on the request's path.
      setImmediate(() => { if (this.phase === 'started') this.prune(this.options.clock.now()) })
    }
    if (response !== null || handler === undefined) {
      this.countRefusal(refused?.code)
      this.log.debug({ id: req.id, name: req.name, code: refused?.code }, 'command refused')
      if (response !== null) this.send(response)
      return
    }
    this.run(req, handler)
  }

  stats(): CommandRunnerStats {
    return {
      received: this.received,
      ran: this.ran,
      duplicates: this.duplicates,
      expired: this.expired,
      unknown: this.unknown,
      failed: this.failed,
      busy: this.busy,
      running: this.active.size,
      lateResults: this.lateResults,
    }
  }

  get activeCount(): number {
    return this.active.size
  }

  /**
   * Deletes done ids past keeping (agent/command-records.ts); returns how
   * many. Runs at start, every few minutes, and after a burst doubled the table.
   */
  prune(now: number): number {
    return this.records.prune(now)
  }

  /**
   * No new requests; running commands get up to `graceMs` to finish (their
   * responses go out); the rest are aborted, recorded and answered as
   * INTERRUPTED. Call before the link and the ledger close. Safe to call twice.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.phase === 'stopped') return
    this.phase = 'stopped'
    this.options.clock.clearTimer(this.pruneTimer)
    this.pruneTimer = undefined
    if (this.active.size > 0 && graceMs > 0) await this.idleWaiters.wait(graceMs)
    for (const run of [...this.active.values()]) this.settle(run, INTERRUPTED, 'shutdown')
  }

  private run(req: CommandRequest, handler: CommandHandler): void {
    this.ran++
    const run: ActiveRun = { id: req.id, name: req.name, controller: undefined, abortReason: undefined, timer: undefined, settled: false }
    this.active.set(req.id, run)
    let value: unknown
    try {
      value = handler(this.contextFor(req, run))
    } catch (err) {
      this.settle(run, { error: commandErrorFrom(err) })
      return
    }
    if (!isPromiseLike(value)) {
      this.settle(run, { result: value })
      return
    }
    // Only a run that outlives its call needs the deadline: the signal fires
    // at expiresAt, when the hub stopped waiting (capped: a device clock far
    // behind the hub's must not hold a slot for longer than any command may take).
    const delay = Math.min(Math.max(req.expiresAt - this.options.clock.now(), 0), LIMITS.maxCommandTimeoutMs)
    run.timer = this.options.clock.setTimeout(() => {
      run.timer = undefined
      this.settle(run, { error: { code: 'TIMEOUT' satisfies OutcomeCode, message: 'the command\'s expiresAt passed while it ran; its signal was fired and its result is dropped' } }, 'expired')
    }, delay)
    value.then(
      (result) => { this.settle(run, { result }) },
      (err: unknown) => { this.settle(run, { error: commandErrorFrom(err) }) },
    )
  }

  private contextFor(req: CommandRequest, run: ActiveRun): CommandContext {
    const base = this.options.logger
    const deviceId = this.options.deviceId
    let logger: Logger | undefined
    return {
      id: req.id,
      name: req.name,
      args: req.args,
      expiresAt: req.expiresAt,
      deviceId,
      // Made on first use: most commands never look at their signal or logger.
      get signal() {
        if (!run.controller) {
          run.controller = new AbortController()
          if (run.abortReason !== undefined) run.controller.abort(run.abortReason)
        }
        return run.controller.signal
      },
      get logger() { return (logger ??= base.child({ commandId: req.id, command: req.name })) },
      sampleSensors: this.options.sampleSensors,
    }
  }

  private settle(run: ActiveRun, outcome: CommandOutcome, abortReason?: 'expired' | 'shutdown'): void {
    if (run.settled) {
      if (abortReason === undefined) {
        this.lateResults++
        this.log.info({ id: run.id, command: run.name }, 'a command finished after it timed out or was interrupted; its result is dropped')
      }
      return
    }
    run.settled = true
    this.options.clock.clearTimer(run.timer)
    run.timer = undefined
    this.active.delete(run.id)
    if (abortReason !== undefined) {
      run.abortReason = abortReason
      run.controller?.abort(abortReason)
    }
    // responseJson may turn a result into BAD_RESULT; the stats follow what is sent.
    const { json: body, error } = responseJson(run.id, outcome)
    if (error) {
      this.failed++
      this.log.warn({ id: run.id, command: run.name, error }, 'command failed')
    }
    try {
      this.records.finish(run.id, body, Math.floor(this.options.clock.now()))
    } catch (err) {
      // The row stays `running`: a repeat is ignored now, and answered INTERRUPTED after a restart.
      this.log.error({ err, id: run.id }, 'could not record a command\'s response in the ledger')
    }
    this.send(body)
    if (this.active.size === 0) this.idleWaiters.wake()
  }

  /** Logged at info: a repeat comes only from a hub that restarted mid-command or a caller that reused an id, both worth seeing. */
  private repeat(id: string): void {
    this.duplicates++
    let row: CommandRow | undefined
    try {
      row = this.records.row(id)
    } catch (err) {
      this.log.error({ err, id }, 'could not read a command id from the ledger')
      return
    }
    if (row?.state === 'done' && row.response !== null) {
      this.log.info({ id }, 'repeated command: sending its recorded response again')
      this.send(row.response)
    } else {
      this.log.info({ id }, 'repeated command still running: its response goes out when it ends')
    }
  }

  private countRefusal(code: string | undefined): void {
    if (code === ('EXPIRED' satisfies OutcomeCode)) this.expired++
    else if (code === ('UNKNOWN_COMMAND' satisfies OutcomeCode)) this.unknown++
    else if (code === ('BUSY' satisfies OutcomeCode)) this.busy++
  }

  private send(body: string): void {
    if (!this.transport.publish(this.resTopic, body)) {
      this.log.debug({ topic: this.resTopic }, 'not connected: a command response is lost (the hub reports the command as timed out)')
    }
  }
}
