import { resolve } from 'node:path'
import { parseDurationMs } from '../common/duration.js'
import { RollcallError } from '../common/errors.js'
import { validationErrors } from '../common/validator.js'
import { DEVICE_ID_RULE, isDeviceId, isSensorName, isTaskName, isUnit, TASK_NAME_PATTERN } from '../protocol/ids.js'
import { LIMITS } from '../protocol/limits.js'
import type { AgentConfigInput } from './config-schema.js'
import { AgentConfigFileValidator } from './config-validator.generated.js'
import { SIM_MODELS, type SimulatedSensorConfig } from './sensors.js'
import { tlsConfigIssues } from './hub-tls.js'
import { cronProblem, isTimeZone, type LocalSchedule } from './local-schedules.js'
import { compileShellAllow, type ShellAllowEntry } from './shell-allow.js'
import { readTokenFile } from './token-file.js'

export type { AgentConfigInput }

/**
 * The agent's one typed, validated, frozen config: its fields, their
 * defaults, and resolveAgentConfig, which applies the defaults to one merged
 * input and checks every field, naming each problem and what to put there.
 * Where the input comes from (flags, environment, config file, the token's
 * sources) is agent/config-sources.ts.
 *
 * Durations carry their unit in the name; in the file an `...Ms` field takes
 * milliseconds or a duration string ("250ms", "10s", "5m"). MQTT's keepalive is
 * in seconds, as MQTT.js expects it.
 */

export interface AgentConfig {
  /** mqtt://host:port, or mqtts://host:port for TLS (see hub-tls.ts for what is verified) */
  readonly hub: string
  /** PEM of the CA the hub's certificate must chain to (absolute path); undefined: the system's CAs. Only with mqtts://. */
  readonly caFile: string | undefined
  /** A client certificate and its key (PEM, absolute paths) for hubs that ask for one (mutual TLS); both or neither. */
  readonly certFile: string | undefined
  readonly keyFile: string | undefined
  readonly id: string
  readonly token: string
  /** Holds ledger.db. Default ./rollcall-data/agents/<id>, resolved to an absolute path. */
  readonly dataDir: string
  readonly keepaliveSec: number
  readonly connectTimeoutMs: number
  readonly reconnectBaseMs: number
  readonly reconnectMaxMs: number
  /** A connection that lasted this long resets the backoff. */
  readonly reconnectStableMs: number
  /** 0 = no timer; samples are taken only by `sampleNow()`. */
  readonly sampleIntervalMs: number
  readonly builtinSensors: boolean
  readonly sensors: readonly SimulatedSensorConfig[]
  readonly inflightBatches: number
  readonly batchMaxSamples: number
  readonly batchMaxBytes: number
  readonly ackTimeoutMs: number
  /** How long an append waits so that one tick of many sensors leaves as one batch. */
  readonly coalesceMs: number
  /**
   * Sampled telemetry is committed to the outbox at most this often (a group
   * commit; 0 = every tick): each commit costs the SD card a 4 KiB page
   * however small it is (agent/telemetry-batcher.ts). Telemetry reaches the
   * hub up to this much later.
   */
  readonly outboxCommitMs: number
  readonly outboxMaxRows: number
  readonly outboxMaxBytes: number
  /** See LedgerOptions.synchronous. */
  readonly synchronous: 'NORMAL' | 'FULL'
  /** How long stop() waits for the death to be acknowledged. */
  readonly stopTimeoutMs: number
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** Jobs the local queue holds (queued + running) before the agent stops pulling more. */
  readonly jobQueueMax: number
  /** Jobs run at once. */
  readonly jobConcurrency: number
  /** The fallback pull's period (the doorbell normally makes pulls); jittered x[0.5, 1.5). */
  readonly pullIntervalMs: number
  /** Commands run at once; a command beyond it is answered BUSY. */
  readonly commandConcurrency: number
  /** Commands the `shell` task may run, matched exactly; absolute paths recommended. */
  /** Entries in the three forms of agent/shell-allow.ts; patterns already checked to compile. */
  readonly shellAllow: readonly ShellAllowEntry[]
  /** Cap on each of a shell command's stdout and stderr, in bytes (the head is kept). */
  readonly shellMaxOutputBytes: number
  /** Absolute path of an ES module exporting `handlers` (task name -> job handler) and/or `commands` (command name -> command handler). */
  readonly handlersModule: string | undefined
  /** Local cron schedules: each tick enqueues a local job. */
  readonly schedules: readonly LocalSchedule[]
}

