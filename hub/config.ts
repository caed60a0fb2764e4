import Type, { type Static } from 'typebox'
import { parse as parseConnectionString } from 'pg-connection-string'
import { Compile } from 'typebox/compile'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import cron from 'node-cron'
import { LIMITS } from '../protocol/messages.js'
import { planListeners } from './listeners.js'

/**
 * The hub's one typed, validated, frozen config. Only this module reads the
 * environment; everything else receives a HubConfig. Options are checked at
 * start-up and a bad one stops the hub with a message that says what to fix.
 */
const Port = Type.Integer({ minimum: 0, maximum: 65535 })

export const HubConfigSchema = Type.Object({
  dataDir: Type.String({ minLength: 1 }),
  host: Type.String({ minLength: 1 }),
  /** Plaintext MQTT; with TLS on it is served only with allowPlaintext (hub/listeners.ts). 0 picks a free port. */
  mqttPort: Port,
  /** MQTT over TLS, when tlsCert and tlsKey are set. 0 picks a free port. */
  mqttTlsPort: Port,
  /** HTTP, or HTTPS when tlsCert and tlsKey are set: API, dashboard, /metrics. */
  httpPort: Port,
  /** PEM files of the hub's certificate and private key: both or neither. Replaced files are picked up without a restart. */
  tlsCert: Type.Optional(Type.String({ minLength: 1 })),
  tlsKey: Type.Optional(Type.String({ minLength: 1 })),
  /** PEM file of intermediate CA certificates sent after tlsCert, when tlsCert holds only the leaf. */
  tlsCa: Type.Optional(Type.String({ minLength: 1 })),
  /** A TLS handshake must finish this soon after the TCP accept (bounds sockets that never finish one). */
  tlsHandshakeTimeoutMs: Type.Integer({ minimum: 100, maximum: 120_000 }),
  /** Serve plaintext listeners on a non-loopback address (without TLS), or plaintext MQTT beside TLS. */
  allowPlaintext: Type.Boolean(),
  allowAnonymous: Type.Boolean(),
  logLevel: Type.Union([Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')]),
  /** Largest PUBLISH payload accepted; bigger packets are cut before they are buffered. */
  // Agents build batches up to the protocol's 64 KiB: a lower cap would refuse them forever.
  maxPayloadBytes: Type.Integer({ minimum: LIMITS.maxPayloadBytes, maximum: 16 * 1024 * 1024 }),
  maxConnections: Type.Integer({ minimum: 1 }),
  /** Sockets that have not had their CONNECT decided, from all sources; kept below maxConnections (M15b). */
  maxPendingConnections: Type.Integer({ minimum: 1 }),
  /** The same from one source address. */
  maxPendingPerAddress: Type.Integer({ minimum: 1 }),
  /** Each client's own connect bucket (device, observer, or anonymous address), before the global one (M14d). */
  clientConnectRatePerSec: Type.Number({ exclusiveMinimum: 0 }),
  clientConnectBurst: Type.Integer({ minimum: 1 }),
  connectRatePerSec: Type.Number({ exclusiveMinimum: 0 }),
  connectBurst: Type.Integer({ minimum: 1 }),
  /** Filters of one SUBSCRIBE past this get SUBACK 0x80 (M24). */
  maxFiltersPerSubscribe: Type.Integer({ minimum: 1, maximum: 65535 }),
  /** Subscriptions one connection may hold (M24). */
  maxSubscriptionsPerClient: Type.Integer({ minimum: 1 }),
  keepaliveMinSec: Type.Integer({ minimum: 1 }),
  keepaliveMaxSec: Type.Integer({ minimum: 1, maximum: 65535 }),
  drainTimeoutMs: Type.Integer({ minimum: 100 }),
  connectTimeoutMs: Type.Integer({ minimum: 100 }),
  /** Group commit: a transaction at most this long after the first queued write... */
  flushDelayMs: Type.Integer({ minimum: 0, maximum: 1000 }),
  /** ...or as soon as this many rows are queued. */
  maxCommitRows: Type.Integer({ minimum: 1 }),
  retentionDays: Type.Number({ exclusiveMinimum: 0 }),
  retentionCron: Type.String(),
  deadLetterMaxRows: Type.Integer({ minimum: 100 }),
  /** A client sending more bad messages than this within a minute is disconnected. */
  badMessagesPerMinute: Type.Integer({ minimum: 1 }),
  /** How often the job sweeper looks for lapsed leases, expired and due executions, and paced rollouts. */
  jobSweepIntervalMs: Type.Integer({ minimum: 50, maximum: 60_000 }),
  /** Added to a job's timeout before the sweeper calls a silent in-progress execution timed out. */
  jobLeaseGraceMs: Type.Integer({ minimum: 0, maximum: 86_400_000 }),
  /** A delivered execution the device has not reported started is sent again on a pull after this long. */
  jobRedeliverAfterMs: Type.Integer({ minimum: 1000, maximum: 86_400_000 }),
  /** Defaults for jobs that do not set them. */
  jobDefaultTimeoutMs: Type.Integer({ minimum: 1, maximum: LIMITS.maxJobTimeoutMs }),
  jobDefaultMaxAttempts: Type.Integer({ minimum: 1, maximum: 100 }),
  jobBackoffBaseMs: Type.Integer({ minimum: 0, maximum: 86_400_000 }),
  jobBackoffMaxMs: Type.Integer({ minimum: 0, maximum: 7 * 86_400_000 }),
  /** Finished jobs (with their executions and history) are deleted this long after they finished, by the retention schedule. */
  jobRetentionDays: Type.Number({ exclusiveMinimum: 0 }),
  /** A command's deadline when it sets none. */
  commandDefaultTimeoutMs: Type.Integer({ minimum: 1, maximum: LIMITS.maxCommandTimeoutMs }),
  /** A group command has at most this many members' commands in flight at once. */
  commandGroupConcurrency: Type.Integer({ minimum: 1, maximum: 100_000 }),
  /** The command record is kept this long. */
  commandRetentionDays: Type.Number({ exclusiveMinimum: 0 }),
  /** GET /metrics answers without the admin token (for a Prometheus on a trusted network). */
  metricsPublic: Type.Boolean(),
  /**
   * An external MQTT broker (mqtt://host:port or mqtts://host:port) the hub
   * connects to as a client instead of running its own (docs/scale-out.md):
   * the MQTT listener options above are then unused.
   */
  broker: Type.Optional(Type.String({ minLength: 1 })),
  /** The hub's account on the external broker. */
  brokerUsername: Type.Optional(Type.String({ minLength: 1 })),
  /** A file holding that account's password (kept out of argv and the environment). */
  brokerPasswordFile: Type.Optional(Type.String({ minLength: 1 })),
  /** PEM file of the CA that signed the external broker's certificate (mqtts:// with a private CA). */
  brokerCa: Type.Optional(Type.String({ minLength: 1 })),
  /** The hub's client id on the external broker: unique per hub, the same across its restarts. Default: made once and kept in the data dir. */
  brokerClientId: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  /** The external broker's accounts are kept by Mosquitto's dynamic-security plugin (on), or by hand (off: docs/scale-out.md). */
  brokerDynsec: Type.Boolean(),
  /**
   * A hub with its own broker moving to an external Mosquitto: each device or
   * observer that connects gets its account there, made from the token it
   * just presented (hub/mqtt/account-handover.ts), as brokerUsername with
   * brokerPasswordFile (and brokerCa).
   */
  handoverBroker: Type.Optional(Type.String({ minLength: 1 })),
  /**
   * A PostgreSQL database (postgres://USER@HOST:5432/DB) the hub keeps its
   * state in instead of the SQLite file in its data dir, shared with the other
   * hubs of a cluster (docs/scale-out.md). The hub migrates its schema.
   */
  database: Type.Optional(Type.String({ minLength: 1 })),
  /** A file holding the database account's password (else PGPASSWORD or ~/.pgpass, as for psql). */
  databasePasswordFile: Type.Optional(Type.String({ minLength: 1 })),
  /** Live streams (GET /api/live: dashboard tabs) open at once. */
  liveMaxStreams: Type.Integer({ minimum: 1, maximum: 10_000 }),
  /** How often the live feed sends what changed, in ms. */
  liveTickMs: Type.Integer({ minimum: 50, maximum: 60_000 }),
}, { additionalProperties: false })

export type HubConfig = Readonly<Static<typeof HubConfigSchema>>

export const HUB_DEFAULTS: HubConfig = {
  dataDir: './rollcall-data',
  host: '127.0.0.1',
  mqttPort: 1883,
  mqttTlsPort: 8883,
  httpPort: 8080,
  tlsHandshakeTimeoutMs: 10_000,
  allowPlaintext: false,
  allowAnonymous: false,
  logLevel: 'info',
  maxPayloadBytes: LIMITS.maxPayloadBytes,
  maxConnections: 20_000,
  maxPendingConnections: 1000,
  maxPendingPerAddress: 100,
  clientConnectRatePerSec: 1,
  clientConnectBurst: 10,
  connectRatePerSec: 1000,
  connectBurst: 1000,
  maxFiltersPerSubscribe: 100,
  maxSubscriptionsPerClient: 1000,
  keepaliveMinSec: 1,
  keepaliveMaxSec: 3600,
  drainTimeoutMs: 5000,
  connectTimeoutMs: 10_000,
  flushDelayMs: 20,
  maxCommitRows: 10_000,
  retentionDays: 30,
  retentionCron: '17 3 * * *',
  deadLetterMaxRows: 100_000,
  badMessagesPerMinute: 100,
  jobSweepIntervalMs: 1000,
  jobLeaseGraceMs: 60_000,
  jobRedeliverAfterMs: 300_000,
  jobDefaultTimeoutMs: 600_000,
  jobDefaultMaxAttempts: 3,
  jobBackoffBaseMs: 10_000,
  jobBackoffMaxMs: 3_600_000,
  jobRetentionDays: 90,
  commandDefaultTimeoutMs: 10_000,
  commandGroupConcurrency: 500,
  commandRetentionDays: 30,
  metricsPublic: false,
  brokerDynsec: true,
  liveMaxStreams: 100,
  liveTickMs: 1000,
}

const check = Compile(HubConfigSchema)

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  /** Each problem on its own (--check-config lists them); the message joins them. */
  readonly problems: readonly string[]
  constructor(message: string, problems: readonly string[] = [message]) {
    super(message)
    this.problems = problems
  }
}

/** Environment variables the hub reads, and the option each sets. */
const ENV_KEYS = {
  ROLLCALL_DATA: 'dataDir',
  ROLLCALL_HOST: 'host',
  ROLLCALL_MQTT_PORT: 'mqttPort',
  ROLLCALL_HTTP_PORT: 'httpPort',
  ROLLCALL_MQTT_TLS_PORT: 'mqttTlsPort',
  ROLLCALL_TLS_CERT: 'tlsCert',
  ROLLCALL_TLS_KEY: 'tlsKey',
  ROLLCALL_TLS_CA: 'tlsCa',
  ROLLCALL_LOG_LEVEL: 'logLevel',
  ROLLCALL_BROKER: 'broker',
  ROLLCALL_BROKER_USERNAME: 'brokerUsername',
  ROLLCALL_BROKER_PASSWORD_FILE: 'brokerPasswordFile',
  ROLLCALL_DATABASE: 'database',
  ROLLCALL_DATABASE_PASSWORD_FILE: 'databasePasswordFile',
} as const

/**
 * Merges, later winning: defaults, environment, a JSON config file's
 * contents (`file`, already parsed), then `overrides` (CLI flags).
 */
export function loadHubConfig(overrides: Partial<HubConfig>, env: NodeJS.ProcessEnv = process.env, file?: unknown): HubConfig {
  const fromEnv: Record<string, unknown> = {}
  for (const [key, option] of Object.entries(ENV_KEYS)) {
    const v = env[key]
    if (v === undefined || v === '') continue
    fromEnv[option] = option.endsWith('Port') ? Number(v) : v
  }
  if (file !== undefined && (typeof file !== 'object' || file === null || Array.isArray(file))) {
    throw new ConfigError('the hub config file must hold a JSON object of options, e.g. {"drainTimeoutMs": 5000}')
  }
  const merged: Record<string, unknown> = { ...HUB_DEFAULTS, ...fromEnv, ...(file as Record<string, unknown> | undefined) }
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) merged[k] = v
  // The pending-socket limits follow a small maxConnections unless they are set: a hub
  // configured with maxConnections 500 before these options existed still starts.
  const given = (k: string) => (file as Record<string, unknown> | undefined)?.[k] !== undefined || (overrides as Record<string, unknown>)[k] !== undefined
  if (typeof merged.maxConnections === 'number' && !given('maxPendingConnections')) {
    merged.maxPendingConnections = Math.max(1, Math.min(HUB_DEFAULTS.maxPendingConnections, Math.floor(merged.maxConnections / 10)))
  }
  if (typeof merged.maxPendingConnections === 'number' && !given('maxPendingPerAddress')) {
    merged.maxPendingPerAddress = Math.min(HUB_DEFAULTS.maxPendingPerAddress, merged.maxPendingConnections)
  }
  if (!check.Check(merged)) {
    const problems = [...new Set([...check.Errors(merged)].filter((e) => e.message !== 'schema is false').map((e) => {
      const extra = (e.params as { additionalProperties?: string[] }).additionalProperties
      return extra ? `unknown option ${extra.map((k) => `"${k}"`).join(', ')} (known: ${Object.keys(HUB_DEFAULTS).join(', ')})` : `${e.instancePath.slice(1) || '(config)'} ${e.message}`
    }))]
    // The message stays short for a failed start; --check-config prints every problem.
    throw new ConfigError(`invalid hub configuration: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? `; and ${problems.length - 5} more (rollcall hub --check-config lists them all)` : ''}`, problems)
  }
  const config = merged as HubConfig
  if (config.keepaliveMinSec > config.keepaliveMaxSec) throw new ConfigError('keepaliveMinSec must not exceed keepaliveMaxSec')
  // Room for authenticated clients whatever the sockets without a CONNECT do (M15b).
  if (config.maxPendingConnections >= config.maxConnections) {
    throw new ConfigError(`maxPendingConnections (${config.maxPendingConnections}) must be below maxConnections (${config.maxConnections}), so sockets that have not sent CONNECT cannot take every slot; lower it (a tenth of maxConnections is plenty) or raise maxConnections`)
  }
  if (config.maxPendingPerAddress > config.maxPendingConnections) {
    throw new ConfigError(`maxPendingPerAddress (${config.maxPendingPerAddress}) must not exceed maxPendingConnections (${config.maxPendingConnections})`)
  }
  if (!cron.validate(config.retentionCron)) throw new ConfigError(`retentionCron "${config.retentionCron}" is not a valid cron expression`)
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    throw new ConfigError(`TLS needs both the certificate and its key: give --tls-cert and --tls-key ("tlsCert" and "tlsKey" in the config file); only ${config.tlsCert === undefined ? 'the key' : 'the certificate'} was given`)
  }
  if (config.tlsCa !== undefined && config.tlsCert === undefined) throw new ConfigError('--tls-ca (tlsCa) is a chain sent after --tls-cert: give --tls-cert and --tls-key as well')
  checkExternalBroker(config)
  checkDatabase(config)
  // Decided here, before anything is opened or bound: a refused start leaves no trace.
  const plan = planListeners({ ...config, tls: config.tlsCert !== undefined })
  if (!plan.ok) throw new ConfigError(plan.message)
  return Object.freeze({
    ...config,
    dataDir: resolve(config.dataDir),
    ...(config.tlsCert !== undefined ? { tlsCert: resolve(config.tlsCert) } : {}),
    ...(config.tlsKey !== undefined ? { tlsKey: resolve(config.tlsKey) } : {}),
    ...(config.tlsCa !== undefined ? { tlsCa: resolve(config.tlsCa) } : {}),
    ...(config.brokerPasswordFile !== undefined ? { brokerPasswordFile: resolve(config.brokerPasswordFile) } : {}),
    ...(config.brokerCa !== undefined ? { brokerCa: resolve(config.brokerCa) } : {}),
    ...(config.databasePasswordFile !== undefined ? { databasePasswordFile: resolve(config.databasePasswordFile) } : {}),
  })
}

