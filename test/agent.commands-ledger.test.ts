import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../common/clock.js'
import { silentLogger } from '../common/logger.js'
import { builtinCommands, redactedConfig, type CommandHandler } from '../agent/command-handlers.js'
import { COMMAND_KEEP_MS, COMMAND_KEEP_ROWS } from '../agent/command-records.js'
import { commandErrorFrom, refusal, responseJson } from '../agent/command-response.js'
import { CommandRunner } from '../agent/command-runner.js'
import { HandlerRegistry } from '../agent/job-handlers.js'
import { Ledger } from '../agent/ledger.js'
import { decode, LIMITS, topics, type CommandResponse } from '../protocol/index.js'
import { removeDir, tempDir } from './agent.support.js'

/**
 * The command runner's decisions as tables, and its `commands` table against
 * a real ledger file: what is kept, what is pruned, what a restart finds.
 */

const DEVICE = 'dev-cmdl'
const dirs: string[] = []
const ledgers: Ledger[] = []
const runners: CommandRunner[] = []

afterEach(async () => {
  for (const r of runners.splice(0)) await r.stop(0)
  for (const l of ledgers.splice(0)) l.close()
  for (const d of dirs.splice(0)) removeDir(d)
})

describe('refusal', () => {
  const base = { now: 1_000, known: true, running: 0, maxRunning: 2, names: () => ['a', 'b'] }
  it.each([
    ['runs a known, live command under the cap', { expiresAt: 1_001 }, {}, undefined],
    ['refuses at expiresAt', { expiresAt: 1_000 }, {}, 'EXPIRED'],
    ['refuses after expiresAt, even an unknown name', { expiresAt: 10 }, { known: false }, 'EXPIRED'],
    ['refuses an unknown name', { expiresAt: 2_000 }, { known: false }, 'UNKNOWN_COMMAND'],
    ['refuses at the cap', { expiresAt: 2_000 }, { running: 2 }, 'BUSY'],
    ['prefers UNKNOWN_COMMAND to BUSY', { expiresAt: 2_000 }, { running: 2, known: false }, 'UNKNOWN_COMMAND'],
  ] as const)('%s', (_what, req, over, code) => {
    expect(refusal({ name: 'x', ...req }, { ...base, ...over })?.code).toBe(code)
  })

  it('names the commands the device has', () => {
    expect(refusal({ name: 'nope', expiresAt: 2_000 }, { ...base, known: false })?.message).toContain('it has: a, b')
  })
})

/** `[[...]]`, `depth` arrays deep. */
function nestedArray(depth: number): unknown[] {
  let v: unknown[] = []
  for (let i = 1; i < depth; i++) v = [v]
  return v
}

describe('responses', () => {
  const parse = (json: string) => {
    const d = decode(topics.cmdRes(DEVICE), Buffer.from(json))
    if (!d.ok) throw new Error(d.error.message)
    return d.message as CommandResponse
  }

  it.each([
    ['a result', { result: { a: 1 } }, { ok: true, result: { a: 1 } }],
    ['no result', { result: undefined }, { ok: true }],
    ['null', { result: null }, { ok: true, result: null }],
    ['a result that is not JSON', { result: 1n }, { ok: false, error: { code: 'BAD_RESULT' } }],
    ['a function', { result: () => 1 }, { ok: false, error: { code: 'BAD_RESULT' } }],
    ['a result over the cap', { result: 'é'.repeat(LIMITS.maxCommandResultBytes) }, { ok: true, result: { truncated: true, bytes: 2 * LIMITS.maxCommandResultBytes + 2 } }],
    // The hub dead-letters a result nested past the limit (M19b); the caller would wait for nothing.
    ['a result nested too deep', { result: nestedArray(LIMITS.maxJsonDepth + 1) }, { ok: false, error: { code: 'BAD_RESULT' } }],
    ['a result nested to the limit', { result: nestedArray(LIMITS.maxJsonDepth) }, { ok: true, result: nestedArray(LIMITS.maxJsonDepth) }],
    ['an error', { error: { code: 'NOPE', message: 'no' } }, { ok: false, error: { code: 'NOPE', message: 'no' } }],
    ['an error with a bad code', { error: { code: 'nope', message: 'no' } }, { ok: false, error: { code: 'HANDLER_FAILED' } }],
  ] as const)('%s is a valid cmd.res', (_what, outcome, expected) => {
    const r = parse(responseJson('cabc1', outcome).json)
    expect(r).toMatchObject({ type: 'cmd.res', v: 1, id: 'cabc1', ...expected })
    if (expected.ok) expect(r.error).toBeUndefined()
  })

  it.each([
    ['a coded Error', Object.assign(new Error('m'), { code: 'DISK_FULL' }), { code: 'DISK_FULL', message: 'm' }],
    ['a lowercase code', Object.assign(new Error('m'), { code: 'enoent' }), { code: 'HANDLER_FAILED', message: 'm' }],
    ['a string', 'boom', { code: 'HANDLER_FAILED', message: 'boom' }],
    ['null', null, { code: 'HANDLER_FAILED', message: 'null' }],
  ] as const)('a thrown %s becomes an error code', (_what, err, expected) => {
    expect(commandErrorFrom(err)).toEqual(expected)
  })

  it('caps the message', () => {
    expect(commandErrorFrom(new Error('x'.repeat(5_000))).message).toHaveLength(LIMITS.maxJobErrorChars)
  })

  it('redacts the token and a password in the hub URL', () => {
    const c = redactedConfig({ hub: 'mqtts://dev:pw@hub.example:8883', token: 't0ken', id: 'd' })
    expect(c).toEqual({ hub: 'mqtts://dev:%5Bredacted%5D@hub.example:8883', token: '[redacted]', id: 'd' })
    expect(JSON.stringify(c)).not.toMatch(/t0ken|pw@/)
  })
})

