import { describe, expect, it } from 'vitest'
import { newScanState, scanChunk, type ScanVerdict } from '../broker/header-scanner.js'
import { remainingLength } from './broker.harness.js'

/** A packet of `bodyLength` bytes; a PUBLISH body opens with a valid topic ("a/b") where it has room. */
function frame(firstByte: number, bodyLength: number): Buffer {
  const body = Buffer.alloc(bodyLength, 0xab)
  if (firstByte >> 4 === 3 && bodyLength >= 5) Buffer.from([0x00, 0x03, 0x61, 0x2f, 0x62]).copy(body)
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(bodyLength), body])
}

/** A PUBLISH (QoS 0) with the given topic bytes and a short payload. */
function publishWithTopic(topic: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, Buffer.from('{}')])
  return Buffer.concat([Buffer.from([0x30]), remainingLength(body.length), body])
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

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
const str = (v: string) => Buffer.concat([u16(Buffer.byteLength(v)), Buffer.from(v)])
const whole = (firstByte: number, body: Buffer) => Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body])
/** A valid CONNECT (packet-rules.ts checks its body whole). */
const connect = whole(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 0xc2]), u16(30), str('client-1'), str('user'), str('secret')]))
/** A valid SUBSCRIBE whose filters fill about `bodyLength` bytes. */
function subscribe(bodyLength: number): Buffer {
  const filters: Buffer[] = []
  for (let n = 2, i = 0; n < bodyLength; i++) {
    const f = Buffer.concat([str(`devices/+/f${i}`), Buffer.from([1])])
    filters.push(f)
    n += f.length
  }
  return whole(0x82, Buffer.concat([u16(7), ...filters]))
}

// Lengths around every boundary of the 1-4 byte remaining-length encoding (§2.2.3).
const stream = Buffer.concat([
  connect,
  frame(0x30, 0), // PUBLISH with empty body (malformed for the parser, fine for the scanner)
  frame(0x32, 127),
  frame(0x32, 128),
  frame(0x30, 16_383),
  frame(0x30, 16_384),
  frame(0xc0, 0), // PINGREQ
  subscribe(200),
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
    const publishCarryingDisconnectBytes = Buffer.from([0x30, 0x05, 0x00, 0x01, 0x61, 0xe0, 0x00])
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

/**
 * [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-4.7.3-2]: a PUBLISH topic that is not
 * well-formed UTF-8, or holds U+0000, is refused from its raw bytes, wherever
 * the chunks split it; a real U+FFFD in a topic is fine.
 */
describe('scanChunk: PUBLISH topics', () => {
  it.each([
    ['an invalid byte', Buffer.from([0x61, 0xff, 0x62]), false],
    ['a lone continuation byte', Buffer.from([0x61, 0x80]), false],
    ['an encoded surrogate (U+D800)', Buffer.from([0x61, 0xed, 0xa0, 0x80]), false],
    ['an overlong NUL', Buffer.from([0x61, 0xc0, 0x80]), false],
    ['a truncated sequence', Buffer.from([0x61, 0xe2, 0x82]), false],
    ['U+0000', Buffer.from([0x61, 0x00, 0x62]), false],
    ['a real U+FFFD', Buffer.from('devices/dev-a/\ufffd'), true],
    ['plain ASCII', Buffer.from('devices/dev-a/telemetry'), true],
    ['multi-byte text', Buffer.from('devices/dev-a/é✓😀'), true],
  ])('a topic with %s, at every split', (_what, topic, ok) => {
    const bytes = publishWithTopic(topic)
    for (let cut = 0; cut <= bytes.length; cut++) {
      const { verdict } = scanIn(bytes, [cut], 1000)
      expect(verdict.ok).toBe(ok)
      if (!verdict.ok) expect(verdict.code).toBe('INVALID_UTF8')
    }
    const oneByOne = scanIn(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1), 1000)
    expect(oneByOne.verdict.ok).toBe(ok)
  })
})
