import { describe, expect, it } from 'vitest'
import { compileShellAllow, matchShellAllow, refusalMessage, shellAllowWarnings, type ShellAllowEntry } from '../agent/shell-allow.js'

// #12 section 4: a plain shellAllow entry allows any arguments; an exact argv
// or a pattern per argument pins them. The matcher is pure: tables.

const ENTRIES: ShellAllowEntry[] = [
  '/usr/bin/uptime',
  ['/usr/bin/systemctl', 'restart', 'pump'],
  { cmd: '/usr/bin/systemctl', args: ['status', { pattern: 'pump|fan' }] },
  { cmd: '/usr/bin/journalctl', args: ['-u', { pattern: '[a-z-]+' }, '-n', { pattern: '\\d{1,4}' }] },
  // A pattern that closes the group the anchors open: it must still match the whole argument.
  { cmd: '/usr/bin/cat', args: [{ pattern: 'pump.log)|(fan.log' }] },
  ['/usr/bin/date'],
]
const { rules, issues } = compileShellAllow(ENTRIES)

describe('shellAllow matcher', () => {
  it('compiles every form', () => {
    expect(issues).toEqual([])
    expect(rules.map((r) => r.args?.length)).toEqual([undefined, 2, 2, 4, 1, 0])
  })

  it.each<[string, string[], boolean]>([
    ['/usr/bin/uptime', [], true],
    ['/usr/bin/uptime', ['-p', 'anything', 'at all'], true], // the plain form: any arguments
    ['/usr/bin/systemctl', ['restart', 'pump'], true],
    ['/usr/bin/systemctl', ['restart', 'boiler'], false],
    ['/usr/bin/systemctl', ['restart', 'pump', '--now'], false], // no extra arguments
    ['/usr/bin/systemctl', ['restart'], false],
    ['/usr/bin/systemctl', ['status', 'fan'], true],
    ['/usr/bin/systemctl', ['status', 'pump;reboot'], false], // anchored on the whole argument
    ['/usr/bin/systemctl', ['status', 'xpump'], false],
    ['/usr/bin/systemctl', ['status', 'pum'], false],
    ['/usr/bin/journalctl', ['-u', 'pump-ctl', '-n', '200'], true],
    ['/usr/bin/journalctl', ['-u', 'pump-ctl', '-n', '20000'], false],
    ['/usr/bin/journalctl', ['-u', 'pump\nctl', '-n', '2'], false], // no multiline escape: $ is the end
    ['/usr/bin/date', [], true],
    ['/usr/bin/date', ['-s', '2020-01-01'], false], // an empty exact argv means no arguments
    ['systemctl', ['restart', 'pump'], false], // commands are exact: no PATH lookup
    ['/bin/sh', ['-c', 'uptime'], false],
    ['/usr/bin/cat', ['pump.log'], true],
    ['/usr/bin/cat', ['fan.log'], true],
    ['/usr/bin/cat', ['pump.log.bak'], false], // `^(?:a)|(b)$` alone would let this through
  ])('%s %j → %s', (cmd, args, allowed) => {
    expect(matchShellAllow(rules, cmd, args).allowed).toBe(allowed)
  })

  it.each<[string, string[], RegExp]>([
    ['/usr/bin/systemctl', ['restart', 'boiler'], /\["\/usr\/bin\/systemctl","restart","pump"\]: argument 2 is "boiler", it allows only "pump"/],
    ['/usr/bin/systemctl', ['restart', 'boiler'], /"status",\{"pattern":"pump\|fan"\}\]\}: argument 1 is "restart", it allows only "status"/],
    ['/usr/bin/systemctl', ['status', 'pump;reboot'], /argument 2 is "pump;reboot", it must match the whole of \/pump\|fan\//],
    ['/usr/bin/systemctl', ['restart', 'pump', '--now'], /it allows exactly 2 arguments, the job gave 3/],
    ['/usr/sbin/uptime', [], /\/usr\/bin\/uptime: it names "\/usr\/bin\/uptime"; commands are matched exactly/],
    ['/bin/rm', ['-rf', '/'], /"\/bin\/rm" is not in this device's shellAllow list \(allowed: \/usr\/bin\/uptime, \["\/usr\/bin\/systemctl"/],
  ])('refusing %s %j says why: %s', (cmd, args, why) => {
    const v = matchShellAllow(rules, cmd, args)
    if (v.allowed) throw new Error('expected a refusal')
    expect(refusalMessage(cmd, args, v)).toMatch(why)
  })

  it.each<[ShellAllowEntry, RegExp]>([
    [{ cmd: '/usr/bin/x', args: [{ pattern: '(' }] }, /shellAllow\.0\.args\.0: "\(" is not a regular expression/],
    [[''], /shellAllow\.0: an exact argv needs the command first/],
  ])('a bad entry %j is a config problem: %s', (entry, problem) => {
    expect(compileShellAllow([entry]).issues.join('\n')).toMatch(problem)
  })

  it.each<[ShellAllowEntry, boolean]>([
    ['/usr/bin/env', true], ['/usr/bin/find', true], ['/usr/bin/awk', true], ['/usr/bin/python3', true], ['/usr/bin/python3.11', true],
    ['/bin/sh', true], ['bash', true], ['/usr/bin/xargs', true], ['/usr/bin/perl', true], ['/usr/bin/sudo', true], ['/usr/bin/node', true],
    ['/usr/bin/uptime', false], ['/usr/bin/df', false],
    [['/usr/bin/python3', '/opt/pump/check.py'], false], // pinned: no warning
    [{ cmd: '/usr/bin/find', args: ['/var/log', '-name', { pattern: '[a-z]+\\.log' }] }, false],
  ])('start-up warning for %j: %s', (entry, warned) => {
    const w = shellAllowWarnings(compileShellAllow([entry]).rules)
    expect(w.length).toBe(warned ? 1 : 0)
    if (warned) expect(w[0]).toMatch(/any arguments.*can run other commands.*Pin the arguments/)
  })
})
