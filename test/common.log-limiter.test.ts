import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { manualClock } from '../common/clock.js'
import { createLogLimiter } from '../common/log-limiter.js'

/** Log lines as pino writes them, parsed. */
function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
  return { logger, lines }
}

describe('log limiter (M24)', () => {
  it('writes the first lines of a window, then one summary of the rest', () => {
    const { logger, lines } = capture()
    const clock = manualClock(0)
    const limiter = createLogLimiter({ logger, clock, linesPerWindow: 3, windowMs: 10_000, maxGroups: 100 })
    for (let i = 0; i < 10_000; i++) limiter.log('warn', { clientId: 'dev-b' }, { filter: `f${i}` }, 'subscribe denied')
    expect(lines.map((l) => l.filter)).toEqual(['f0', 'f1', 'f2'])
    clock.advance(10_000)
    limiter.flush()
    expect(lines).toHaveLength(4)
    expect(lines[3]).toMatchObject({ clientId: 'dev-b', suppressed: 9997, windowMs: 10_000, level: 40 })
    expect(lines[3]?.msg).toBe('subscribe denied: 9997 more like this from this clientId in the last 10 s')
    limiter.close()
  })

  it('limits each subject and each message on its own', () => {
    const { logger, lines } = capture()
    const limiter = createLogLimiter({ logger, clock: manualClock(0), linesPerWindow: 2, windowMs: 10_000, maxGroups: 100 })
    for (let i = 0; i < 5; i++) {
      limiter.log('warn', { clientId: 'a' }, {}, 'subscribe denied')
      limiter.log('warn', { clientId: 'b' }, {}, 'subscribe denied')
      limiter.log('warn', { clientId: 'a' }, {}, 'publish denied')
    }
    expect(lines).toHaveLength(6)
    limiter.close()
    // close() sums up what was held back: three groups, three more were suppressed in each.
    expect(lines.slice(6).map((l) => l.suppressed)).toEqual([3, 3, 3])
  })

  it('starts a new window after the old one, summing up the old one first', () => {
    const { logger, lines } = capture()
    const clock = manualClock(0)
    const limiter = createLogLimiter({ logger, clock, linesPerWindow: 1, windowMs: 1000, maxGroups: 100 })
    limiter.log('info', { remoteAddress: '10.0.0.1' }, {}, 'connect refused')
    limiter.log('info', { remoteAddress: '10.0.0.1' }, {}, 'connect refused')
    clock.advance(1000)
    limiter.log('info', { remoteAddress: '10.0.0.1' }, { n: 3 }, 'connect refused')
    expect(lines.map((l) => [l.suppressed, l.n])).toEqual([[undefined, undefined], [1, undefined], [undefined, 3]])
    limiter.close()
  })

  it('tracks at most maxGroups, summing up the oldest when it drops it', () => {
    const { logger, lines } = capture()
    const limiter = createLogLimiter({ logger, clock: manualClock(0), linesPerWindow: 1, windowMs: 10_000, maxGroups: 2 })
    for (const id of ['a', 'a', 'b', 'c']) limiter.log('warn', { clientId: id }, {}, 'x')
    // 'a' was dropped for 'c': its one suppressed line is summed up at once.
    expect(lines.map((l) => [l.clientId, l.suppressed])).toEqual([['a', undefined], ['b', undefined], ['a', 1], ['c', undefined]])
    limiter.close()
  })

  it.each([[0, 1000, 1], [1, 0, 1], [1, 1000, 0]])('refuses linesPerWindow %d, windowMs %d, maxGroups %d', (linesPerWindow, windowMs, maxGroups) => {
    expect(() => createLogLimiter({ logger: capture().logger, clock: manualClock(0), linesPerWindow, windowMs, maxGroups })).toThrow(RangeError)
  })
})
