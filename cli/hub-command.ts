import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createLogger, logFormat } from '../common/logger.js'
import { loadHubConfig, type HubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { intFlag, numberFlag } from './parse.js'
import { onShutdownSignal } from './signals.js'

export async function runHub(opts: Record<string, string | boolean | undefined>): Promise<void> {
  const str = (k: string) => (typeof opts[k] === 'string' ? opts[k] : undefined)
  const configPath = str('config')
  let file: unknown
  if (configPath !== undefined) {
    try {
      file = JSON.parse(readFileSync(configPath, 'utf8'))
    } catch (err) {
      throw new Error(`cannot read the hub config file ${configPath}: ${(err as Error).message}`)
    }
  }
  const config = loadHubConfig({
    dataDir: str('data'),
    host: str('host'),
    mqttPort: intFlag('mqtt-port', str('mqttPort'), 0, 65535),
    httpPort: intFlag('http-port', str('httpPort'), 0, 65535),
    allowAnonymous: opts.allowAnonymous === true ? true : undefined,
    retentionDays: numberFlag('retention-days', str('retentionDays'), 0),
    maxPayloadBytes: intFlag('max-payload', str('maxPayload'), 65536, 16 * 1024 * 1024),
    logLevel: str('logLevel') as HubConfig['logLevel'] | undefined,
  }, process.env, file)
  const logger = createLogger({ level: config.logLevel, format: logFormat(str('logFormat')) })
  const hub = createHub(config, { logger })
  const running = await hub.start()

  const lines = [
    `rollcall hub ${config.host}  mqtt://${config.host}:${running.mqttPort}  http://${config.host}:${running.httpPort}`,
    `  data: ${config.dataDir}`,
    `  dashboard: http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${running.httpPort}/ui/   API reference: /api/docs   metrics: /metrics`,
  ]
  if (running.adminTokenCreated) {
    lines.push(`  admin token (shown once; also in ${running.adminTokenPath}, mode 0600):`, `    ${running.adminToken}`)
  } else {
    lines.push(`  admin token: in ${running.adminTokenPath}`)
  }
  process.stderr.write(`${lines.join('\n')}\n`)
  const readyFile = str('readyFile')
  if (readyFile) {
    // Written beside and renamed into place, so a script polling for it never reads it half-written.
    writeFileSync(`${readyFile}.tmp`, JSON.stringify({ mqttPort: running.mqttPort, httpPort: running.httpPort, pid: process.pid }))
    renameSync(`${readyFile}.tmp`, readyFile)
  }

  onShutdownSignal(async () => {
    await hub.stop()
    logger.flush()
  })
}
