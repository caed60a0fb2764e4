import { loadAgentConfig } from '../agent/config.js'
import { createAgent } from '../agent/agent.js'
import { startStatsFile } from '../agent/stats-file.js'
import { createLogger, logFormat } from '../common/logger.js'
import { onShutdownSignal } from './signals.js'

export async function runAgent(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadAgentConfig({ flags, env: process.env })
  const logger = createLogger({ level: config.logLevel, format: logFormat(flags.logFormat) })
  const agent = createAgent(config, { logger })
  await agent.start()
  // A benchmark's window into the process (heap, handles): off unless set, see agent/stats-file.ts.
  const statsPath = process.env.ROLLCALL_STATS_FILE
  const statsFile = statsPath ? startStatsFile(statsPath, () => agent.stats()) : undefined
  onShutdownSignal(async () => {
    await agent.stop()
    statsFile?.stop()
    logger.flush()
  })
}
