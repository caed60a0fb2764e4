import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { InvalidArgumentError } from './commander.js'
import { isRollcallError } from '../common/errors.js'
import { ensurePrivateDir } from '../common/private-files.js'
import { chaosSchedule, parseChaosSpec, type ChaosEvent } from '../devices-sim/chaos.js'
import { externalHub, ownHub, type SimHub } from '../devices-sim/hub-control.js'
import { PROFILE_CHOICES, type ProfileChoice } from '../devices-sim/profiles.js'
import { exitCodeFor, formatRate, renderProgress, renderReport } from '../devices-sim/report.js'
import { runSim, type SimReport } from '../devices-sim/sim.js'
import { DEFAULT_BURSTS_EVERY_TICKS, type ReactionScenario } from '../devices-sim/reactions.js'
import { parseRatePerMinute } from '../common/rate.js'
import { choiceFlag, durationFlag, intFlag } from './parse.js'
import { onSignals } from './signals.js'

/**
 * `rollcall sim` (issue #5): a fleet of simulated devices running the real
 * agent code against a hub, with connectivity profiles, chaos and a workload,
 * then the accounting. This module turns flags into SimOptions, owns the
 * hub when the simulator starts its own, prints (schedule, live progress
 * line, report) and picks the exit status. It never imports hub code: its own
 * hub runs as `rollcall hub` in a child process, so chaos can SIGKILL it.
 *
 * Exit status: 0 nothing lost or duplicated; 1 something was; 2 a usage
 * error (cli/main.ts); 130 interrupted (SIGINT/SIGTERM).
 */

export interface SimFlags {
  devices?: string
  duration?: string
  hub?: string
  api?: string
  adminToken?: string
  ca?: string
  profile?: string
  rate?: string
  seed?: string
  chaos?: string
  jobsEvery?: string
  commandsEvery?: string
  scenario?: string
  burstsEvery?: string
  work?: string
  json: boolean
}

export interface SimPlan {
  readonly devices: number
  readonly durationMs: number
  readonly profile: ProfileChoice
  readonly sampleIntervalMs: number
  readonly seed: number
  readonly chaos: readonly ChaosEvent[]
  readonly jobEveryMs: number
  readonly commandEveryMs: number
  /** --scenario reactions: a rule on vibration bursts (devices-sim/reactions.ts); undefined: none. */
  readonly reactions: ReactionScenario | undefined
  /** An external hub; undefined: the simulator starts its own. */
  readonly hub: { readonly mqttUrl: string; readonly apiUrl: string; readonly adminToken: string; readonly ca: string | undefined } | undefined
  /** Kept after the run; undefined: a temp dir, removed at the end. */
  readonly workDir: string | undefined
  readonly json: boolean
}

export const MAX_DEVICES = 20_000
/** What --scenario takes: a run on top of the fleet's own (devices-sim/reactions.ts). */
const SCENARIOS = ['reactions'] as const
const RATE_HINT = 'samples per second per device with its unit, e.g. 1/s, 5/s, 30/min'

/** "1/s", "30/min" → the interval between two readings of a device; a bare number is refused (per second or per minute?). */
function sampleIntervalFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const perMinute = /\//.test(value) ? parseRatePerMinute(value) : undefined
  const intervalMs = perMinute === undefined ? undefined : Math.round(60_000 / perMinute)
  if (intervalMs === undefined || intervalMs < 10 || intervalMs > 3_600_000) {
    throw new InvalidArgumentError(`--rate must be ${RATE_HINT}, from 1/h to 100/s; got "${value}"`)
  }
  return intervalMs
}

/** A period for the workload: a duration with its unit, or 0 / off for none. */
function everyFlag(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (value === '0' || value === 'off') return 0
  const ms = durationFlag(name, value, 10)
  return ms!
}

function hubUrlFlag(value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new InvalidArgumentError(`--hub must be the hub's MQTT URL, e.g. mqtt://127.0.0.1:1883; got "${value}"`)
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') throw new InvalidArgumentError(`--hub must be an mqtt:// or mqtts:// URL, e.g. mqtts://127.0.0.1:8883; got "${value}"`)
  // The simulated network relays each device to the hub's port on loopback.
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    throw new InvalidArgumentError(`--hub: the simulator reaches a hub on this machine only (127.0.0.1 or localhost); got "${url.hostname}"`)
  }
  // Relayed to 127.0.0.1 either way; over TLS the certificate must hold 127.0.0.1 (rollcall tls init always adds it).
  return url.protocol === 'mqtts:' ? `mqtts://127.0.0.1:${url.port || '8883'}` : `mqtt://127.0.0.1:${url.port || '1883'}`
}