export const AGENT_DEFAULTS = {
  keepaliveSec: 30,
  connectTimeoutMs: 10_000,
  reconnectBaseMs: 500,
  reconnectMaxMs: 30_000,
  reconnectStableMs: 10_000,
  sampleIntervalMs: 10_000,
  builtinSensors: true,
  sensors: [],
  inflightBatches: 4,
  batchMaxSamples: 500,
  // Well under the broker's 64 KiB payload cap, leaving room for framing.
  batchMaxBytes: 60_000,
  ackTimeoutMs: 10_000,
  coalesceMs: 10,
  outboxCommitMs: 120_000,
  outboxMaxRows: 200_000,
  outboxMaxBytes: 64 * 1024 * 1024,
  synchronous: 'NORMAL',
  stopTimeoutMs: 2_000,
  logLevel: 'info',
  jobQueueMax: 100,
  jobConcurrency: 2,
  pullIntervalMs: 300_000,
  commandConcurrency: 16,
  shellAllow: [],
  shellMaxOutputBytes: 64 * 1024,
} as const satisfies Partial<AgentConfig>

/** A local schedule's job gets this long unless it sets timeoutMs. */
export const SCHEDULE_DEFAULT_TIMEOUT_MS = 60_000

const TOKEN_HINT = 'give --token-file FILE (or ROLLCALL_TOKEN_FILE, "tokenFile" in the config file, or systemd\'s LoadCredential=token:FILE), or the token itself with ROLLCALL_TOKEN or --token'

/** Hints appended to schema errors, so a message says what to fix, not just what is wrong. */
const HINTS: Record<string, string> = {
  hub: 'e.g. "mqtts://hub.local:8883" (TLS) or "mqtt://hub.local:1883"',
  keepaliveSec: 'whole seconds, 1..65535',
  batchMaxSamples: `1..${LIMITS.maxSamplesPerBatch}`,
  batchMaxBytes: `4096..${LIMITS.maxPayloadBytes - 1024} (payloads must stay under the broker's 64 KiB cap)`,
  inflightBatches: '1..64',
  synchronous: '"NORMAL" or "FULL"',
  logLevel: 'one of fatal, error, warn, info, debug, trace, silent',
  model: `one of ${SIM_MODELS.join(', ')}`,
  jobQueueMax: '1..100000',
  jobConcurrency: '1..256',
  commandConcurrency: '1..1024',
  pullIntervalMs: 'at least "1s"; e.g. "5m"',
  shellAllow: 'a list of entries: "/usr/bin/uptime" (any arguments), ["/usr/bin/systemctl", "restart", "pump"] (exactly this argv) or {"cmd": "/usr/bin/systemctl", "args": ["restart", {"pattern": "pump|fan"}]}',
  cron: 'e.g. "*/5 * * * *" (5 fields, or 6 with seconds first)',
}

function hintFor(path: string): string {
  const field = path.split('/').filter((p) => p !== '' && !/^\d+$/.test(p)).pop() ?? ''
  const hint = HINTS[field] ?? (field.endsWith('Ms') ? 'milliseconds (an integer) or a duration such as "250ms", "10s", "5m"' : undefined)
  return hint ? ` (${hint})` : ''
}

