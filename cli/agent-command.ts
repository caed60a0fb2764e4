import { loadAgentConfig } from '../agent/config.js'
import { createAgent } from '../agent/agent.js'
import { createLogger, logFormat } from '../common/logger.js'
import { systemdNotifier } from './sd-notify.js'
import { onShutdownSignal } from './signals.js'

export async function runAgent(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadAgentConfig({ flags, env: process.env })
  const logger = createLogger({ level: config.logLevel, format: logFormat(flags.logFormat) })
  const agent = createAgent(config, { logger })
  const notify = systemdNotifier({ onError: (message) => logger.warn({ message }, 'could not notify systemd') })
  await agent.start()
  onShutdownSignal(async () => {
    // The notice goes out while the agent stops, not before: a slow systemd-notify must not delay the stop.
    await Promise.all([notify.stopping(), agent.stop()])
    logger.flush()
  })
  // Ready once the ledger is open and the sensors run: the agent works offline, so the hub need not be reachable.
  await notify.ready(`device ${config.id}, hub ${config.hub}`)
}