/** Flags to a run plan; every refusal says what to write instead. Pure but for `env` (ROLLCALL_ADMIN_TOKEN) and the random default seed. */
export function parseSimFlags(flags: SimFlags, env: NodeJS.ProcessEnv = process.env): SimPlan {
  const devices = intFlag('devices', flags.devices ?? '10', 1, MAX_DEVICES)!
  const durationMs = durationFlag('duration', flags.duration ?? '60s', 1000)!
  const profile = choiceFlag('profile', flags.profile ?? 'mixed', PROFILE_CHOICES)!
  const sampleIntervalMs = sampleIntervalFlag(flags.rate) ?? 1000
  const seed = intFlag('seed', flags.seed, 0, 2 ** 32 - 1) ?? Math.floor(Math.random() * 2 ** 31)
  let chaos: ChaosEvent[]
  try {
    chaos = parseChaosSpec(flags.chaos ?? '')
    // The schedule is pure: check it fits the run (and the fleet) before anything starts.
    chaosSchedule(chaos, seed, Array.from({ length: devices }, (_, i) => `d${i}`), durationMs)
  } catch (err) {
    if (isRollcallError(err)) throw new InvalidArgumentError(`--chaos: ${err.message}`)
    throw err
  }
  let hub: SimPlan['hub']
  if (flags.hub !== undefined) {
    const mqttUrl = hubUrlFlag(flags.hub)
    const token = flags.adminToken ?? env.ROLLCALL_ADMIN_TOKEN
    if (flags.api === undefined || !token) {
      throw new InvalidArgumentError('--hub needs --api (the hub\'s HTTP API, e.g. http://127.0.0.1:8080) and --admin-token (or ROLLCALL_ADMIN_TOKEN)')
    }
    if (!/^https?:\/\/[^/]+/.test(flags.api)) throw new InvalidArgumentError(`--api must be a URL like http://127.0.0.1:8080; got "${flags.api}"`)
    if (chaos.some((e) => e.kind === 'hub-kill')) {
      throw new InvalidArgumentError('--chaos hub-kill needs the simulator\'s own hub (it cannot kill a hub it did not start): drop --hub, or drop hub-kill from --chaos')
    }
    if (flags.ca !== undefined && !existsSync(flags.ca)) throw new InvalidArgumentError(`--ca ${flags.ca} does not exist: give the hub's ca.pem (DATA/tls/ca.pem after \`rollcall tls init\`)`)
    if (flags.ca !== undefined && !mqttUrl.startsWith('mqtts:')) throw new InvalidArgumentError('--ca goes with an mqtts:// --hub: the agents would not use it over plaintext MQTT')
    hub = { mqttUrl, apiUrl: flags.api.replace(/\/+$/, ''), adminToken: token, ca: flags.ca === undefined ? undefined : resolve(flags.ca) }
  } else if (flags.api !== undefined || flags.adminToken !== undefined || flags.ca !== undefined) {
    throw new InvalidArgumentError('--api, --admin-token and --ca go with --hub; without --hub the simulator starts a hub of its own')
  }
  const scenario = choiceFlag('scenario', flags.scenario, SCENARIOS)
  if (flags.burstsEvery !== undefined && scenario !== 'reactions') throw new InvalidArgumentError('--bursts-every goes with --scenario reactions')
  const reactions = scenario === 'reactions' ? { burstsEveryTicks: intFlag('bursts-every', flags.burstsEvery, 1, 1_000_000) ?? DEFAULT_BURSTS_EVERY_TICKS } : undefined
  let workDir: string | undefined
  if (flags.work !== undefined) {
    workDir = resolve(flags.work)
    // A previous run's ledgers would be counted again: the accounting needs fresh ones.
    if (existsSync(workDir) && readdirSync(workDir).length > 0) {
      throw new InvalidArgumentError(`--work ${workDir} is not empty: give a new or empty directory (a previous run's ledgers would be counted again)`)
    }
  }
  return {
    devices, durationMs, profile, sampleIntervalMs, seed, chaos,
    jobEveryMs: everyFlag('jobs-every', flags.jobsEvery, 15_000),
    commandEveryMs: everyFlag('commands-every', flags.commandsEvery, 500),
    reactions, hub, workDir, json: flags.json,
  }
}

/**
 * Where lines go while the run lasts. The live progress line is on stderr,
 * rewritten in place on a terminal and a plain line otherwise; the rest goes
 * to stdout, or to stderr with --json so stdout stays one JSON document.
 */
class Console {
  private live = false
  constructor(private readonly json: boolean, private readonly tty: boolean) {}

  line(text: string): void {
    this.clear()
    ;(this.json ? process.stderr : process.stdout).write(`${text}\n`)
  }