/** The database's options make sense together (docs/scale-out.md). */
function checkDatabase(config: HubConfig): void {
  const { database } = config
  if (database === undefined) {
    if (config.databasePasswordFile !== undefined) throw new ConfigError('databasePasswordFile is for a PostgreSQL database: give --database postgres://USER@HOST/DB ("database" in the config file) as well, or leave it out')
    return
  }
  checkDatabaseUrl(database, { option: 'database', passwordFile: 'databasePasswordFile', hint: ' (PostgreSQL is the shared store; without --database the hub keeps its SQLite file in its data dir)' })
}

/**
 * A PostgreSQL URL the hub (or `rollcall migrate`) can use: libpq's form, as
 * node-postgres reads it (postgres://USER@/DB?host=/run/postgresql is one too,
 * which the WHATWG parser refuses), and no password in it: a URL shows in ps,
 * in shell history and in config checks. The messages name `option`.
 */
export function checkDatabaseUrl(url: string, names: { readonly option: string; readonly passwordFile: string; readonly hint?: string }): void {
  if (!/^postgres(ql)?:\/\/\S*$/.test(url)) {
    throw new ConfigError(`${names.option} "${url}" must be a URL starting with postgres://, e.g. postgres://USER@HOST:5432/DB${names.hint ?? ''}`)
  }
  let password: string | null | undefined
  try {
    password = parseConnectionString(url).password
  } catch (err) {
    throw new ConfigError(`${names.option} "${url}" is not a URL PostgreSQL's client can read (${(err as Error).message}): give postgres://USER@HOST:5432/DB`)
  }
  if ((password ?? '') !== '') throw new ConfigError(`put the database password in ${names.passwordFile} (or PGPASSWORD, or ~/.pgpass), not in the ${names.option} URL: a URL shows in ps, in shell history and in config checks`)
}

