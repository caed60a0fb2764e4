import { describe, expect, it } from 'vitest'
import { parsePercent, parseRatePerMinute } from '../common/rate.js'

describe('parseRatePerMinute', () => {
  it.each<[string, number | undefined]>([
    ['60/min', 60],
    ['60/m', 60],
    ['5/s', 300],
    ['5/sec', 300],
    ['100/h', 100 / 60],
    ['120/hour', 2],
    ['1440/day', 1],
    ['2.5/min', 2.5],
    ['60', 60],
    [' 30 / min ', 30],
    ['10/MIN', 10],
    ['0.5', 0.5],
    // refused
    ['0/min', undefined],
    ['0', undefined],
    ['-5/min', undefined],
    ['5/fortnight', undefined],
    ['5/', undefined],
    ['/min', undefined],
    ['fast', undefined],
    ['', undefined],
    ['1e3', undefined],
    ['5/min/min', undefined],
    ['5/constructor', undefined],
  ])('%j → %s', (text, expected) => {
    const got = parseRatePerMinute(text)
    if (expected === undefined) expect(got).toBeUndefined()
    else expect(got).toBeCloseTo(expected, 10)
  })
})

describe('parsePercent', () => {
  it.each<[string, number | undefined]>([
    ['20%', 20],
    ['20', 20],
    ['12.5%', 12.5],
    [' 100 % ', 100],
    ['0.1', 0.1],
    // refused
    ['0%', undefined],
    ['0', undefined],
    ['101%', undefined],
    ['-5%', undefined],
    ['20%%', undefined],
    ['twenty', undefined],
    ['', undefined],
    ['0.2 ', 0.2],
  ])('%j → %s', (text, expected) => {
    expect(parsePercent(text)).toBe(expected)
  })
})
