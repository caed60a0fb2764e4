import { afterEach, describe, expect, it } from 'vitest'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { adminApi } from '../common/admin-http.js'
import { connectDevice, tempDir, waitFor } from './support/hub.js'
import { killProc, startCli, startHubProc, type HubProc, type Proc } from './support/procs.js'

/**
 * Issue #13: the config file is the whole story, and `systemctl reload`
 * (SIGHUP) applies it. A real hub process and a real agent process started
 * the way the systemd unit starts it: `agent --config FILE` and the token
 * only from $CREDENTIALS_DIRECTORY/token (LoadCredential=token:...). The
 * file is changed and SIGHUP sent: a new sensor's samples reach the hub, a
 * key that needs a restart is named in the log, and an invalid file is
 * refused with its problems while the agent keeps running on the old one.
 * The hub's config file reloads its log level the same way.
 */

type Samples = { samples: Array<{ sensor: string; ts: number }> }

const sensorsAtHub = async (hub: HubProc, id: string): Promise<Set<string>> =>
  new Set((await hub.api<Samples>('GET', `/api/devices/${id}/telemetry?since=0&limit=5000`)).body.samples.map((s) => s.sensor))

describe('SIGHUP reloads the config file', () => {
  const procs: Proc[] = []
  const cleanups: Array<() => void> = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await killProc(p)
    while (cleanups.length) cleanups.pop()!()
  })

  it('an agent started as the unit starts it applies new sensors live, names keys that need a restart, and refuses an invalid file', async () => {
    const tmp = tempDir('cfg-reload')
    cleanups.push(tmp.remove)
    const hub = await startHubProc(join(tmp.dir, 'hub'))
    procs.push(hub)
    const token = (await hub.api<{ token: string }>('POST', '/api/devices', { id: 'pi-reload' })).body.token

    // The unit's view: a credentials dir holding `token` (0400, as systemd makes it), a config file, a state dir.
    const creds = join(tmp.dir, 'credentials')
    mkdirSync(creds)
    writeFileSync(join(creds, 'token'), `${token}\n`)
    chmodSync(join(creds, 'token'), 0o400)
    const etc = join(tmp.dir, 'etc')
    mkdirSync(etc)
    const configPath = join(etc, 'agent.json')
    const base = {
      hub: `mqtt://127.0.0.1:${hub.mqttPort}`, id: 'pi-reload', dataDir: '../state', logLevel: 'info',
      builtinSensors: false, sampleIntervalMs: '200ms', outboxCommitMs: 0, reconnectBaseMs: 100, reconnectMaxMs: 500,
      sensors: [{ name: 'env.a', model: 'constant', min: 1, max: 1 }],
    }
    writeFileSync(configPath, JSON.stringify(base))
    const agent = startCli(['agent', '--config', configPath, '--log-format', 'json'], { CREDENTIALS_DIRECTORY: creds })
    procs.push(agent)
    await waitFor(async () => (await sensorsAtHub(hub, 'pi-reload')).has('env.a'), 'env.a samples at the hub', 60_000, 200)
    expect(agent.output()).toContain('systemd credential')

    // A second sensor (live) and a new keepalive (needs a restart).
    writeFileSync(configPath, JSON.stringify({ ...base, keepaliveSec: 20, sensors: [...base.sensors, { name: 'env.b', model: 'constant', min: 2, max: 2, unit: 'hPa' }] }))
    agent.child.kill('SIGHUP')
    await waitFor(async () => (await sensorsAtHub(hub, 'pi-reload')).has('env.b'), 'env.b samples at the hub after SIGHUP', 60_000, 200)
    await waitFor(() => agent.output().includes('config reloaded: applied sensors'), 'the reload logged', 30_000)
    expect(agent.output()).toMatch(/config key keepaliveSec changed; it takes effect after a restart/)
    // The new unit went out in a fresh birth.
    await waitFor(async () => (await hub.api<{ units?: Record<string, string> }>('GET', '/api/devices/pi-reload/telemetry?since=0&limit=1')).body.units?.['env.b'] === 'hPa', 'env.b unit at the hub', 30_000, 200)

    // An invalid file is refused, with every problem, and the agent keeps sampling both sensors.
    writeFileSync(configPath, JSON.stringify({ ...base, inflightBatches: 0, shellAllow: [42] }))
    agent.child.kill('SIGHUP')
    const refusal = await waitFor(() => agent.output().split('\n').find((l) => l.includes('new config refused')), 'the refusal logged', 30_000)
    const problems = (JSON.parse(refusal) as { problems: string[] }).problems
    expect(problems.map((p) => p.split(':')[0])).toEqual(['inflightBatches', 'shellAllow.0'])
    const countB = async () => (await hub.api<Samples>('GET', '/api/devices/pi-reload/telemetry?since=0&limit=5000&sensor=env.b')).body.samples.length
    const before = await countB()
    await waitFor(async () => (await countB()) > before, 'env.b still sampled after the refused reload', 30_000, 200)

    agent.child.kill('SIGTERM')
    expect(await agent.exited).toBe(0)
  }, 180_000)

  it('a hub applies a new logLevel from its config file (its components\' loggers too) and names keys that need a restart', async () => {
    const tmp = tempDir('cfg-reload-hub')
    cleanups.push(tmp.remove)
    const dataDir = join(tmp.dir, 'hub')
    const configPath = join(tmp.dir, 'hub.json')
    const ready = join(tmp.dir, 'ready.json')
    // No --log-level flag: it would win over the file.
    writeFileSync(configPath, JSON.stringify({ dataDir: 'hub', logLevel: 'warn', retentionDays: 30, mqttPort: 0, httpPort: 0 }))
    const hub = startCli(['hub', '--config', configPath, '--ready-file', ready, '--log-format', 'json'])
    procs.push(hub)
    await waitFor(() => existsSync(ready) || hub.child.exitCode !== null, 'hub ready file', 60_000)
    const info = JSON.parse(readFileSync(ready, 'utf8')) as { mqttPort: number; httpPort: number }
    const api = adminApi({ api: `http://127.0.0.1:${info.httpPort}`, token: readFileSync(join(dataDir, 'admin-token'), 'utf8').trim() })
    const token = (await api<{ token: string }>('POST', '/api/devices', { id: 'lvl-1' })).body.token
    const connectOnce = async () => {
      const c = await connectDevice(`mqtt://127.0.0.1:${info.mqttPort}`, 'lvl-1', token)
      await c.endAsync()
    }
    await connectOnce()
    // The broker logs connections at info: not at warn.
    await new Promise((r) => setTimeout(r, 500))
    expect(hub.output()).not.toContain('client connected')

    writeFileSync(configPath, JSON.stringify({ dataDir: 'hub', logLevel: 'info', retentionDays: 7, mqttPort: 0, httpPort: 0 }))
    hub.child.kill('SIGHUP')
    await waitFor(() => hub.output().includes('config reloaded: applied logLevel'), 'the reload logged', 30_000)
    expect(hub.output()).toContain('config key retentionDays changed')
    await connectOnce()
    await waitFor(() => hub.output().includes('client connected'), 'the broker logging at info after the reload', 30_000)

    // An invalid file is refused; the hub keeps serving.
    writeFileSync(configPath, JSON.stringify({ logLevel: 'chatty', maxConnections: 0 }))
    hub.child.kill('SIGHUP')
    await waitFor(() => hub.output().includes('new hub config refused'), 'the refusal logged', 30_000)
    expect((await api('GET', '/api/devices')).status).toBe(200)
    hub.child.kill('SIGTERM')
    expect(await hub.exited).toBe(0)
  }, 60_000)
})
