import { describe, expect, it } from 'vitest'
import { newScanState, scanChunk, type ScanVerdict } from '../broker/header-scanner.js'
import { remainingLength } from './broker.harness.js'

function frame(firstByte: number, bodyLength: number): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(bodyLength), Buffer.alloc(bodyLength, 0xab)])
}

/** Feeds `bytes` cut at the given offsets; returns the first refusal, or ok, and the state. */
function scanIn(bytes: Buffer, cuts: number[], limit: number): { verdict: ScanVerdict; state: ReturnType<typeof newScanState>; refusedInChunk: number } {
  const state = newScanState()
  const bounds = [0, ...cuts, bytes.length]
  for (let i = 0; i + 1 < bounds.length; i++) {
    const verdict = scanChunk(state, bytes.subarray(bounds[i], bounds[i + 1]), limit)
    if (!verdict.ok) return { verdict, state, refusedInChunk: i }
  }
  return { verdict: { ok: true }, state, refusedInChunk: -1 }
}

// Lengths around every boundary of the 1-4 byte remaining-length encoding (§2.2.3).
const stream = Buffer.concat([
  frame(0x10, 30), // CONNECT
  frame(0x30, 0), // PUBLISH with empty body (malformed for the parser, fine for the scanner)
  frame(0x32, 127),
  frame(0x32, 128),
  frame(0x30, 16_383),
  frame(0x30, 16_384),
  frame(0xc0, 0), // PINGREQ
  frame(0x82, 200), // SUBSCRIBE
  frame(0xe0, 0), // DISCONNECT
])

describe('scanChunk', () => {
  it('walks a stream of packets split at every byte offset', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const { verdict, state } = scanIn(stream, [cut], 20_000)
      expect(verdict.ok).toBe(true)
      expect(state.phase).toBe('type')
      expect(state.disconnectSeen).toBe(true)
    }
  })

  it('walks the stream one byte at a time', () => {
    const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1)
    const { verdict, state } = scanIn(stream, cuts, 20_000)
    expect(verdict.ok).toBe(true)
    expect(state.phase).toBe('type')
  })

  it('does not see a DISCONNECT in a payload', () => {
    const publishCarryingDisconnectBytes = Buffer.from([0x30, 0x04, 0x00, 0x00, 0xe0, 0x00])
    const { state } = scanIn(publishCarryingDisconnectBytes, [], 100)
    expect(state.disconnectSeen).toBe(false)
    expect(state.phase).toBe('type')
  })

  it.each([
    ['one byte past the limit', 1001, 1000],
    ['a 4-byte length of 256 MiB', 268_435_455, 1000],
    ['a 2-byte length', 200, 127],
  ])('refuses %s at the header, at every split, before any body', (_name, announced, limit) => {
    const header = Buffer.concat([Buffer.from([0x30]), remainingLength(announced)])
    // Only the header and a few body bytes are ever sent: the refusal must not need more.
    const bytes = Buffer.concat([frame(0xc0, 0), header, Buffer.alloc(8)])
    // The byte at which the partial length first exceeds the limit decides.
    let deciding = 3
    for (let sum = 0, mul = 1; ; deciding++, mul *= 128) {
      sum += ((bytes[deciding] as number) & 0x7f) * mul
      if (sum > limit) break
    }
    for (let cut = 0; cut <= bytes.length; cut++) {
      const { verdict, refusedInChunk } = scanIn(bytes, [cut], limit)
      expect(verdict).toMatchObject({ ok: false, code: 'PAYLOAD_TOO_LARGE', packetType: 3 })
      expect(refusedInChunk).toBe(cut > deciding ? 0 : 1)
    }
  })

  it('accepts exactly the limit', () => {
    expect(scanIn(frame(0x30, 1000), [], 1000).verdict.ok).toBe(true)
  })

  it('refuses a remaining length longer than 4 bytes', () => {
    const bytes = Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01])
    for (let cut = 0; cut <= bytes.length; cut++) {
      expect(scanIn(bytes, [cut], Number.MAX_SAFE_INTEGER).verdict).toMatchObject({ ok: false, code: 'MALFORMED_PACKET' })
    }
  })

  it('passes the bytes it scans without keeping them', () => {
    const state = newScanState()
    const big = frame(0x30, 1_000_000)
    expect(scanChunk(state, big.subarray(0, 10), 2_000_000).ok).toBe(true)
    expect(state).toMatchObject({ phase: 'body', remaining: 1_000_000 - 6 })
  })
})