/** The schema's problems with a config file's (or merged input's) value, each naming its field and what to put there. */
export function schemaIssues(value: unknown): string[] {
  const issues: string[] = []
  const seen = new Set<string>()
  for (const e of validationErrors(AgentConfigFileValidator, value)) {
    // "schema is false" duplicates the additionalProperties error; the
    // per-branch errors of a union duplicate its anyOf error.
    if (e.keyword === 'boolean' || (e.schemaPath.includes('/anyOf/'))) continue
    const path = e.instancePath === '' ? '(top level)' : e.instancePath.slice(1).replaceAll('/', '.')
    let text: string
    if (e.keyword === 'additionalProperties') {
      const extra = (e.params as { additionalProperties?: string[] }).additionalProperties ?? []
      text = `${path}: unknown field${extra.length > 1 ? 's' : ''} ${extra.join(', ')}; remove ${extra.length > 1 ? 'them' : 'it'} or check the spelling`
    } else {
      text = `${path}: ${e.message}${hintFor(e.instancePath)}`
    }
    if (!seen.has(text)) issues.push(text)
    seen.add(text)
  }
  return issues
}

function toMs(value: number | string | undefined, field: string, issues: string[]): number | undefined {
  if (typeof value !== 'string') return value
  const ms = parseDurationMs(value)
  if (ms === undefined) issues.push(`${field}: ${JSON.stringify(value)} is not a duration${hintFor(field)}`)
  return ms
}

export function configError(issues: readonly string[], source: string): RollcallError {
  return new RollcallError('BAD_REQUEST', `invalid agent config (${source}):\n  - ${issues.join('\n  - ')}`, { issues })
}

const MS_FIELDS = ['connectTimeoutMs', 'reconnectBaseMs', 'reconnectMaxMs', 'reconnectStableMs', 'sampleIntervalMs', 'ackTimeoutMs', 'coalesceMs', 'outboxCommitMs', 'stopTimeoutMs', 'pullIntervalMs'] as const

/**
 * Applies defaults to one merged input, validates everything, and returns the
 * frozen config. Throws RollcallError BAD_REQUEST listing every problem, each
 * naming its field and what to put there. Simulators and tests call this directly.
 */
export function resolveAgentConfig(input: AgentConfigInput, source = 'input'): AgentConfig {
  return resolveWithWarnings(input, source, []).config
}

/**
 * resolveAgentConfig, also returning what deserves a warning (a token file
 * others can read). `preIssues` are problems the caller already found (two
 * token sources), reported with these; `tokenFileLabel` names a tokenFile's
 * source in its problems.
 */
