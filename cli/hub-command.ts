import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { isJournalStream } from '../common/journal-log.js'
import { createLogger, logFormat } from '../common/logger.js'
import { loadHubConfig, type HubConfig } from '../hub/config.js'
import { createHub, type RunningHub } from '../hub/hub.js'
import { intFlag, numberFlag } from './parse.js'
import { systemdNotifier } from './sd-notify.js'
import { onReloadSignal, onShutdownSignal } from './signals.js'

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
    mqttTlsPort: intFlag('mqtt-tls-port', str('mqttTlsPort'), 0, 65535),
    tlsCert: str('tlsCert'),
    tlsKey: str('tlsKey'),
    tlsCa: str('tlsCa'),
    allowPlaintext: opts.allowPlaintext === true ? true : undefined,
    allowAnonymous: opts.allowAnonymous === true ? true : undefined,
    retentionDays: numberFlag('retention-days', str('retentionDays'), 0),
    maxPayloadBytes: intFlag('max-payload', str('maxPayload'), 65536, 16 * 1024 * 1024),
    logLevel: str('logLevel') as HubConfig['logLevel'] | undefined,
  }, process.env, file)
  const logger = createLogger({ level: config.logLevel, format: logFormat(str('logFormat')) })
  const hub = createHub(config, { logger })
  const running = await hub.start()

  // Under systemd, stderr is the journal, which keeps what it gets on disk for
  // every member of the adm group to read: the new admin token stays in its
  // file there, and each line gets the journal's priority prefix.
  const toJournal = isJournalStream(2, process.env.JOURNAL_STREAM)
  const banner = startBanner(config, running, { showToken: !toJournal })
  process.stderr.write(`${banner.map((l) => (toJournal ? `<6>${l}` : l)).join('\n')}\n`)
  const readyFile = str('readyFile')
  if (readyFile) {
    // Written beside and renamed into place, so a script polling for it never reads it half-written.
    const ready = { mqttPort: running.mqttPort, mqttTlsPort: running.mqttTlsPort ?? null, httpPort: running.httpPort, https: running.tls !== undefined, pid: process.pid }
    writeFileSync(`${readyFile}.tmp`, JSON.stringify(ready))
    renameSync(`${readyFile}.tmp`, readyFile)
  }

  // SIGHUP: read the certificate and key again (after a renewal); the hub also watches the files.
  if (running.tls !== undefined) onReloadSignal(() => { hub.reloadTls('SIGHUP') })

  const notify = systemdNotifier({ onError: (message) => logger.warn({ message }, 'could not notify systemd') })
  onShutdownSignal(async () => {
    await Promise.all([notify.stopping(), hub.stop()])
    logger.flush()
  })
  // Under systemd (Type=notify): ready once every listener is open.
  await notify.ready(banner[0] ?? 'listening')
}

/** What the hub prints once it listens: its URLs, where the data and the admin token are. */
export function startBanner(config: HubConfig, running: RunningHub, { showToken = true }: { showToken?: boolean } = {}): string[] {
  const local = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
  const http = running.tls ? 'https' : 'http'
  const urls = [
    ...(running.mqttTlsPort !== undefined ? [`mqtts://${config.host}:${running.mqttTlsPort}`] : []),
    ...(running.mqttPort !== 0 ? [`mqtt://${config.host}:${running.mqttPort}`] : []),
    `${http}://${config.host}:${running.httpPort}`,
  ]
  const lines = [
    `rollcall hub ${config.host}  ${urls.join('  ')}`,
    `  data: ${config.dataDir}`,
    `  dashboard: ${http}://${local}:${running.httpPort}/ui/   API reference: /api/docs   metrics: /metrics`,
  ]
  if (running.tls) {
    lines.push(`  TLS certificate: ${running.tls.subjectAltName ?? '(no subjectAltName)'}, valid until ${running.tls.validTo}`,
      `    ${config.tlsCert}; replaced files are served to new connections without a restart (or send SIGHUP to pid ${process.pid})`)
    if (running.mqttPort !== 0) lines.push('  plaintext MQTT is on beside TLS (--allow-plaintext): device tokens on it cross the network in clear text')
  } else if (config.allowPlaintext) {
    lines.push('  no TLS (--allow-plaintext): tokens cross the network in clear text; see `rollcall tls init` and --tls-cert/--tls-key')
  }
  if (running.adminTokenCreated && !showToken) {
    lines.push(`  admin token: created in ${running.adminTokenPath} (mode 0600; not printed, as this output is kept in the journal)`)
  } else if (running.adminTokenCreated) {
    lines.push(`  admin token (shown once; also in ${running.adminTokenPath}, mode 0600):`, `    ${running.adminToken}`)
  } else {
    lines.push(`  admin token: in ${running.adminTokenPath}`)
  }
  return lines
}
