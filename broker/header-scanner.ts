import { isUtf8 } from 'node:buffer'

/**
 * Walks the MQTT fixed headers of an inbound byte stream without buffering it,
 * so an oversized packet is refused when its header arrives, not after the
 * parser (mqtt-packet, which has no size limit) has collected the whole body.
 *
 * States, per packet (MQTT 3.1.1 §2.2):
 *   type    the first byte: packet type in the high nibble, flags in the low one
 *   length  1 to 4 bytes of "remaining length", 7 bits each, high bit = more follow
 *   body    `remaining` bytes to skip before the next packet's type byte
 *
 * The state is a plain object mutated in place: this runs on every inbound
 * chunk of every client, so it allocates nothing and costs O(packets), not
 * O(bytes), per chunk.
 */

export const PACKET_TYPE_CONNECT = 1
export const PACKET_TYPE_PUBLISH = 3
export const PACKET_TYPE_DISCONNECT = 14

export interface ScanState {
  phase: 'type' | 'length' | 'body'
  packetType: number
  remaining: number
  multiplier: number
  lengthBytes: number
  /** A DISCONNECT header has gone by: the close that follows is the client's own. */
  disconnectSeen: boolean
  /**
   * The UTF-8 string field being read at the start of the body (so far only a
   * PUBLISH topic): 'len' while its 2-byte length arrives, 'bytes' while its
   * bytes do, which may span chunks; 'none' otherwise.
   */
  field: 'none' | 'len' | 'bytes'
  fieldLength: number
  fieldLengthBytes: number
  fieldParts: Uint8Array[]
  fieldGot: number
}

export type ScanVerdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: 'PAYLOAD_TOO_LARGE'; readonly packetType: number; readonly remainingLength: number }
  | { readonly ok: false; readonly code: 'MALFORMED_PACKET'; readonly packetType: number; readonly remainingLength: number }
  | { readonly ok: false; readonly code: 'INVALID_UTF8'; readonly packetType: number; readonly remainingLength: number; readonly detail: string }

const OK: ScanVerdict = { ok: true }

export function newScanState(): ScanState {
  return { phase: 'type', packetType: 0, remaining: 0, multiplier: 1, lengthBytes: 0, disconnectSeen: false, field: 'none', fieldLength: 0, fieldLengthBytes: 0, fieldParts: [], fieldGot: 0 }
}

/**
 * Advances `state` over `chunk`. Returns a refusal as soon as a header
 * announces a remaining length above `maxRemainingLength`, or a length field
 * longer than 4 bytes [MQTT-2.2.3]; after a refusal the state is undefined
 * and the connection must be dropped.
 */
export function scanChunk(state: ScanState, chunk: Uint8Array, maxRemainingLength: number): ScanVerdict {
  let i = 0
  const n = chunk.length
  while (i < n) {
    if (state.phase === 'body' && state.field !== 'none') {
      const bad = readField(state, chunk, i)
      i = bad.next
      if (bad.detail !== undefined) return { ok: false, code: 'INVALID_UTF8', packetType: state.packetType, remainingLength: state.remaining, detail: bad.detail }
      if (state.remaining === 0) { state.phase = 'type'; state.field = 'none' }
      continue
    }
    if (state.phase === 'body') {
      const skip = Math.min(state.remaining, n - i)
      i += skip
      state.remaining -= skip
      if (state.remaining === 0) state.phase = 'type'
      continue
    }
    const byte = chunk[i++] as number
    if (state.phase === 'type') {
      state.packetType = byte >> 4
      if (state.packetType === PACKET_TYPE_DISCONNECT) state.disconnectSeen = true
      state.phase = 'length'
      state.remaining = 0
      state.multiplier = 1
      state.lengthBytes = 0
      continue
    }
    state.remaining += (byte & 0x7f) * state.multiplier
    state.multiplier *= 128
    state.lengthBytes++
    if (state.remaining > maxRemainingLength) {
      return { ok: false, code: 'PAYLOAD_TOO_LARGE', packetType: state.packetType, remainingLength: state.remaining }
    }
    if ((byte & 0x80) !== 0) {
      if (state.lengthBytes === 4) {
        return { ok: false, code: 'MALFORMED_PACKET', packetType: state.packetType, remainingLength: state.remaining }
      }
      continue
    }
    state.phase = state.remaining === 0 ? 'type' : 'body'
    // A PUBLISH body opens with its topic [MQTT-3.3.2-1]: checked as it passes.
    if (state.phase === 'body' && state.packetType === PACKET_TYPE_PUBLISH) {
      state.field = 'len'
      state.fieldLength = 0
      state.fieldLengthBytes = 0
      state.fieldParts = []
      state.fieldGot = 0
    }
  }
  return OK
}

/**
 * Reads the current UTF-8 string field from `chunk` at `i`; when it is whole,
 * checks it: well-formed UTF-8, encoded surrogates refused [MQTT-1.5.3-1], no
 * U+0000 [MQTT-1.5.3-2] [MQTT-4.7.3-2]. mqtt-packet decodes the field as a JS
 * string, turning bad bytes into U+FFFD, so only the raw bytes can tell.
 */
function readField(state: ScanState, chunk: Uint8Array, i: number): { next: number; detail?: string } {
  if (state.field === 'len') {
    state.fieldLength = state.fieldLength * 256 + (chunk[i] as number)
    state.fieldLengthBytes++
    state.remaining--
    if (state.fieldLengthBytes === 2) state.field = state.fieldLength === 0 ? 'none' : 'bytes'
    return { next: i + 1 }
  }
  const take = Math.min(state.fieldLength - state.fieldGot, chunk.length - i, state.remaining)
  state.fieldParts.push(chunk.subarray(i, i + take))
  state.fieldGot += take
  state.remaining -= take
  if (state.fieldGot < state.fieldLength && state.remaining > 0) return { next: i + take }
  const bytes = state.fieldParts.length === 1 ? state.fieldParts[0]! : Buffer.concat(state.fieldParts)
  state.fieldParts = []
  state.field = 'none'
  if (!isUtf8(bytes)) return { next: i + take, detail: 'PUBLISH topic is not well-formed UTF-8 [MQTT-1.5.3-1]' }
  if (bytes.includes(0)) return { next: i + take, detail: 'PUBLISH topic contains U+0000 [MQTT-1.5.3-2]' }
  return { next: i + take }
}
