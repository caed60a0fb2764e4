import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseSimFlags, type SimFlags } from '../cli/sim-command.js'
import { exitCodeFor, formatLatency, headline, renderProgress, renderReport } from '../devices-sim/report.js'
import type { SimReport } from '../devices-sim/sim.js'
import { tempDir, waitFor } from './support/hub.js'
import { CLI, isAlive, killProc, startCli, type Proc } from './support/procs.js'

/** `rollcall sim`: flags and their messages, the report as text and as JSON, exit codes, Ctrl-C. */
function rollcall(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

describe('rollcall sim flags', () => {
  it.each<[string, string[], RegExp]>([
    ['a bad profile', ['--profile', 'wobbly'], /--profile must be one of steady, flaky, intermittent, mixed; got "wobbly"/],
    ['a chaos event without its length', ['--chaos', 'partition=20%@10s'],
      /--chaos: chaos spec, event 1 "partition=20%@10s" \(column 1\): a partition needs a length, after "\+".*A valid spec: partition=20%@10s\+15s,/],
    ['an unknown chaos event', ['--chaos', 'partition=20%@1s+1s,meteor@2s'], /event 2 "meteor@2s" \(column 21\): unknown event "meteor"; use one of partition, hub-kill, agent-crash, reconnect-burst/],
    ['chaos after the end of the run', ['--duration', '10s', '--chaos', 'hub-kill@20s'], /--chaos: chaos: hub-kill@20s\+1s starts at 20s, not before the end of the run \(10s\)/],
    ['a rate without its unit', ['--rate', '2'], /--rate must be samples per second per device with its unit, e.g. 1\/s, 5\/s, 30\/min, from 1\/h to 100\/s; got "2"/],
    ['a rate that is not one', ['--rate', 'fast'], /--rate must be samples per second per device/],
    ['a duration without its unit', ['--duration', '60'], /--duration must be a duration with its unit \(ms, s, m, h, d\), e.g. 30s, 10m, 1h; got "60"/],
    ['a fleet too large', ['--devices', '0'], /--devices must be a whole number from 1 to 20000, got "0"/],
    ['--hub without --api', ['--hub', 'mqtt://127.0.0.1:1883'], /--hub needs --api .* and --admin-token \(or ROLLCALL_ADMIN_TOKEN\)/],
    ['hub-kill against a hub it did not start', ['--hub', 'mqtt://127.0.0.1:1883', '--api', 'http://127.0.0.1:8080', '--admin-token', 't', '--chaos', 'hub-kill@5s'],
      /--chaos hub-kill needs the simulator's own hub .*: drop --hub, or drop hub-kill/],
    ['a hub on another machine', ['--hub', 'mqtt://10.0.0.5:1883', '--api', 'http://10.0.0.5:8080', '--admin-token', 't'], /only \(127.0.0.1 or localhost\); got "10.0.0.5"/],
    ['--api without --hub', ['--api', 'http://127.0.0.1:8080'], /--api, --admin-token and --ca go with --hub/],
    ['an unknown scenario', ['--scenario', 'storm'], /--scenario must be one of reactions; got "storm"/],
    ['--bursts-every without its scenario', ['--bursts-every', '30'], /--bursts-every goes with --scenario reactions/],
  ])('refuses %s with a message that says what to fix, and exits 2 (a usage error)', async (_name, args, message) => {
    const r = await rollcall(['sim', ...args], { ROLLCALL_ADMIN_TOKEN: '' })
    expect(r.stderr).toMatch(message)
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
  })

  it('refuses a work dir with a previous run in it', async () => {
    const tmp = tempDir('sim-work')
    cleanups.push(tmp.remove)
    mkdirSync(join(tmp.dir, 'agents'))
    writeFileSync(join(tmp.dir, 'agents', 'x'), '')
    const r = await rollcall(['sim', '--work', tmp.dir])
    expect(r.stderr).toMatch(/--work .* is not empty: give a new or empty directory/)
    expect(r.code).toBe(2)
  })

  it('turns flags into a run plan', () => {
    const base: SimFlags = { json: false }
    expect(parseSimFlags({ ...base, devices: '50', duration: '2m', profile: 'flaky', rate: '2/s', seed: '7', jobsEvery: 'off', commandsEvery: '1s' }, {})).toMatchObject({
      devices: 50, durationMs: 120_000, profile: 'flaky', sampleIntervalMs: 500, seed: 7, jobEveryMs: 0, commandEveryMs: 1000, hub: undefined, workDir: undefined,
    })
    expect(parseSimFlags({ ...base, rate: '30/min', seed: '1' }, {})).toMatchObject({ devices: 10, durationMs: 60_000, profile: 'mixed', sampleIntervalMs: 2000, jobEveryMs: 15_000, commandEveryMs: 500 })
    expect(parseSimFlags({ ...base, chaos: 'partition=30%@10s+15s,hub-kill@25s', seed: '1' }, {}).chaos).toHaveLength(2)
    expect(parseSimFlags({ ...base, seed: '1' }, {}).reactions).toBeUndefined()
    expect(parseSimFlags({ ...base, scenario: 'reactions', seed: '1' }, {}).reactions).toEqual({ burstsEveryTicks: 60 })
    expect(parseSimFlags({ ...base, scenario: 'reactions', burstsEvery: '20', seed: '1' }, {}).reactions).toEqual({ burstsEveryTicks: 20 })
    expect(parseSimFlags({ ...base, hub: 'mqtt://localhost', api: 'http://127.0.0.1:8080/', seed: '1' }, { ROLLCALL_ADMIN_TOKEN: 'tok' }).hub)
      .toEqual({ mqttUrl: 'mqtt://127.0.0.1:1883', apiUrl: 'http://127.0.0.1:8080', adminToken: 'tok', ca: undefined })
    // A hub with TLS: the agents dial mqtts:// (default port 8883) and pin --ca; --ca with mqtt:// is refused.
    const ca = fileURLToPath(import.meta.url)
    expect(parseSimFlags({ ...base, hub: 'mqtts://localhost', api: 'https://127.0.0.1:8080', ca, seed: '1' }, { ROLLCALL_ADMIN_TOKEN: 'tok' }).hub)
      .toEqual({ mqttUrl: 'mqtts://127.0.0.1:8883', apiUrl: 'https://127.0.0.1:8080', adminToken: 'tok', ca })
    expect(() => parseSimFlags({ ...base, hub: 'mqtt://localhost', api: 'http://127.0.0.1:8080', ca, seed: '1' }, { ROLLCALL_ADMIN_TOKEN: 'tok' }))
      .toThrow(/--ca goes with an mqtts:\/\/ --hub/)
  })
})

const report = (over: Partial<SimReport['totals']> = {}, ok = true): SimReport => {
  const q = { count: 10, p50: 12, p99: 340 }
  return {
    seed: 42, devices: 50, durationMs: 60_000, profile: 'mixed', sampleIntervalMs: 1000, schedule: ['chaos schedule: none'],
    totals: {
      generated: 11_840, stored: 11_840, lost: 0, duplicates: 0, dropped: 0,
      jobs: { issued: 200, finished: 200, lost: 0, duplicates: 0, byState: { succeeded: 198, failed: 2, queued: 0 } },
      commands: { sent: 118, byOutcome: { succeeded: 100, DEVICE_OFFLINE: 18 } },
      ...over,
    },
    byProfile: [{ profile: 'steady', devices: 30, generated: 7200, stored: 7200, lost: 0, duplicates: 0, onlineShare: 0.998 }],
    hubAgrees: true, exactCount: true,
    online: {
      connectsByMs: 250, allOnlineByMs: 310, everOnline: 50, lateAfterSlotMs: { count: 50, p50: 12, p99: 60, max: 64 },
      agentStartMs: { count: 50, p50: 3.2, p99: 9.8, max: 11 }, loopDelayMs: { p50: 10.1, p99: 40.2, max: 52 },
    },
    presence: { expectedOutages: 123, offlineTransitionsSeen: 119 },
    patterns: {
      telemetry: { sampledToStoredMs: q, messagesPerSample: 0.56 },
      jobs: { createdToStartedMs: q, createdToFinishedMs: q, waitingForLinkMs: { count: 0, p50: 0, p99: 0 }, messagesPerExecution: 7 },
      commands: { roundTripMs: { count: 100, p50: 1.6, p99: 4.2 }, refusedOfflineShare: 0.15, messagesPerCommand: 2 },
    },
    drainedMs: 1200, ok,
  }
}

describe('the sim report', () => {
  it('exits 1 when anything was lost or duplicated, 0 otherwise', () => {
    expect(exitCodeFor(report())).toBe(0)
    expect(exitCodeFor(report({ lost: 3 }, false))).toBe(1)
    expect(headline(report({ lost: 3, duplicates: 1 }, false))).toBe('FAILED: 3 samples lost, 1 samples duplicated')
    expect(headline(report())).toBe('OK: nothing lost, nothing duplicated')
  })

  it('reads as text: headline, profiles, jobs, commands, the patterns side by side, presence, online, drain', () => {
    const text = renderReport(report()).join('\n')
    expect(text).toMatch(/OK: nothing lost, nothing duplicated/)
    expect(text).toMatch(/telemetry {2}generated 11,840 {2}stored 11,840 {2}lost 0 {2}duplicates 0 {2}dropped 0/)
    expect(text).toMatch(/steady +30 +99.8% +7,200 +7,200 +0 +0/)
    expect(text).toMatch(/by state: succeeded 198, failed 2/)
    expect(text).toMatch(/by outcome: succeeded 100, DEVICE_OFFLINE 18/)
    expect(text).toMatch(/event-driven \(telemetry\) +sampled -> stored +12 ms +340 ms +10 +0.56 +per sample/)
    expect(text).toMatch(/created -> delivered +- +- +0/)
    expect(text).toMatch(/push \(commands\) +round trip +1.6 ms +4.2 ms +100 +2 +per command/)
    expect(text).toMatch(/refused as offline: 15% \(18 of 118\)/)
    expect(text).toMatch(/expected outages 123, offline transitions the hub recorded 119/)
    expect(text).toMatch(/all online by 310 ms\n.*online after their slot p50 12 ms, p99 60 ms; this process spent p50 3.2 ms opening an agent, and its timers ran up to 40 ms late/)
    expect(text).toMatch(/drain +1.2 s/)
    expect(text).not.toMatch(/reactions/)
    expect(formatLatency(150_000)).toBe('2.5 min')
    expect(renderProgress({ elapsedMs: 12_300, durationMs: 60_000, phase: 'running', online: 48, devices: 50, samplesPerSec: 199, backlog: 23 }))
      .toBe('12s / 60s  online 48/50  199 samples/s  backlog 23  48s left')
  })
})

describe('the sim report with the reactions scenario', () => {
  it('has a reactions line: sample taken -> fired -> command at the device, and the rule\'s counts', () => {
    const r = report()
    const q = (count: number, p50: number, p99: number) => ({ count, p50, p99 })
    const text = renderReport({
      ...r,
      patterns: {
        ...r.patterns,
        reactions: {
          rule: 'sim.vibration-burst', bursts: 12, fired: 11, suppressed: 1, delivered: 10, notDelivered: { offline: 1 }, jobs: 11,
          sampledToFiredMs: q(11, 9, 22), firedToDeliveredMs: q(10, 41, 80), sampledToDeliveredMs: q(10, 52, 95),
        },
      },
    }).join('\n')
    expect(text).toMatch(/reactions \(rules\) +sampled -> fired +9 ms +22 ms +11\n/)
    expect(text).toMatch(/ +fired -> command at device +41 ms +80 ms +10\n/)
    expect(text).toMatch(/ +sampled -> command at device +52 ms +95 ms +10\n/)
    expect(text).toMatch(/reactions: rule sim.vibration-burst: bursts 12, fired 11, suppressed 1; sensors.sample at the device 10, not delivered: offline 1; jobs to the group 11/)
  })
})

describe('rollcall sim runs', () => {
  it('prints the report as JSON with the totals at the top, and exits 0 when nothing was lost', async () => {
    const r = await rollcall(['sim', '--devices', '5', '--duration', '5s', '--profile', 'steady', '--seed', '3', '--jobs-every', '2s', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const json = JSON.parse(r.stdout) as SimReport
    expect(json).toMatchObject({ seed: 3, devices: 5, durationMs: 5000, profile: 'steady', sampleIntervalMs: 1000, ok: true, hubAgrees: true, schedule: ['chaos schedule: none'] })
    expect(json.totals).toMatchObject({ lost: 0, duplicates: 0, dropped: 0 })
    expect(json.totals.generated).toBeGreaterThanOrEqual(5 * 4 * 3)
    expect(json.totals.stored).toBe(json.totals.generated)
    expect(json.totals.jobs).toMatchObject({ lost: 0, duplicates: 0 })
    expect(json.totals.jobs.issued).toBeGreaterThanOrEqual(5)
    expect(json.totals.commands.byOutcome.succeeded).toBeGreaterThan(0)
    expect(json.byProfile.map((p) => p.profile)).toEqual(['steady'])
    expect(Object.keys(json.patterns)).toEqual(['telemetry', 'jobs', 'commands'])
    // Everything but the JSON is on stderr: the header, the schedule, the progress lines.
    expect(r.stderr).toMatch(/^rollcall sim: 5 devices \(steady\), 5s, 1\/s per device, seed 3$/m)
    expect(r.stderr).toMatch(/^chaos schedule: none$/m)
    expect(r.stderr).toMatch(/^\d+s \/ 5s {2}online 5\/5 {2}\d+ samples\/s {2}backlog \d+ {2}\d+s left$/m)
  }, 60_000)

  it('stops on Ctrl-C with exit 130, and leaves no hub process or temp dir behind', async () => {
    const p: Proc = startCli(['sim', '--devices', '3', '--duration', '60s', '--profile', 'steady', '--jobs-every', 'off'])
    cleanups.push(() => killProc(p))
    const hubLine = await waitFor(() => /hub: its own \(pid (\d+)\), .* data (\S+)\/hub/.exec(p.output()), 'the hub line', 20_000)
    const hubPid = Number(hubLine[1])
    const workDir = hubLine[2]!
    await waitFor(() => /online 3\/3/.test(p.output()), 'the fleet online', 20_000)
    expect(isAlive(hubPid)).toBe(true)
    p.child.kill('SIGINT')
    expect(await p.exited).toBe(130)
    expect(p.output()).toMatch(/SIGINT: stopping/)
    expect(isAlive(hubPid)).toBe(false)
    expect(existsSync(workDir)).toBe(false)
  }, 60_000)
})