describe('the commands table', () => {
  function setup(dir = tempDir(), commands: Record<string, CommandHandler> = {}) {
    if (!dirs.includes(dir)) dirs.push(dir)
    const ledger = new Ledger({ dataDir: dir })
    ledgers.push(ledger)
    const clock = manualClock(1_000_000)
    const sent: CommandResponse[] = []
    const registry = new HandlerRegistry<CommandHandler>(
      builtinCommands({ now: () => clock.now(), sysInfo: () => ({}), sample: () => ({ ts: 0, values: {}, stored: 0 }), config: () => ({}), pullJobs: () => ({}) }),
      commands,
    )
    const runner = new CommandRunner(ledger, registry, {
      publish: (_topic, payload) => {
        sent.push(JSON.parse(payload.toString()) as CommandResponse)
        return true
      },
    }, { deviceId: DEVICE, maxRunning: 4, clock, logger: silentLogger(), sampleSensors: () => ({}) })
    runners.push(runner)
    runner.start()
    const rows = () => ledger.db.prepare('SELECT COUNT(*) FROM commands').pluck().get() as number
    const ping = (i: number, expiresInMs = 1_000) => { runner.onRequest({ type: 'cmd.req', v: 1, id: `cping${i}`, name: 'ping', expiresAt: clock.now() + expiresInMs }) }
    return { dir, ledger, clock, sent, runner, rows, ping }
  }

  it('keeps every id until its expiresAt has passed, then the newest 1000 for an hour', () => {
    const s = setup()
    for (let i = 0; i < 1_500; i++) {
      s.ping(i)
      s.clock.advance(1)
    }
    expect(s.sent).toHaveLength(1_500)
    expect(s.rows()).toBe(1_500)
    // Expiry still ahead for the newest: only ids whose repeat would be refused as EXPIRED go.
    expect(s.runner.prune(s.clock.now())).toBe(500)
    s.clock.advance(1_000)
    expect(s.runner.prune(s.clock.now())).toBe(0)
    expect(s.rows()).toBe(COMMAND_KEEP_ROWS)
    // The oldest kept id is still answered from the table, not run again.
    s.ping(500)
    expect(s.sent.at(-1)).toMatchObject({ id: 'cping500', ok: true })
    expect(s.runner.stats()).toMatchObject({ duplicates: 1, ran: 1_500 })
    s.clock.advance(COMMAND_KEEP_MS)
    expect(s.runner.prune(s.clock.now())).toBe(COMMAND_KEEP_ROWS)
    expect(s.rows()).toBe(0)
  })

  it('prunes on its own after a burst doubles the table', async () => {
    const s = setup()
    for (let i = 0; i < 2 * COMMAND_KEEP_ROWS - 1; i++) s.ping(i, 1)
    s.clock.advance(10)
    s.ping(99_999, 60_000)
    await new Promise((resolve) => setImmediate(resolve))
    expect(s.rows()).toBe(COMMAND_KEEP_ROWS)
  })

  it('survives a restart: a done id is answered from the table, a running one as INTERRUPTED', async () => {
    let calls = 0
    let release!: () => void
    const commands: Record<string, CommandHandler> = {
      once: () => ++calls,
      hang: () => new Promise<void>((resolve) => { release = resolve }),
    }
    const first = setup(tempDir(), commands)
    first.runner.onRequest({ type: 'cmd.req', v: 1, id: 'conce1', name: 'once', expiresAt: first.clock.now() + 60_000 })
    first.runner.onRequest({ type: 'cmd.req', v: 1, id: 'chang1', name: 'hang', expiresAt: first.clock.now() + 60_000 })
    expect(first.sent).toEqual([{ type: 'cmd.res', v: 1, id: 'conce1', ok: true, result: 1 }])
    // A crash: the ledger goes away with the command still running (no stop()).
    runners.splice(runners.indexOf(first.runner), 1)
    first.ledger.close()

    const second = setup(first.dir, commands)
    second.runner.onRequest({ type: 'cmd.req', v: 1, id: 'conce1', name: 'once', expiresAt: second.clock.now() + 60_000 })
    second.runner.onRequest({ type: 'cmd.req', v: 1, id: 'chang1', name: 'hang', expiresAt: second.clock.now() + 60_000 })
    expect(second.sent).toEqual([
      { type: 'cmd.res', v: 1, id: 'conce1', ok: true, result: 1 },
      { type: 'cmd.res', v: 1, id: 'chang1', ok: false, error: { code: 'INTERRUPTED', message: expect.any(String) as string } },
    ])
    expect(calls).toBe(1)
    expect(second.runner.stats()).toMatchObject({ ran: 0, duplicates: 2 })
    // The first run's handler ending late changes nothing.
    release()
    await new Promise((resolve) => setImmediate(resolve))
    expect(second.sent).toHaveLength(2)
  })
})
