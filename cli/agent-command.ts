import { loadAgentConfig } from '../agent/config.js'
import { createAgent } from '../agent/agent.js'
import { createLogger, logFormat } from '../common/logger.js'
import { onShutdownSignal } from './signals.js'

export async function runAgent(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadAgentConfig({ flags, env: process.env })
  const logger = createLogger({ level: config.logLevel, format: logFormat(flags.logFormat) })
  const agent = createAgent(config, { logger })
  await agent.start()
  onShutdownSignal(async () => {
    await agent.stop()
    logger.flush()
  })
}
