import { join } from 'node:path'
import { createLogger } from '../common/logger.js'
import { loadHubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { intFlag } from './parse.js'
import { onShutdownSignal } from './signals.js'

/**
 * `npm start`: a hub with a few in-process agents on simulated sensors, so a
 * new user sees telemetry flowing within seconds. The simulator (devices-sim)
 * grows this into a full fleet with connectivity profiles and faults.
 */
export async function runDemo(opts: Record<string, string>): Promise<void> {
  const devices = intFlag('devices', opts.devices, 1, 1000)!
  const config = loadHubConfig({
    dataDir: opts.data,
    mqttPort: intFlag('mqtt-port', opts.mqttPort, 0, 65535),
    httpPort: intFlag('http-port', opts.httpPort, 0, 65535),
    logLevel: 'warn',
  })
  const logger = createLogger({ level: 'warn' })
  const hub = createHub(config, { logger })
  const running = await hub.start()
  const { registry } = running.services
  const agents: Agent[] = []

  onShutdownSignal(async () => {
    process.stderr.write('stopping the demo...\n')
    await Promise.allSettled(agents.map((a) => a.stop()))
    await hub.stop()
    logger.flush()
  })

  for (let i = 1; i <= devices; i++) {
    const id = `demo-${String(i).padStart(2, '0')}`
    const token = registry.getDevice(id) ? registry.rotateDeviceToken(id) : registry.addDevice(id, 'demo', Date.now()).token
    const agent = createAgent(resolveAgentConfig({
      hub: `mqtt://127.0.0.1:${running.mqttPort}`,
      id,
      token,
      dataDir: join(config.dataDir, 'agents', id),
      sampleIntervalMs: 1000,
      builtinSensors: i === 1,
      keepaliveSec: 10,
      logLevel: 'warn',
      sensors: [
        { name: 'env.temp', model: 'sine', min: 18 + i, max: 24 + i, periodMs: 120_000 },
        { name: 'env.humidity', model: 'random-walk', min: 30, max: 70 },
        { name: 'battery', model: 'sine', min: 3.3, max: 4.2, periodMs: 600_000 },
      ],
    }, `demo device ${id}`), { logger: logger.child({ deviceId: id }) })
    agents.push(agent)
    await agent.start()
  }

  const observerName = 'demo-viewer'
  if (registry.listObservers().some((o) => o.name === observerName)) registry.removeObserver(observerName)
  const viewer = registry.addObserver(observerName, Date.now())
  const api = `http://127.0.0.1:${running.httpPort}`
  process.stdout.write([
    '',
    `rollcall demo: hub + ${devices} simulated devices (Ctrl-C stops everything)`,
    '',
    `  MQTT broker   mqtt://127.0.0.1:${running.mqttPort}`,
    `  HTTP API      ${api}   (health: ${api}/healthz)`,
    `  admin token   ${running.adminToken}`,
    `  data dir      ${config.dataDir}`,
    '',
    'Watch telemetry arrive (read-only observer credentials):',
    `  mosquitto_sub -h 127.0.0.1 -p ${running.mqttPort} -u 'observer:${observerName}' -P '${viewer.token}' -t 'devices/+/telemetry' -v`,
    '',
    'Ask the hub (in another terminal, from this folder):',
    `  npx rollcall device list --api ${api} --data ${opts.data}`,
    `  npx rollcall telemetry demo-01 --since 1m --api ${api} --data ${opts.data}`,
    `  curl -s -H 'Authorization: Bearer ${running.adminToken}' '${api}/api/devices/demo-01/telemetry?since=1m&bucket=10s' | head -c 600`,
    '',
  ].join('\n'))
}
