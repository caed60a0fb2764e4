import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { InvalidArgumentError } from './commander.js'
import type { AgentFlags, AgentSetup } from '../agent/config-sources.js'
import { formatDurationMs } from '../common/duration.js'
import type { HubConfig } from '../hub/config.js'
import { out, printJson } from './output.js'

/**
 * `rollcall agent --check-config` and `rollcall hub --check-config` (issue
 * #13): load and check the configuration through the same code a start runs
 * (the same loader, the handlers module imported, the hub's TLS files read),
 * print what the process would do, and exit: 0 when it would start, 2 (a
 * usage error, cli/failure.ts) with every problem when it would not.
 * Nothing is opened, bound or written.
 */

/** A refused config: the problems, each naming its key and the fix. */
function refuse(what: string, problems: readonly string[], json: boolean): never {
  if (json) printJson({ ok: false, problems })
  throw new InvalidArgumentError(`${what} is not valid; fix these and check again:\n  - ${problems.join('\n  - ')}`)
}

function problemsOf(err: unknown): string[] {
  const issues = (err as { details?: { issues?: unknown }; problems?: unknown }).details?.issues ?? (err as { problems?: unknown }).problems
  return Array.isArray(issues) && issues.length > 0 ? issues.map(String) : [(err as Error).message]
}

function fileState(path: string): string {
  if (!existsSync(path)) return 'will be created'
  const size = statSync(path).size
  return `exists, ${size >= 1024 * 1024 ? `${(size / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(size / 1024)} KiB`}`
}

const every = (ms: number) => (ms === 0 ? 'off (sampled only on request)' : `every ${formatDurationMs(ms)}`)

export async function checkAgentConfig(flags: AgentFlags, env: NodeJS.ProcessEnv, json: boolean): Promise<void> {
  const { loadAgentSetup } = await import('../agent/config-sources.js')
  let setup: AgentSetup
  try {
    setup = loadAgentSetup({ flags, env })
  } catch (err) {
    refuse(`the agent config${flags.config ? ` (${flags.config})` : ''}`, problemsOf(err), json)
  }
  const c = setup.config
  // What start() does first: import the handlers module and check its exports.
  let handlers: { tasks: string[]; commands: string[] } | undefined
  if (c.handlersModule !== undefined) {
    const { loadHandlersModule } = await import('../agent/job-handlers.js')
    try {
      const mod = await loadHandlersModule(c.handlersModule)
      handlers = { tasks: Object.keys(mod.handlers), commands: Object.keys(mod.commands) }
    } catch (err) {
      refuse(`the agent config${flags.config ? ` (${flags.config})` : ''}`, [(err as Error).message], json)
    }
  }
  const { builtinSensors } = await import('../agent/sensors.js')
  const { compileShellAllow, shellAllowWarnings } = await import('../agent/shell-allow.js')
  const { redactedConfig } = await import('../agent/command-handlers.js')
  const builtin = c.builtinSensors ? builtinSensors().map((s) => s.name) : []
  const tls = new URL(c.hub).protocol === 'mqtts:'
  const ledger = join(c.dataDir, 'ledger.db')
  const shellRules = compileShellAllow(c.shellAllow).rules
  const warnings = [...setup.warnings, ...shellAllowWarnings(shellRules)]
  if (json) {
    printJson({
      ok: true,
      configFile: setup.configFile ?? null,
      tokenSource: setup.tokenSource,
      hub: { url: c.hub, tls, caFile: c.caFile ?? null, certFile: c.certFile ?? null },
      dataDir: c.dataDir,
      ledger: { path: ledger, exists: existsSync(ledger) },
      sensors: { intervalMs: c.sampleIntervalMs, builtin, configured: c.sensors.map((s) => s.name) },
      handlers: handlers ?? null,
      warnings,
      config: redactedConfig(c),
    })
    return
  }
  const lines = [
    `rollcall agent: the config is valid${setup.configFile ? ` (${setup.configFile})` : ''}; a start would run with:`,
    `  device:     ${c.id}`,
    `  hub:        ${c.hub}, ${tls ? `over TLS, the hub's certificate checked against ${c.caFile ?? 'the system\'s CAs'}${c.certFile ? `, client certificate ${c.certFile}` : ''}` : 'in clear text (no TLS): the token crosses the network readable'}`,
    `  token:      [redacted], from ${setup.tokenSource}`,
    `  data:       ${c.dataDir} (ledger ${ledger}: ${fileState(ledger)})`,
    `  sensors:    ${every(c.sampleIntervalMs)}: ${[...builtin.map((n) => `${n} (built in)`), ...c.sensors.map((s) => `${s.name} (${s.model} ${s.min}..${s.max}${s.unit ? ` ${s.unit}` : ''})`)].join(', ') || 'none'}`,
    `  outbox:     at most ${c.outboxMaxRows} rows, ${Math.round(c.outboxMaxBytes / 1024 / 1024)} MiB (oldest telemetry dropped beyond), synchronous ${c.synchronous}`,
    `  schedules:  ${c.schedules.map((s) => `${s.name} "${s.cron}"${s.timezone ? ` ${s.timezone}` : ''} -> ${s.task}`).join('; ') || 'none'}`,
    `  shell:      ${shellRules.map((r) => (r.args === undefined ? `${r.label} (any arguments)` : r.label)).join('; ') || 'nothing allowed (shellAllow is empty)'}`,
    `  handlers:   ${handlers ? `${c.handlersModule}: tasks ${handlers.tasks.join(', ') || '-'}; commands ${handlers.commands.join(', ') || '-'}` : 'built-in only'}`,
    `  jobs:       ${c.jobConcurrency} at once, queue of ${c.jobQueueMax}; commands: ${c.commandConcurrency} at once`,
    `  log level:  ${c.logLevel}`,
    ...warnings.map((w) => `warning: ${w}`),
  ]
  out(lines.join('\n'))
}

