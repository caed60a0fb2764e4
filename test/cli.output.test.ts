import { describe, expect, it } from 'vitest'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { errorGroups } from '../cli/job-commands.js'
import { cliCommand, shellWord } from '../cli/invocation.js'
import { clip, localTime, localTimeMs } from '../cli/output.js'
import { tempDir } from './support/hub.js'

/** How the CLI writes for a terminal (issue #11): cut text, times, commands to paste, grouped errors. */

describe('terminal output', () => {
  it.each<[string, number, string]>([
    ['short', 10, 'short'],
    ['exactly ten', 11, 'exactly ten'],
    ['a detail that goes on and on', 10, 'a detail…'],
    ['abcdefghijklmnop', 10, 'abcdefghi…'],
    ['word1 word2word3word4', 15, 'word1 word2wor…'],
  ])('clip(%j, %i) is %j: a cut shows as an ellipsis', (text, max, expected) => {
    expect(clip(text, max)).toBe(expected)
    expect(clip(text, max).length).toBeLessThanOrEqual(max)
  })

  it('prints times as local YYYY-MM-DD HH:MM:SS, with milliseconds where asked, and "-" for none', () => {
    const ts = new Date(2026, 4, 1, 14, 3, 7, 42).getTime()
    expect(localTime(ts)).toBe('2026-05-01 14:03:07')
    expect(localTimeMs(ts)).toBe('2026-05-01 14:03:07.042')
    expect(localTime(null)).toBe('-')
    expect(localTimeMs(undefined)).toBe('-')
  })

  it.each<[string, string]>([
    ['job', 'job'],
    ['http://127.0.0.1:8080', 'http://127.0.0.1:8080'],
    ['/tmp/demo data', `'/tmp/demo data'`],
    ['{"cmd":"/usr/bin/uptime"}', `'{"cmd":"/usr/bin/uptime"}'`],
    ["it's", `'it'\\''s'`],
  ])('shellWord(%j) reads back as the same word: %s', (word, expected) => {
    expect(shellWord(word)).toBe(expected)
  })

  it('suggests `rollcall` where it is on the PATH, `npx rollcall` in a clone and under npx', () => {
    const tmp = tempDir('cli-path')
    try {
      const bin = join(tmp.dir, 'bin')
      mkdirSync(bin)
      writeFileSync(join(bin, 'rollcall'), '#!/bin/sh\n', { mode: 0o755 })
      expect(cliCommand({ PATH: `/nonexistent:${bin}` })).toBe('rollcall')
      expect(cliCommand({ PATH: '/nonexistent' })).toBe('npx rollcall')
      expect(cliCommand({})).toBe('npx rollcall')
      // npx puts the package's bin first on the PATH of what it runs; the user's shell has no such folder.
      expect(cliCommand({ PATH: bin, npm_command: 'exec' })).toBe('npx rollcall')
    } finally {
      tmp.remove()
    }
  })

  it('groups executions\' errors by code and message, in table order', () => {
    const denied = { code: 'COMMAND_NOT_ALLOWED', message: '"/usr/bin/ls" is not in this device\'s shellAllow list' }
    const groups = errorGroups([
      { deviceId: 'd-01', error: denied },
      { deviceId: 'd-02', error: null },
      { deviceId: 'd-03', error: { code: 'EXIT_NONZERO', message: 'exit 1' } },
      { deviceId: 'd-04', error: { ...denied } },
    ])
    expect(groups).toEqual([
      { ...denied, devices: ['d-01', 'd-04'] },
      { code: 'EXIT_NONZERO', message: 'exit 1', devices: ['d-03'] },
    ])
  })
})
