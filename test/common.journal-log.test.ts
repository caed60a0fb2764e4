import { closeSync, fstatSync, openSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { isJournalStream, journalLine, syslogPriority } from '../common/journal-log.js'
import { chosenFormat } from '../common/logger.js'
import { tempDir } from './support/hub.js'

/**
 * Log lines for the systemd journal (common/journal-log.ts): one line an
 * entry, a syslog priority prefix, no time/pid/hostname (the journal records
 * them), fields as key=value. service.agent-unit.test.ts sees the agent pick
 * this format by itself when its stdout is the JOURNAL_STREAM.
 */

describe('journal lines', () => {
  it.each([
    [{ level: 30, time: 1, pid: 7, hostname: 'pi', msg: 'agent started' }, '<6>agent started'],
    [{ level: 40, deviceId: 'gh-01', component: 'link', msg: 'connection lost', reason: 'timeout', attempt: 3 }, '<4>gh-01 link: connection lost reason=timeout attempt=3'],
    [{ level: 50, msg: 'x', path: 'a b', ok: false, n: null }, '<3>x path="a b" ok=false n=null'],
    [{ level: 20, msg: 'y', sensors: ['cpu.load', 'uptime'], o: { a: 1 } }, '<7>y sensors=["cpu.load","uptime"] o={"a":1}'],
    [{ level: 60, msg: 'two\nlines', q: 'a"b', e: 'k=v', empty: '' }, '<2>two lines q="a\\"b" e="k=v" empty=""'],
    [{ level: 10, msg: 'trace' }, '<7>trace'],
    [{ level: 30, msg: 'ctl', v: 'a\u001b[31mb' }, '<6>ctl v="a\\u001b[31mb"'],
  ])('%j is %s', (entry, line) => {
    expect(journalLine(entry)).toBe(line)
  })

  it('shows a thrown error\'s type and message, and its stack as one escaped string', () => {
    const line = journalLine({ level: 50, msg: 'failed', err: { type: 'Error', message: 'disk full', stack: 'Error: disk full\n    at write (ledger.js:1:1)' } })
    expect(line).toBe('<3>failed err="Error: disk full" stack="Error: disk full\\n    at write (ledger.js:1:1)"')
    expect(line).not.toContain('\n')
  })

  it.each([[60, 2], [50, 3], [40, 4], [30, 6], [20, 7], [10, 7], [undefined, 6]])('pino level %s is syslog priority %s', (level, priority) => {
    expect(syslogPriority(level)).toBe(priority)
  })
})

describe('is stdout the journal?', () => {
  const cleanups: Array<() => void> = []
  afterEach(() => { while (cleanups.length) cleanups.pop()!() })

  it('only when JOURNAL_STREAM names this descriptor\'s device and inode', () => {
    const tmp = tempDir('journal-fd')
    cleanups.push(tmp.remove)
    const fd = openSync(join(tmp.dir, 'out'), 'w')
    cleanups.push(() => closeSync(fd))
    const st = fstatSync(fd, { bigint: true })
    expect(isJournalStream(fd, `${st.dev}:${st.ino}`)).toBe(true)
    // Inherited by a child whose stdout went elsewhere: another inode.
    expect(isJournalStream(fd, `${st.dev}:${st.ino + 1n}`)).toBe(false)
    expect(isJournalStream(fd, undefined)).toBe(false)
    expect(isJournalStream(fd, 'garbage')).toBe(false)
  })

  it('--log-format auto picks journal for the journal stream, and an explicit format wins', () => {
    const st = fstatSync(1, { bigint: true })
    const journal = { JOURNAL_STREAM: `${st.dev}:${st.ino}` }
    expect(chosenFormat('auto', 1, journal)).toBe('journal')
    expect(chosenFormat('json', 1, journal)).toBe('json')
    expect(chosenFormat('auto', 1, { JOURNAL_STREAM: '0:0' })).not.toBe('journal')
    expect(chosenFormat('journal', 1, {})).toBe('journal')
  })
})
