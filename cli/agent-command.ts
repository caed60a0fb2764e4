import { loadAgentSetup, type AgentFlags, type AgentSetup } from '../agent/config-sources.js'
import { createAgent } from '../agent/agent.js'
import { createLogger, logFormat, type Logger } from '../common/logger.js'
import { checkAgentConfig } from './config-check.js'
import { systemdNotifier } from './sd-notify.js'
import { onReloadSignal, onShutdownSignal } from './signals.js'

export async function runAgent(flags: AgentFlags & { checkConfig?: boolean; json?: boolean; logFormat?: string }): Promise<void> {
  if (flags.checkConfig === true) {
    await checkAgentConfig(flags, process.env, flags.json === true)
    return
  }
  const setup = loadAgentSetup({ flags, env: process.env })
  const config = setup.config
  const logger = createLogger({ level: config.logLevel, format: logFormat(flags.logFormat) })
  // A component's logger is a pino child without a level of its own, so it follows the root's.
  const setLogLevel = (level: string) => { logger.level = level }
  const log = logger.child({ component: 'config' })
  for (const w of setup.warnings) log.warn(w)
  log.info({ configFile: setup.configFile, token: setup.tokenSource }, 'config loaded')
  const agent = createAgent(config, { logger })
  const notify = systemdNotifier({ onError: (message) => logger.warn({ message }, 'could not notify systemd') })
  await agent.start()

  // SIGHUP (`systemctl reload`): read the config file again, as a start would, and apply what can be applied live.
  onReloadSignal(() => {
    reloadAgent(flags, log, setLogLevel, agent).catch((err: unknown) => {
      log.error({ err }, 'config reload failed; the agent keeps running with its config')
    })
  })
  // A benchmark's window into the process (heap, handles): off unless set, and then loaded; see agent/stats-file.ts.
  const statsPath = process.env.ROLLCALL_STATS_FILE
  const statsFile = statsPath ? (await import('../agent/stats-file.js')).startStatsFile(statsPath, () => agent.stats()) : undefined
  onShutdownSignal(async () => {
    // The notice goes out while the agent stops, not before: a slow systemd-notify must not delay the stop.
    await Promise.all([notify.stopping(), agent.stop()])
    statsFile?.stop()
    logger.flush()
  })
  // Ready once the ledger is open and the sensors run: the agent works offline, so the hub need not be reachable.
  await notify.ready(`device ${config.id}, hub ${config.hub}`)
}

async function reloadAgent(flags: AgentFlags, log: Logger, setLogLevel: (level: string) => void, agent: ReturnType<typeof createAgent>): Promise<void> {
  let setup: AgentSetup
  try {
    setup = loadAgentSetup({ flags, env: process.env })
  } catch (err) {
    const issues = (err as { details?: { issues?: unknown } }).details?.issues
    log.error({ configFile: flags.config, problems: Array.isArray(issues) ? issues : [(err as Error).message] },
      'new config refused; the agent keeps running with the one it had (fix the problems and reload again)')
    return
  }
  for (const w of setup.warnings) log.warn(w)
  const before = agent.config.logLevel
  const plan = await agent.reconfigure(setup.config)
  if (plan.effective.logLevel !== before) setLogLevel(plan.effective.logLevel)
  for (const key of plan.restart) {
    log.warn({ key }, `config key ${key} changed; it takes effect after a restart (systemctl restart rollcall-agent), the running agent keeps its old value`)
  }
  log.info({ configFile: setup.configFile, applied: plan.live, needRestart: plan.restart },
    plan.live.length > 0 ? `config reloaded: applied ${plan.live.join(', ')}` : 'config reloaded: nothing to apply live')
}
