import { afterEach, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from './support/hub.js'
import { CLI } from './support/procs.js'

/**
 * Issue #13: `rollcall agent|hub --check-config` loads the config as a start
 * would, prints what the process would do and exits 0; an invalid config
 * exits 2 with every problem. Nothing is created.
 */

function rollcall(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('--check-config', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { while (cleanups.length) cleanups.pop()!() })
  const dir = () => {
    const t = tempDir('check-config')
    cleanups.push(t.remove)
    return t.dir
  }

  it('agent: prints what it would run with, the token redacted and its source named, and exits 0 without creating the data dir', () => {
    const d = dir()
    writeFileSync(join(d, 'agent.token'), 'secret-token-value\n', { mode: 0o600 })
    writeFileSync(join(d, 'handlers.mjs'), 'export const handlers = { "relay.toggle": () => ({ on: true }) }\n')
    const config = join(d, 'agent.json')
    writeFileSync(config, JSON.stringify({
      hub: 'mqtt://hub.lan:1883', id: 'pi-one', tokenFile: 'agent.token', dataDir: 'state', sampleIntervalMs: '30s', handlersModule: 'handlers.mjs',
      sensors: [{ name: 'env.temp', model: 'sine', min: 18, max: 26, unit: '°C' }],
      shellAllow: [['/usr/bin/systemctl', 'restart', 'pump']],
      schedules: [{ name: 'hourly', cron: '0 * * * *', task: 'sensors.sample' }],
    }))
    const text = rollcall(['agent', '--check-config', '--config', config])
    expect(text.code).toBe(0)
    expect(text.stdout).not.toContain('secret-token-value')
    expect(text.stdout).toContain(`token:      [redacted], from file ${join(d, 'agent.token')} ("tokenFile" in the config file)`)
    expect(text.stdout).toContain(`data:       ${join(d, 'state')} (ledger ${join(d, 'state', 'ledger.db')}: will be created)`)
    expect(text.stdout).toMatch(/sensors: +every 30s: .*env\.temp \(sine 18\.\.26 °C\)/)
    expect(text.stdout).toContain('hourly "0 * * * *" -> sensors.sample')
    expect(text.stdout).toContain('tasks relay.toggle')

    const json = rollcall(['agent', '--check-config', '--json', '--config', config])
    expect(json.code).toBe(0)
    const report = JSON.parse(json.stdout) as { ok: boolean; tokenSource: string; config: { token: string; dataDir: string }; ledger: { exists: boolean } }
    expect(report).toMatchObject({ ok: true, config: { token: '[redacted]', dataDir: join(d, 'state') }, ledger: { exists: false } })
    expect(json.stdout).not.toContain('secret-token-value')
    // Checked, not started: nothing was made.
    expect(existsSync(join(d, 'state'))).toBe(false)
  })

  it('agent: an invalid config exits 2 and names every problem, in text and in JSON', () => {
    const d = dir()
    const config = join(d, 'agent.json')
    writeFileSync(config, JSON.stringify({ hub: 'http://hub.lan', id: 'Pi One', tokenFile: 'missing.token', sampleIntervalMs: 'often' }))
    const text = rollcall(['agent', '--check-config', '--config', config])
    expect(text.code).toBe(2)
    for (const key of ['tokenFile', 'sampleIntervalMs', 'hub:', 'id:']) expect(text.stderr).toContain(key)
    const json = rollcall(['agent', '--check-config', '--json', '--config', config])
    expect(json.code).toBe(2)
    const report = JSON.parse(json.stdout) as { ok: boolean; problems: string[] }
    expect(report.ok).toBe(false)
    expect(report.problems.map((p) => p.split(':')[0])).toEqual(['"tokenFile" in the config file', 'sampleIntervalMs', 'hub', 'id'])
  })

  it('agent: a handlers module that does not load is a problem, as at start', () => {
    const d = dir()
    writeFileSync(join(d, 'bad.mjs'), 'export const nothing = 1\n')
    const r = rollcall(['agent', '--check-config', '--hub', 'mqtt://h:1883', '--id', 'pi-one', '--token', 't', '--config', writeJson(d, { handlersModule: 'bad.mjs' })])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('handlersModule')
  })

  it('hub: an external broker is shown with its account, and a password file it cannot read exits 2', () => {
    const d = dir()
    writeFileSync(join(d, 'broker-password'), 'pw\n', { mode: 0o600 })
    const ok = rollcall(['hub', '--check-config', '--config', writeJson(d, { dataDir: 'data', broker: 'mqtts://broker.lan:8883', brokerUsername: 'rollcall-admin', brokerPasswordFile: 'broker-password' })])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toContain(`broker:     mqtts://broker.lan:8883 (external: no MQTT listener of its own), as rollcall-admin with the password in ${join(d, 'broker-password')}`)
    expect(ok.stdout).not.toMatch(/listeners: .*mqtt:\/\//)
    const missing = rollcall(['hub', '--check-config', '--config', writeJson(d, { dataDir: 'data', broker: 'mqtt://broker.lan:1883', brokerPasswordFile: 'no-such-file' })])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain(`cannot read brokerPasswordFile ${join(d, 'no-such-file')}`)
  })

  it('hub: reads its TLS files (relative to the config file) and prints the listeners; a key that does not match exits 2', () => {
    const d = dir()
    const init = rollcall(['tls', 'init', '--data', join(d, 'hub'), '--host', 'hub.lan'])
    expect(init.code).toBe(0)
    const config = writeJson(d, { dataDir: 'hub', host: '0.0.0.0', tlsCert: 'hub/tls/hub.pem', tlsKey: 'hub/tls/hub.key', logLevel: 'warn' })
    const ok = rollcall(['hub', '--check-config', '--config', config])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toContain('mqtts://0.0.0.0:8883')
    expect(ok.stdout).toContain('https://0.0.0.0:8080')
    expect(ok.stdout).not.toContain('mqtt://0.0.0.0')
    expect(ok.stdout).toContain('DNS:hub.lan')

    // The CA's key is no key of the hub's certificate.
    mkdirSync(join(d, 'wrong'))
    copyFileSync(join(d, 'hub', 'tls', 'ca.key'), join(d, 'wrong', 'hub.key'))
    const bad = rollcall(['hub', '--check-config', '--json', '--config', config, '--tls-key', join(d, 'wrong', 'hub.key')])
    expect(bad.code).toBe(2)
    expect((JSON.parse(bad.stdout) as { problems: string[] }).problems[0]).toMatch(/does not belong to the certificate/)

    const invalid = rollcall(['hub', '--check-config', '--config', writeJson(d, { maxConnections: 0, keepaliveMaxSec: 'long', colour: 'blue' })])
    expect(invalid.code).toBe(2)
    for (const key of ['maxConnections', 'keepaliveMaxSec', 'colour']) expect(invalid.stderr).toContain(key)
  })
})

let n = 0
function writeJson(d: string, o: Record<string, unknown>): string {
  const path = join(d, `config-${n++}.json`)
  writeFileSync(path, JSON.stringify(o))
  return path
}