export interface HubCheck {
  readonly config: HubConfig
  readonly configFile: string | undefined
}

export async function checkHubConfig(load: () => HubCheck, json: boolean): Promise<void> {
  let setup: HubCheck
  const problems: string[] = []
  try {
    setup = load()
  } catch (err) {
    refuse('the hub config', problemsOf(err), json)
  }
  const c = setup.config
  // What start() reads before it binds: the certificate and its key.
  let cert: { subjectAltName: string | undefined; validTo: string; warnings: string[] } | undefined
  if (c.tlsCert !== undefined && c.tlsKey !== undefined) {
    const { loadTlsFiles, tlsWarnings } = await import('../hub/tls-files.js')
    const paths = { cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa }
    try {
      const loaded = loadTlsFiles(paths)
      cert = { subjectAltName: loaded.subjectAltName, validTo: loaded.validTo, warnings: tlsWarnings(loaded, paths, Date.now()) }
    } catch (err) {
      problems.push((err as Error).message)
    }
  }
  const { readBrokerPassword, readDatabasePassword } = await import('../hub/config.js')
  for (const read of [() => readBrokerPassword(c.brokerPasswordFile), () => readDatabasePassword(c.databasePasswordFile)]) {
    try {
      read()
    } catch (err) {
      problems.push((err as Error).message)
    }
  }
  if (problems.length > 0) refuse(`the hub config${setup.configFile ? ` (${setup.configFile})` : ''}`, problems, json)
  const { planListeners } = await import('../hub/listeners.js')
  const plan = planListeners({ ...c, tls: cert !== undefined })
  const listeners = plan.ok ? plan : undefined
  const db = join(c.dataDir, 'hub.db')
  if (json) {
    printJson({ ok: true, configFile: setup.configFile ?? null, dataDir: c.dataDir, database: c.database !== undefined ? { url: c.database } : { path: db, exists: existsSync(db) }, listeners: listeners ?? null, tls: cert ?? null, warnings: cert?.warnings ?? [], config: c })
    return
  }
  const tls = cert !== undefined
  const mqttPlain = listeners?.mqttPlain ?? !tls
  const external = c.broker !== undefined
  const lines = [
    `rollcall hub: the config is valid${setup.configFile ? ` (${setup.configFile})` : ''}; a start would run with:`,
    c.database !== undefined
      ? `  data:       ${c.dataDir} (admin token in ${join(c.dataDir, 'admin-token')}); state in PostgreSQL ${c.database}${c.databasePasswordFile ? ` with the password in ${c.databasePasswordFile}` : ''} (not reached by this check)`
      : `  data:       ${c.dataDir} (database ${db}: ${fileState(db)}; admin token in ${join(c.dataDir, 'admin-token')})`,
    `  listeners:  ${[
      ...(tls && !external ? [`mqtts://${c.host}:${c.mqttTlsPort}`] : []),
      ...(mqttPlain && !external ? [`mqtt://${c.host}:${c.mqttPort}`] : []),
      `${tls ? 'https' : 'http'}://${c.host}:${c.httpPort}`,
    ].join('  ')}`,
    ...(external ? [`  broker:     ${c.broker} (external: no MQTT listener of its own), as ${c.brokerUsername ?? 'no username'}${c.brokerPasswordFile ? ` with the password in ${c.brokerPasswordFile}` : ''}; accounts ${c.brokerDynsec ? 'kept in Mosquitto\'s dynamic security' : 'kept by hand'}`] : []),
    `  TLS:        ${cert ? `${c.tlsCert} (${cert.subjectAltName ?? 'no subjectAltName'}, valid until ${cert.validTo}), key ${c.tlsKey}${c.tlsCa ? `, chain ${c.tlsCa}` : ''}` : 'off'}`,
    `  retention:  raw samples ${c.retentionDays} days, finished jobs ${c.jobRetentionDays} days, commands ${c.commandRetentionDays} days (pruned at "${c.retentionCron}")`,
    `  limits:     ${c.maxConnections} connections, payloads up to ${c.maxPayloadBytes} bytes`,
    `  log level:  ${c.logLevel}`,
    ...(cert?.warnings ?? []).map((w) => `warning: ${w}`),
  ]
  out(lines.join('\n'))
}
