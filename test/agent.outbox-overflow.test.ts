import { describe, expect, it } from 'vitest'
import { dropChunk, MIN_DROP_CHUNK, oldestToDrop, overLimits, type Drop } from '../agent/outbox-overflow.js'

const limits = { maxRows: 10, maxBytes: 1000 }

describe('overLimits', () => {
  it.each([
    ['within both', 10, 1000, false],
    ['one row over', 11, 1000, true],
    ['one byte over', 10, 1001, true],
    ['empty', 0, 0, false],
  ])('%s', (_name, rows, bytes, expected) => {
    expect(overLimits(rows, bytes, limits)).toBe(expected)
  })
})

describe('dropChunk', () => {
  it.each([
    ['a few rows over: at least the minimum', 5000, 13, MIN_DROP_CHUNK],
    ['over by bytes only: the minimum', 5000, 10, MIN_DROP_CHUNK],
    ['far over: the excess', 5000, 1010, 1000],
    ['the kind holds fewer: all of it', 7, 1010, 7],
  ])('%s', (_name, kindRows, rows, expected) => {
    expect(dropChunk(kindRows, rows, limits)).toBe(expected)
  })
})

describe('oldestToDrop', () => {
  const rowsOf = (...sizes: number[]) => sizes.map((size, i) => [i + 1, size] as const)
  const cases: Array<[string, ReturnType<typeof rowsOf>, number, number, Drop]> = [
    ['rows over: the oldest go until the count fits', rowsOf(10, 10, 10, 10), 12, 100, { rows: 2, bytes: 20, lastSeq: 2 }],
    ['bytes over: the oldest go until the size fits', rowsOf(300, 300, 300), 5, 1500, { rows: 2, bytes: 600, lastSeq: 2 }],
    ['both over: the stricter decides', rowsOf(100, 100, 100, 100), 11, 1350, { rows: 4, bytes: 400, lastSeq: 4 }],
    ['not enough candidates: all of them', rowsOf(1, 1), 15, 100, { rows: 2, bytes: 2, lastSeq: 2 }],
    ['no candidates: nothing', [], 15, 100, { rows: 0, bytes: 0, lastSeq: 0 }],
  ]
  it.each(cases)('%s', (_name, candidates, rows, bytes, expected) => {
    expect(oldestToDrop(candidates, rows, bytes, limits)).toEqual(expected)
  })
})