export function resolveWithWarnings(input: AgentConfigInput, source: string, preIssues: readonly string[], tokenFileLabel = 'tokenFile'): { config: AgentConfig; warnings: string[] } {
  // Schema problems first: the checks below assume the shapes are right.
  const schema = schemaIssues(input)
  if (schema.length > 0) throw configError([...preIssues, ...schema], source)
  const issues = [...preIssues]
  const warnings: string[] = []
  // A token problem already reported (two sources, a bad file) is not reported again as a missing token.
  let tokenReported = preIssues.some((i) => i.startsWith('token:'))
  if (input.token !== undefined && input.tokenFile !== undefined) {
    issues.push('token and tokenFile are both given; keep one (a file keeps the token out of the config)')
    tokenReported = true
  } else if (input.tokenFile !== undefined) {
    const before = issues.length
    const token = readTokenFile(resolve(input.tokenFile), tokenFileLabel, issues, warnings)
    tokenReported ||= issues.length > before
    const { tokenFile: _file, ...rest } = input
    input = token === undefined ? rest : { ...rest, token }
  }

  const ms: Partial<Record<(typeof MS_FIELDS)[number], number>> = {}
  for (const f of MS_FIELDS) {
    const v = toMs(input[f], f, issues)
    if (v !== undefined) ms[f] = v
  }
  const sensors: SimulatedSensorConfig[] = []
  const names = new Set<string>()
  for (const [i, s] of (input.sensors ?? []).entries()) {
    const periodMs = toMs(s.periodMs, `sensors.${i}.periodMs`, issues)
    if (!isSensorName(s.name)) issues.push(`sensors.${i}.name: ${JSON.stringify(s.name)} is not a sensor name (lowercase letters, digits, ".", "_", "-"; at most 64)`)
    if (names.has(s.name)) issues.push(`sensors.${i}.name: ${s.name} is used twice; names must be unique`)
    names.add(s.name)
    if (s.unit !== undefined && !isUnit(s.unit)) issues.push(`sensors.${i}.unit: ${JSON.stringify(s.unit)} is not a unit (1 to 16 characters, no control characters, e.g. "°C", "hPa", "%")`)
    if (!(s.min <= s.max)) issues.push(`sensors.${i}: min (${s.min}) must not be greater than max (${s.max})`)
    const { periodMs: _raw, ...rest } = s
    sensors.push(Object.freeze(periodMs === undefined ? rest : { ...rest, periodMs }))
  }

  const schedules: LocalSchedule[] = []
  const scheduleNames = new Set<string>()
  for (const [i, s] of (input.schedules ?? []).entries()) {
    const at = `schedules.${i}`
    const timeoutMs = toMs(s.timeoutMs, `${at}.timeoutMs`, issues)
    if (!isTaskName(s.name)) issues.push(`${at}.name: ${JSON.stringify(s.name)} is not a schedule name (${TASK_NAME_PATTERN})`)
    if (scheduleNames.has(s.name)) issues.push(`${at}.name: ${s.name} is used twice; names must be unique`)
    scheduleNames.add(s.name)
    if (!isTaskName(s.task)) issues.push(`${at}.task: ${JSON.stringify(s.task)} is not a task name (${TASK_NAME_PATTERN})`)
    const problem = cronProblem(s.cron)
    if (problem !== undefined) issues.push(`${at}.cron: ${JSON.stringify(s.cron)} is not a cron expression (${problem})${hintFor('cron')}`)
    if (s.timezone !== undefined && !isTimeZone(s.timezone)) issues.push(`${at}.timezone: ${JSON.stringify(s.timezone)} is not a time zone this system knows (e.g. "Europe/Berlin", "UTC")`)
    const payloadBytes = s.payload === undefined ? 0 : Buffer.byteLength(JSON.stringify(s.payload) ?? '')
    if (payloadBytes > LIMITS.maxJobPayloadBytes) issues.push(`${at}.payload: ${payloadBytes} bytes as JSON; at most ${LIMITS.maxJobPayloadBytes}`)
    schedules.push(Object.freeze({
      name: s.name,
      cron: s.cron,
      task: s.task,
      timeoutMs: timeoutMs ?? SCHEDULE_DEFAULT_TIMEOUT_MS,
      ...(s.payload !== undefined ? { payload: s.payload } : {}),
      ...(s.timezone !== undefined ? { timezone: s.timezone } : {}),
    }))
  }

  issues.push(...compileShellAllow(input.shellAllow ?? []).issues)

  if (input.hub === undefined) issues.push('hub: required; pass --hub mqtt://HOST:PORT or set "hub" in the config file')
  else if (!isHubUrl(input.hub)) issues.push(`hub: ${JSON.stringify(input.hub)} is not an MQTT URL${hintFor('hub')}`)
  const pathOf = (p: string | undefined) => (p === undefined ? undefined : resolve(p))
  const tlsFiles = { caFile: pathOf(input.caFile), certFile: pathOf(input.certFile), keyFile: pathOf(input.keyFile) }
  issues.push(...tlsConfigIssues(input.hub !== undefined && isHubUrl(input.hub) ? input.hub : undefined, tlsFiles))
  if (input.id === undefined) issues.push('id: required; pass --id DEVICE_ID or set "id" in the config file')
  else if (!isDeviceId(input.id)) issues.push(`id: ${JSON.stringify(input.id)} is not a device id (${DEVICE_ID_RULE})`)
  if (input.token === undefined && !tokenReported) issues.push(`token: required; ${TOKEN_HINT}`)

  const d = AGENT_DEFAULTS
  const reconnectBaseMs = ms.reconnectBaseMs ?? d.reconnectBaseMs
  const reconnectMaxMs = ms.reconnectMaxMs ?? d.reconnectMaxMs
  if (reconnectMaxMs < reconnectBaseMs) issues.push(`reconnectMaxMs (${reconnectMaxMs}) must be at least reconnectBaseMs (${reconnectBaseMs})`)
  if (issues.length > 0) throw configError(issues, source)
  const commitMs = ms.outboxCommitMs ?? d.outboxCommitMs
  if (input.synchronous === 'FULL' && commitMs > 0) {
    // FULL makes every write of the ledger survive a power cut; the samples not yet written are in memory either way.
    warnings.push(`synchronous is FULL, but samples are written to the ledger only every ${commitMs / 1000} s (outboxCommitMs): a power cut still loses up to that much; set outboxCommitMs to 0 to write every tick`)
  }

  const id = input.id!
  const config: AgentConfig = {
    hub: input.hub!,
    ...tlsFiles,
    id,
    token: input.token!,
    dataDir: resolve(input.dataDir ?? `./rollcall-data/agents/${id}`),
    keepaliveSec: input.keepaliveSec ?? d.keepaliveSec,
    connectTimeoutMs: ms.connectTimeoutMs ?? d.connectTimeoutMs,
    reconnectBaseMs,
    reconnectMaxMs,
    reconnectStableMs: ms.reconnectStableMs ?? d.reconnectStableMs,
    sampleIntervalMs: ms.sampleIntervalMs ?? d.sampleIntervalMs,
    builtinSensors: input.builtinSensors ?? d.builtinSensors,
    sensors: Object.freeze(sensors),
    inflightBatches: input.inflightBatches ?? d.inflightBatches,
    batchMaxSamples: input.batchMaxSamples ?? d.batchMaxSamples,
    batchMaxBytes: input.batchMaxBytes ?? d.batchMaxBytes,
    ackTimeoutMs: ms.ackTimeoutMs ?? d.ackTimeoutMs,
    coalesceMs: ms.coalesceMs ?? d.coalesceMs,
    outboxCommitMs: ms.outboxCommitMs ?? d.outboxCommitMs,
    outboxMaxRows: input.outboxMaxRows ?? d.outboxMaxRows,
    outboxMaxBytes: input.outboxMaxBytes ?? d.outboxMaxBytes,
    synchronous: input.synchronous ?? d.synchronous,
    stopTimeoutMs: ms.stopTimeoutMs ?? d.stopTimeoutMs,
    logLevel: (input.logLevel ?? d.logLevel),
    jobQueueMax: input.jobQueueMax ?? d.jobQueueMax,
    jobConcurrency: input.jobConcurrency ?? d.jobConcurrency,
    pullIntervalMs: ms.pullIntervalMs ?? d.pullIntervalMs,
    commandConcurrency: input.commandConcurrency ?? d.commandConcurrency,
    shellAllow: Object.freeze([...(input.shellAllow ?? d.shellAllow)]),
    shellMaxOutputBytes: input.shellMaxOutputBytes ?? d.shellMaxOutputBytes,
    handlersModule: input.handlersModule === undefined ? undefined : resolve(input.handlersModule),
    schedules: Object.freeze(schedules),
  }
  return { config: Object.freeze(config), warnings }
}

function isHubUrl(text: string): boolean {
  try {
    const url = new URL(text)
    return (url.protocol === 'mqtt:' || url.protocol === 'mqtts:') && url.hostname !== ''
  } catch {
    return false
  }
}
