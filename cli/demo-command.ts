import { join } from 'node:path'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { createLogger, logFormat } from '../common/logger.js'
import { deviceSensors } from '../devices-sim/models.js'
import { NetworkSimulator } from '../devices-sim/network.js'
import { CONNECTIVITY_PROFILES, fleetPlans, linkChanges, type ConnectivityPlan } from '../devices-sim/profiles.js'
import { streamFor } from '../devices-sim/random.js'
import { loadHubConfig, type HubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { cliCommand, shellWord } from './invocation.js'
import { localTime } from './output.js'
import { intFlag } from './parse.js'
import { onShutdownSignal } from './signals.js'

/**
 * `npm start` (`rollcall demo`, issue #5): a hub with its embedded broker in
 * this process, and a fleet of simulated devices on the `mixed` profile: real
 * agents with the simulator's seeded sensor models, each reaching the hub
 * through its own link in the NetworkSimulator, so flaky devices really drop
 * and intermittent ones really come and go. A hub schedule sends a
 * `sensors.sample` job to the fleet every minute, so there are jobs to look
 * at (and, for a device that is away, jobs waiting for it).
 *
 *   hub -> devices provisioned -> links -> agents (steady first) -> plan player
 *   -> schedule -> banner; Ctrl-C: everything stopped in reverse order.
 *
 * The connectivity plan is made for PLAN_PERIOD_MS and replayed after it, for
 * as long as the demo runs.
 */

const SEED = 42
const GROUP = 'demo'
/** A multiple of the intermittent profile's 30 s window period, so the windows run on across replays. */
const PLAN_PERIOD_MS = 10 * 60_000
/** A simulated day in the sensor models, short enough to see the daily cycle while watching. */
const DEMO_DAY_MS = 15 * 60_000
const SCHEDULE_NAME = 'demo-sample'
const OBSERVER_NAME = 'demo-viewer'
/**
 * What the demo's devices let the built-in `shell` task run (the agent's
 * shellAllow, a plain entry: uptime with any arguments), so the README's
 * example works here; harmless with any arguments, and present on Linux and
 * macOS alike.
 */
const DEMO_SHELL_ALLOW = ['/usr/bin/uptime']

export async function runDemo(opts: Record<string, string>): Promise<void> {
  const count = intFlag('devices', opts.devices, 1, 1000)!
  const config = loadHubConfig({
    dataDir: opts.data,
    mqttPort: intFlag('mqtt-port', opts.mqttPort, 0, 65535),
    httpPort: intFlag('http-port', opts.httpPort, 0, 65535),
    logLevel: opts.logLevel as HubConfig['logLevel'],
  })
  // Readable lines on a terminal, so a warning does not push the banner's token off screen as a wall of JSON.
  const logger = createLogger({ level: config.logLevel, format: logFormat(opts.logFormat) })

  // Torn down last-in first-out; a Ctrl-C during start-up stops what has started.
  const releasers: Array<() => Promise<void> | void> = []
  let stopped = false
  const stop = async () => {
    stopped = true
    while (releasers.length > 0) {
      try {
        await releasers.pop()!()
      } catch (err) {
        logger.error({ err }, 'the demo could not stop a part cleanly')
      }
    }
    logger.flush()
  }
  onShutdownSignal(async () => {
    process.stderr.write('stopping the demo...\n')
    await stop()
  })

  try {
    const hub = createHub(config, { logger })
    const running = await hub.start()
    releasers.push(() => hub.stop())
    const { services } = running

    const ids = Array.from({ length: count }, (_, i) => `demo-${String(i + 1).padStart(2, '0')}`)
    const tokens = await Promise.all(ids.map(async (id) => services.registry.getDevice(id) ? services.rotateDeviceToken(id) : (await services.addDevice(id, GROUP)).token))

    const net = await NetworkSimulator.start({ targetPort: running.mqttPort, deviceIds: ids })
    releasers.push(() => net.close())
    // Every device connects at once (no stagger): the steady ones are online, and sampling, within a second.
    const plans = fleetPlans('mixed', SEED, count, PLAN_PERIOD_MS, { staggerMs: 0 })
    const player = playPlans(ids, plans, net)
    releasers.push(() => player.stop())

    const agents: Agent[] = []
    releasers.push(async () => { await Promise.allSettled(agents.map((a) => a.stop())) })
    const order = ids.map((_, i) => i).sort((a, b) => CONNECTIVITY_PROFILES.indexOf(plans[a]!.profile) - CONNECTIVITY_PROFILES.indexOf(plans[b]!.profile) || a - b)
    for (const i of order) {
      if (stopped) return
      const id = ids[i]!
      const agent = createAgent(resolveAgentConfig({
        hub: net.urlFor(id), id, token: tokens[i]!, dataDir: join(config.dataDir, 'agents', id),
        sampleIntervalMs: 1000,
        // The dashboard shows samples as they are taken; the demo's ledgers live in a temp dir, not on an SD card.
        outboxCommitMs: 0,
        // The first device also reports this machine's own cpu, memory and uptime.
        builtinSensors: i === 0,
        keepaliveSec: 10, reconnectBaseMs: 250, reconnectMaxMs: 4000, logLevel: config.logLevel,
        shellAllow: DEMO_SHELL_ALLOW,
      }, `demo device ${id}`), {
        logger: logger.child({ deviceId: id }),
        sensors: deviceSensors(SEED, i, { tickMs: 1000, dayMs: DEMO_DAY_MS }),
        random: streamFor(SEED, 'backoff', i),
      })
      agents.push(agent)
      await agent.start()
    }

    const { schedules } = services
    if ((await schedules.list()).some((s) => s.name === SCHEDULE_NAME)) await schedules.remove(SCHEDULE_NAME)
    const schedule = await schedules.add({
      name: SCHEDULE_NAME, cron: '* * * * *',
      job: { name: 'sensors.sample', target: `group:${GROUP}`, timeoutMs: 30_000, expiresInMs: 5 * 60_000 },
    })

    if (services.registry.listObservers().some((o) => o.name === OBSERVER_NAME)) await services.removeObserver(OBSERVER_NAME)
    const viewer = await services.addObserver(OBSERVER_NAME)
    if (stopped) return

    const api = `http://127.0.0.1:${running.httpPort}`
    const flags = `--api ${api} --data ${shellWord(config.dataDir)}`
    const mix = CONNECTIVITY_PROFILES.map((p) => `${plans.filter((x) => x.profile === p).length} ${p}`).join(', ')
    const next = schedule.nextRunAt === null ? '' : ` (next at ${localTime(schedule.nextRunAt)})`
    const rollcall = cliCommand()
    process.stdout.write([
      '',
      `rollcall demo: hub + ${count} simulated devices (Ctrl-C stops everything)`,
      '',
      `  dashboard     ${api}/ui/   (paste the token below to log in)`,
      `  MQTT broker   mqtt://127.0.0.1:${running.mqttPort}`,
      `  HTTP API      ${api}   (health: ${api}/healthz)`,
      `  admin token   ${running.adminToken}`,
      `  data dir      ${config.dataDir}`,
      '',
      `Devices ${ids[0]}..${ids[ids.length - 1]} (group "${GROUP}"): ${mix}. Flaky ones drop now and then,`,
      'intermittent ones are online 10 s in every 30 s; their samples wait on the device and arrive late, never lost.',
      `Schedule "${SCHEDULE_NAME}" sends the job sensors.sample to group:${GROUP} every minute${next}.`,
      '',
      'Watch telemetry arrive (read-only observer credentials):',
      `  mosquitto_sub -h 127.0.0.1 -p ${running.mqttPort} -i viewer:1 -u 'observer:${OBSERVER_NAME}' -P '${viewer.token}' -t 'devices/+/telemetry' -v`,
      '',
      'Ask the hub (in another terminal, from this folder):',
      `  ${rollcall} device list ${flags}`,
      `  ${rollcall} telemetry demo-01 --since 5m --bucket 1m ${flags}`,
      `  ${rollcall} job list ${flags}`,
      `  ${rollcall} job create echo --target group:${GROUP} --payload '{"hello":"demo"}' ${flags}`,
      `  ${rollcall} cmd demo-01 sensors.sample ${flags}`,
      `  curl -s -H 'Authorization: Bearer ${running.adminToken}' '${api}/api/devices/demo-01/telemetry?since=1m&bucket=10s' | head -c 600; echo`,
      '',
    ].join('\n'))
  } catch (err) {
    await stop()
    throw err
  }
}

/**
 * Carries out the devices' connectivity plans on the network, replaying them
 * every PLAN_PERIOD_MS. Connects are left out (every agent starts at once);
 * changes at the same instant restore before they cut, so an outage that
 * ends the period and one that opens the next do not cancel out.
 */
function playPlans(ids: readonly string[], plans: readonly ConnectivityPlan[], net: NetworkSimulator): { stop(): void } {
  const changes = plans
    .flatMap((plan, i) => linkChanges(plan).filter((c) => c.change !== 'connect').map((c) => ({ ...c, id: ids[i]! })))
    .sort((a, b) => a.atMs - b.atMs || (a.change === 'up' ? 0 : 1) - (b.change === 'up' ? 0 : 1))
  const t0 = Date.now()
  let cycle = 0
  let next = 0
  let timer: NodeJS.Timeout | undefined
  const step = () => {
    const now = Date.now() - t0
    for (;;) {
      if (next === changes.length) {
        cycle++
        next = 0
      }
      const c = changes[next]
      if (!c) return
      const atMs = cycle * PLAN_PERIOD_MS + c.atMs
      if (atMs > now) {
        timer = setTimeout(step, atMs - now)
        return
      }
      if (c.change === 'down') net.cut([c.id], 'profile')
      else net.restore([c.id], 'profile')
      next++
    }
  }
  step()
  return { stop: () => { clearTimeout(timer) } }
}