  progress(text: string): void {
    if (this.tty) {
      // Cut to the terminal's width: a wrapped line could not be rewritten in place.
      const width = process.stderr.columns > 1 ? process.stderr.columns - 1 : text.length
      process.stderr.write(`\r\x1b[2K${text.slice(0, width)}`)
      this.live = true
    } else {
      process.stderr.write(`${text}\n`)
    }
  }

  clear(): void {
    if (!this.live) return
    process.stderr.write('\r\x1b[2K')
    this.live = false
  }
}

export async function runSimCommand(flags: SimFlags): Promise<void> {
  const plan = parseSimFlags(flags)
  const out = new Console(plan.json, process.stderr.isTTY === true)
  const tempWork = plan.workDir === undefined
  const workDir = plan.workDir ?? mkdtempSync(join(tmpdir(), 'rollcall-sim-'))
  ensurePrivateDir(workDir) // the agents' ledgers (job results, shell output) go inside
  let hub: Promise<SimHub> | undefined
  const cleanup = async () => {
    // A hub still starting is waited for, so a Ctrl-C in the first second leaves no hub behind.
    const h = await hub?.catch(() => undefined)
    hub = undefined
    await h?.stop()
    if (tempWork) rmSync(workDir, { recursive: true, force: true })
  }

  // On a signal during the run, runSim stops its agents cleanly (their ledgers stay consistent)
  // and rejects; then the hub we own stops, the temp dir goes, and the exit code is 130.
  // Before or after the run there is only the hub and the dir to clean up.
  let interrupted = false
  let simulating = false
  const stop = new AbortController()
  const onFirstSignal = (signal: NodeJS.Signals) => {
    interrupted = true
    out.clear()
    process.stderr.write(`rollcall sim: ${signal}: stopping (the run is not reported)\n`)
    if (simulating) {
      stop.abort()
      return
    }
    cleanup().catch((err: unknown) => { process.stderr.write(`rollcall: error while stopping: ${String(err)}\n`) })
      .finally(() => process.exit(130))
  }
  // A repeat of the same Ctrl-C (npx forwards it too) is ignored; a second one a moment later exits now.
  const offSignals = onSignals(onFirstSignal, (signal) => {
    process.stderr.write(`\nrollcall: ${signal} again, exiting now\n`)
    process.exit(130)
  })

  let report: SimReport
  try {
    out.line(`rollcall sim: ${plan.devices} devices (${plan.profile}), ${plan.durationMs / 1000}s, ${formatRate(plan.sampleIntervalMs)} per device, seed ${plan.seed}`)
    let simHub: SimHub
    if (plan.hub) {
      simHub = externalHub(plan.hub.mqttUrl, plan.hub.apiUrl, plan.hub.adminToken, plan.hub.ca)
      hub = Promise.resolve(simHub)
      out.line(`hub: ${plan.hub.mqttUrl}, API ${plan.hub.apiUrl}`)
    } else {
      hub = ownHub(join(workDir, 'hub'))
      simHub = await hub
      if (interrupted) return new Promise(() => {})
      out.line(`hub: its own (pid ${simHub.pid ?? '?'}), ${simHub.mqttUrl}, API ${simHub.apiUrl}, data ${join(workDir, 'hub')}`)
    }
    if (!tempWork) out.line(`work dir: ${workDir} (kept)`)
    simulating = true
    report = await runSim({
      hub: simHub, devices: plan.devices, durationMs: plan.durationMs, profile: plan.profile, seed: plan.seed,
      sampleIntervalMs: plan.sampleIntervalMs, chaos: plan.chaos, workDir,
      jobEveryMs: plan.jobEveryMs, commandEveryMs: plan.commandEveryMs, ...(plan.reactions ? { reactions: plan.reactions } : {}),
      say: (line) => out.line(line),
      onProgress: (p) => out.progress(renderProgress(p)),
      signal: stop.signal,
    })
    simulating = false
  } catch (err) {
    if (interrupted) {
      await cleanup().catch((e: unknown) => { process.stderr.write(`rollcall: error while stopping: ${String(e)}\n`) })
      process.exit(130)
    }
    out.clear()
    await cleanup()
    throw err
  }
  // A signal during the accounting: the handler exits; don't print half a story.
  if (interrupted) return new Promise(() => {})
  out.clear()
  await cleanup()
  offSignals()
  if (plan.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
  else process.stdout.write(`\n${renderReport(report).join('\n')}\n`)
  process.exitCode = exitCodeFor(report)
  // Everything is stopped; a timer some part left behind must not hold the answer back.
  setTimeout(() => process.exit(), 500).unref()
}
