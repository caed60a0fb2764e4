import { afterEach, describe, expect, it } from 'vitest'
import { connect } from 'node:net'
import { adminApi } from '../bench/hub-process.js'
import { tempDir, waitFor } from './support/hub.js'
import { MOSQUITTO_CLIENTS, runMosquitto } from './support/mosquitto.js'
import { isAlive, killProc, startCli, type Proc } from './support/procs.js'

/**
 * Acceptance 4 (issue #5): `npm start` (`rollcall demo`) prints the URLs and
 * shows telemetry arriving within 10 s; Ctrl-C leaves no process behind and
 * no port open.
 */

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/** The banner's copy-paste line as arguments: words, or single-quoted strings. */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!)
}

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

describe('rollcall demo', () => {
  it('prints the URLs, stores telemetry from the fleet, runs a job schedule, and Ctrl-C stops everything', async () => {
    const tmp = tempDir('demo')
    cleanups.push(tmp.remove)
    const demo: Proc = startCli(['demo', '--data', tmp.dir, '--mqtt-port', '0', '--http-port', '0'])
    cleanups.push(() => killProc(demo))

    const banner = await waitFor(() => /mosquitto_sub .*-v\n[\s\S]*curl .*\n/.test(demo.output()) ? demo.output() : undefined, 'the banner', 60_000)
    const mqttPort = Number(/MQTT broker +mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(banner)![1])
    const httpPort = Number(/HTTP API +http:\/\/127\.0\.0\.1:(\d+)/.exec(banner)![1])
    const adminToken = /admin token +(\S+)/.exec(banner)![1]!
    expect(banner).toMatch(/rollcall demo: hub \+ 25 simulated devices/)
    expect(banner).toMatch(/\d+ steady, \d+ flaky, \d+ intermittent/)
    expect(banner).toMatch(/npx rollcall job create .* --target group:demo/)
    expect(banner).toMatch(/npx rollcall cmd demo-01 /)
    const api = adminApi(`http://127.0.0.1:${httpPort}`, adminToken)

    // Telemetry stored from more than one device (a few seconds after the start; the bound only guards against a hang).
    const stored = await waitFor(async () => {
      const r = await api<{ devices: Array<{ id: string; presence: string }> }>('GET', '/api/devices')
      const withData: string[] = []
      for (const d of r.body.devices ?? []) {
        const t = await api<{ samples: unknown[] }>('GET', `/api/devices/${d.id}/telemetry?since=0&limit=1`)
        if ((t.body.samples ?? []).length > 0) withData.push(d.id)
      }
      return withData.length >= 10 ? { devices: r.body.devices.length, withData } : undefined
    }, 'telemetry stored for 10 devices', 60_000, 250)
    expect(stored.devices).toBe(25)

    const schedules = await api<{ schedules: Array<{ name: string; cron: string; job: { name: string; target: string } }> }>('GET', '/api/schedules')
    expect(schedules.body.schedules).toEqual([expect.objectContaining({ name: 'demo-sample', cron: '* * * * *', job: expect.objectContaining({ name: 'sensors.sample', target: 'group:demo' }) as unknown })])

    // The copy-paste line works as printed.
    if (MOSQUITTO_CLIENTS) {
      const line = /(mosquitto_sub .*-v)\n/.exec(banner)![1]!
      const sub = await runMosquitto('mosquitto_sub', [...shellWords(line).slice(1), '-C', '1', '-W', '60'])
      expect(sub.stdout, sub.stderr).toMatch(/^devices\/demo-\d+\/telemetry \{"type":"telemetry"/)
    }

    demo.child.kill('SIGINT')
    const code = await Promise.race([demo.exited, new Promise((r) => setTimeout(() => r('still running'), 60_000))])
    expect(code, demo.output()).toBe(0)
    expect(isAlive(demo.pid)).toBe(false)
    expect(await portOpen(mqttPort)).toBe(false)
    expect(await portOpen(httpPort)).toBe(false)
  }, 240_000)
})
