import { describe, expect, it } from 'vitest'
import { RollcallError } from '../common/errors.js'
import type { CommandSpec } from '../hub/commands/commands.js'
import {
  checkCommandSpec, groupCounts, memberTurn, offlineError, replyOutcome, unansweredOutcome, unsupportedError, type Unanswered,
} from '../hub/commands/decisions.js'

/** The pure decisions about a command (hub/commands/decisions.ts), as tables. */

function codeOf(f: () => unknown): string {
  try {
    f()
    return 'ok'
  } catch (err) {
    return err instanceof RollcallError ? err.code : 'not a RollcallError'
  }
}

describe('checkCommandSpec', () => {
  const deep: unknown = Array.from({ length: 200 }).reduce<unknown>((inner) => ({ inner }), null)
  it.each<[string, CommandSpec, string]>([
    ['a plain name', { name: 'ping' }, 'ok'],
    ['a dotted name with args', { name: 'sys.info', args: { verbose: true } }, 'ok'],
    ['an upper-case name', { name: 'Ping' }, 'BAD_REQUEST'],
    ['a name with a space', { name: 'p ing' }, 'BAD_REQUEST'],
    ['a name too long to be queued as a job', { name: 'a'.repeat(62), ifOffline: 'queue' }, 'BAD_REQUEST'],
    ['the same name, never queued', { name: 'a'.repeat(62) }, 'ok'],
    ['a zero timeout', { name: 'ping', timeoutMs: 0 }, 'BAD_REQUEST'],
    ['a fractional timeout', { name: 'ping', timeoutMs: 1.5 }, 'BAD_REQUEST'],
    ['the longest timeout', { name: 'ping', timeoutMs: 300_000 }, 'ok'],
    ['a timeout over the limit', { name: 'ping', timeoutMs: 300_001 }, 'BAD_REQUEST'],
    ['args too large', { name: 'ping', args: 'x'.repeat(17 * 1024) }, 'PAYLOAD_TOO_LARGE'],
    ['args nested too deep', { name: 'ping', args: deep }, 'TOO_DEEP'],
  ])('%s', (_name, spec, expected) => {
    expect(codeOf(() => checkCommandSpec(spec, 5000))).toBe(expected)
  })

  it('serialises the args once and takes the default deadline', () => {
    expect(checkCommandSpec({ name: 'ping' }, 5000)).toEqual({ args: null, timeoutMs: 5000 })
    expect(checkCommandSpec({ name: 'ping', args: { a: 1 }, timeoutMs: 200 }, 5000)).toEqual({ args: '{"a":1}', timeoutMs: 200 })
  })
})

describe('refusals', () => {
  it('says when an offline device was last seen, or that it never was', () => {
    const never = offlineError('d1', 'c1', null)
    expect([never.code, never.details]).toEqual(['DEVICE_OFFLINE', { id: 'c1', lastSeen: null }])
    expect(never.message).toMatch(/never connected/)
    expect(offlineError('d1', 'c1', 0).message).toMatch(/last seen 1970-01-01T00:00:00.000Z/)
  })

  it.each<[string, string[], string | undefined]>([
    ['capabilities unknown', [], undefined],
    ['an agent that takes commands', ['telemetry', 'commands'], undefined],
    ['an agent without commands', ['telemetry', 'jobs'], 'COMMANDS_NOT_SUPPORTED'],
  ])('%s', (_name, capabilities, expected) => {
    expect(unsupportedError('d1', capabilities)?.code).toBe(expected)
  })
})

describe('memberTurn', () => {
  it.each<[string, boolean, number, string]>([
    ['reachable, time left', true, 1, 'send'],
    ['reachable, deadline passed', true, 0, 'expired:COMMAND_TIMEOUT'],
    ['gone away, time left', false, 1000, 'offline:DEVICE_OFFLINE'],
    ['gone away, deadline passed: offline comes first', false, -5, 'offline:DEVICE_OFFLINE'],
  ])('%s', (_name, reachable, leftMs, expected) => {
    const t = memberTurn(reachable, leftMs)
    expect(t.verdict === 'send' ? t.verdict : `${t.verdict}:${t.error.code}`).toBe(expected)
  })
})

describe('how a command ended', () => {
  it('takes a reply\'s result, or its error, or a failure without details', () => {
    expect(replyOutcome('d1', { type: 'cmd.res', v: 1, id: 'c1', ok: true, result: { up: 3 } }, 12)).toEqual({
      outcome: { id: 'c1', deviceId: 'd1', status: 'succeeded', result: { up: 3 }, durationMs: 12 }, result: '{"up":3}',
    })
    expect(replyOutcome('d1', { type: 'cmd.res', v: 1, id: 'c1', ok: true }, 12).result).toBe('null')
    expect(replyOutcome('d1', { type: 'cmd.res', v: 1, id: 'c1', ok: false, error: { code: 'DISK_FULL', message: 'no space' } }, 12)).toEqual({
      outcome: { id: 'c1', deviceId: 'd1', status: 'failed', error: { code: 'DISK_FULL', message: 'no space' }, durationMs: 12 }, result: null,
    })
    const bare = replyOutcome('d1', { type: 'cmd.res', v: 1, id: 'c1', ok: false }, 12).outcome
    expect(bare.status === 'failed' && bare.error.code).toBe('FAILED')
  })

  it.each<[Unanswered, string, string]>([
    [{ why: 'deadline', timeoutMs: 100 }, 'timed_out', 'COMMAND_TIMEOUT'],
    [{ why: 'not-delivered', detail: 'closed' }, 'disconnected', 'DEVICE_DISCONNECTED'],
    [{ why: 'disconnected' }, 'disconnected', 'DEVICE_DISCONNECTED'],
    [{ why: 'hub-stopping' }, 'disconnected', 'HUB_STOPPING'],
  ])('without a reply: %j', (u, status, code) => {
    const o = unansweredOutcome('c1', 'd1', u, 7)
    expect([o.status, 'error' in o ? o.error.code : undefined, o.durationMs]).toEqual([status, code, 7])
  })

  it('counts a group by outcome, with the skipped members', () => {
    const outcomes = [
      unansweredOutcome('c1', 'd1', { why: 'disconnected' }, 1),
      replyOutcome('d2', { type: 'cmd.res', v: 1, id: 'c2', ok: true }, 1).outcome,
      replyOutcome('d3', { type: 'cmd.res', v: 1, id: 'c3', ok: true }, 1).outcome,
    ]
    expect(groupCounts(outcomes, 2)).toEqual({ succeeded: 2, failed: 0, timed_out: 0, disconnected: 1, skipped: 2 })
  })
})
