import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { startTestHub, tempDir, type TestHub } from './support/hub.js'
import { CLI } from './support/procs.js'
import { makeTestPki, makeUnrelatedPki, type TestPki } from './support/tls.js'

/**
 * The admin CLI against a hub serving HTTPS (issue #12): --ca (or
 * ROLLCALL_CA) pins the hub's CA; without it the private CA is not trusted
 * and the failure names --ca; a --ca with an http:// API is refused.
 */
function rollcall(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ROLLCALL_CA: '', ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

describe('rollcall admin commands over HTTPS', () => {
  let pki: TestPki
  let unrelated: TestPki
  let hub: TestHub
  let target: string[]

  beforeAll(async () => {
    pki = makeTestPki()
    unrelated = makeUnrelatedPki()
    hub = await startTestHub({ tlsCert: pki.hubCert, tlsKey: pki.hubKey }, undefined, { ca: pki.caCert })
    await hub.addDevice('tls-cli-1')
    target = ['--api', hub.httpUrl, '--admin-token', hub.running.adminToken]
  })
  afterAll(async () => {
    await hub.stop()
    pki.remove()
    unrelated.remove()
  })

  it('lists devices with --ca, and with ROLLCALL_CA', async () => {
    expect(hub.httpUrl).toMatch(/^https:/)
    const r = await rollcall(['device', 'list', ...target, '--ca', pki.caCert, '--json'])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect((JSON.parse(r.stdout) as { devices: Array<{ id: string }> }).devices.map((d) => d.id)).toEqual(['tls-cli-1'])
    const env = await rollcall(['device', 'list', ...target, '--json'], { ROLLCALL_CA: pki.caCert })
    expect(env.code).toBe(0)
  })

  it('device add and observer add hint at the TLS port and the CA to pin', async () => {
    const port = hub.running.mqttTlsPort!
    const dev = await rollcall(['device', 'add', 'tls-cli-2', ...target, '--ca', pki.caCert])
    expect(dev.code).toBe(0)
    expect(dev.stdout).toContain(`agent --hub mqtts://127.0.0.1:${port} --ca ${pki.caCert} --id tls-cli-2`)
    const obs = await rollcall(['observer', 'add', 'tlsviewer', ...target, '--ca', pki.caCert])
    expect(obs.code).toBe(0)
    expect(obs.stdout).toContain(`mosquitto_sub -h 127.0.0.1 -p ${port} --cafile ${pki.caCert} -i`)
  })

  it('on the hub\'s machine, takes the CA from the data dir\'s tls/ca.pem without --ca', async () => {
    const data = tempDir('cli-ca')
    try {
      mkdirSync(join(data.dir, 'tls'))
      copyFileSync(pki.caCert, join(data.dir, 'tls', 'ca.pem'))
      const r = await rollcall(['device', 'list', '--api', hub.httpUrl, '--data', data.dir, '--admin-token', hub.running.adminToken, '--json'])
      expect(r.stderr).toBe('')
      expect(r.code).toBe(0)
    } finally {
      data.remove()
    }
  })

  it('without --ca fails with code TLS and a message naming --ca', async () => {
    const r = await rollcall(['device', 'list', ...target, '--json'])
    expect(r.code).toBe(1)
    expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'TLS' } })
    expect(r.stderr).toMatch(/^rollcall: TLS: the hub's certificate at https:\/\/127.0.0.1:\d+ is not signed by a CA this system trusts .*: pass --ca with the hub's ca.pem/)
  })

  it('with another CA fails, saying which --ca did not match', async () => {
    const r = await rollcall(['device', 'list', ...target, '--ca', unrelated.caCert])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`is not signed by the CA in --ca ${unrelated.caCert}`)
  })

  it('refuses --ca with an http:// API (the token would go in clear)', async () => {
    const r = await rollcall(['device', 'list', '--api', 'http://127.0.0.1:1', '--admin-token', 'x', '--ca', pki.caCert])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/--ca \(or ROLLCALL_CA\) is for an https:\/\/ API/)
  })
})