/** The external broker's options make sense together (docs/scale-out.md). */
function checkExternalBroker(config: HubConfig): void {
  const { broker, handoverBroker } = config
  if (handoverBroker !== undefined) {
    if (broker !== undefined) throw new ConfigError('handoverBroker is for a hub with its own broker, handing its devices\' accounts over to the Mosquitto it moves to; a hub on --broker has its accounts there already')
    checkBrokerUrl('handoverBroker', handoverBroker, config.brokerCa)
    return
  }
  if (broker === undefined) {
    const stray = (['brokerUsername', 'brokerPasswordFile', 'brokerCa', 'brokerClientId'] as const).filter((k) => config[k] !== undefined)
    if (stray.length > 0) throw new ConfigError(`${stray.join(', ')} ${stray.length === 1 ? 'is' : 'are'} for an external broker: give --broker mqtt://host:port ("broker" in the config file) as well, or leave ${stray.length === 1 ? 'it' : 'them'} out`)
    return
  }
  checkBrokerUrl('broker', broker, config.brokerCa)
}

function checkBrokerUrl(option: string, broker: string, brokerCa: string | undefined): void {
  let url: URL
  try {
    url = new URL(broker)
  } catch {
    throw new ConfigError(`${option} "${broker}" is not a URL: give mqtt://host:port or mqtts://host:port`)
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') throw new ConfigError(`${option} "${broker}" must start with mqtt:// or mqtts:// (the hub speaks MQTT 5 to it)`)
  if (url.password !== '' || url.username !== '') throw new ConfigError(`put the broker account in brokerUsername and brokerPasswordFile, not in the ${option} URL (a URL is logged and shown in /api/stats)`)
  if (brokerCa !== undefined && url.protocol !== 'mqtts:') throw new ConfigError('brokerCa is for a broker reached over TLS: use an mqtts:// URL')
}

/** The hub's broker password, from its file (one line; a trailing newline is not part of it). */
export function readBrokerPassword(file: string | undefined): string | undefined {
  return readPasswordFile('brokerPasswordFile', 'broker', file)
}

/** The database account's password, from its file (as readBrokerPassword). */
export function readDatabasePassword(file: string | undefined): string | undefined {
  return readPasswordFile('databasePasswordFile', 'database', file)
}

function readPasswordFile(option: string, whose: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read ${option} ${file}: ${(err as Error).message}`)
  }
  const password = text.replace(/\r?\n$/, '')
  if (password === '') throw new ConfigError(`${option} ${file} is empty: write the hub's ${whose} password in it`)
  return password
}
