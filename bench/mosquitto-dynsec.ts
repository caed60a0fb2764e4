import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { freePort } from '../common/free-port.js'

/**
 * A private Mosquitto 2 with its dynamic-security plugin, for the tests and
 * benchmarks of a hub on an external broker (issue #18): its own port on
 * 127.0.0.1, its files in `dir`, an admin account made by `mosquitto_ctrl
 * dynsec init` as an operator would.
 */

/** Where Debian (any architecture) and source builds put the plugin. */
function dynsecPlugin(): string | undefined {
  const candidates = ['/usr/lib/mosquitto_dynamic_security.so', '/usr/local/lib/mosquitto_dynamic_security.so']
  try {
    for (const d of readdirSync('/usr/lib')) candidates.push(join('/usr/lib', d, 'mosquitto_dynamic_security.so'))
  } catch {
    // no /usr/lib: nothing to add
  }
  return candidates.find((p) => existsSync(p))
}

export const DYNSEC_PLUGIN = dynsecPlugin()
/** Mosquitto, mosquitto_ctrl and the plugin are all here. */
export const HAVE_DYNSEC = DYNSEC_PLUGIN !== undefined
  && spawnSync('mosquitto', ['-h'], { stdio: 'ignore' }).error === undefined
  && spawnSync('mosquitto_ctrl', ['--help'], { stdio: 'ignore' }).error === undefined

export interface DynsecBroker {
  readonly url: string
  readonly port: number
  readonly adminUser: string
  /** A file holding the admin's password, as the hub's brokerPasswordFile. */
  readonly adminPasswordFile: string
  readonly adminPassword: string
  readonly child: ChildProcess
  output(): string
  stop(): Promise<void>
}

export async function startDynsecBroker(dir: string): Promise<DynsecBroker> {
  if (DYNSEC_PLUGIN === undefined) throw new Error('the Mosquitto dynamic-security plugin is not installed (apt-get install mosquitto)')
  const adminUser = 'rollcall-admin'
  const adminPassword = 'admin-password-for-tests'
  const dynsecFile = join(dir, 'dynamic-security.json')
  const init = spawnSync('mosquitto_ctrl', ['dynsec', 'init', dynsecFile, adminUser, adminPassword], { encoding: 'utf8' })
  if (init.status !== 0) throw new Error(`mosquitto_ctrl dynsec init failed: ${init.stderr}${init.stdout}`)
  const adminPasswordFile = join(dir, 'hub-broker-password')
  writeFileSync(adminPasswordFile, `${adminPassword}\n`, { mode: 0o600 })
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(conf, [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous false',
    `plugin ${DYNSEC_PLUGIN}`,
    `plugin_opt_config_file ${dynsecFile}`,
    'persistence false',
    // As docs/scale-out.md advises: without it, Nagle's algorithm holds each reply a delayed ACK long (40 ms).
    'set_tcp_nodelay true',
    // Run as whoever runs the tests: as root Mosquitto would switch to "mosquitto", who cannot read a private temp dir.
    `user ${userInfo().username}`,
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    '',
  ].join('\n'))
  const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-20_000) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const url = `mqtt://127.0.0.1:${port}`
  // Up once the admin can connect.
  const deadline = Date.now() + 20_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited (${child.exitCode}): ${out}`)
    try {
      const c = await mqtt.connectAsync(url, { username: adminUser, password: adminPassword, reconnectPeriod: 0, connectTimeout: 2000 })
      await c.endAsync()
      break
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`mosquitto did not accept its admin within 20 s: ${(err as Error).message}\n${out}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  return {
    url, port, adminUser, adminPassword, adminPasswordFile, child,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}
