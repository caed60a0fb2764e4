import { checkBody, checkedWhole, checkFixedHeader, topicNameProblem, type RuleVerdict } from './packet-rules.js'

/**
 * Walks the MQTT fixed headers of an inbound byte stream without buffering it,
 * so an oversized packet is refused when its header arrives, not after the
 * parser (mqtt-packet, which has no size limit) has collected the whole body.
 * On the way it applies MQTT 3.1.1's rules for what a client may send
 * (packet-rules.ts): every fixed header, a PUBLISH's topic and packet id, and
 * the whole bodies of CONNECT, SUBSCRIBE and UNSUBSCRIBE (small and rare;
 * the only packets it buffers, within the same size limit).
 *
 * States, per packet (MQTT 3.1.1 §2.2):
 *   type    the first byte: packet type in the high nibble, flags in the low one
 *   length  1 to 4 bytes of "remaining length", 7 bits each, high bit = more follow
 *   body    `remaining` bytes to skip (or collect, or read a field of) before the next packet's type byte
 *
 * The state is a plain object mutated in place: this runs on every inbound
 * chunk of every client, so on the PUBLISH path it allocates nothing but the
 * topic's pieces and costs O(packets), not O(bytes), per chunk.
 */

export const PACKET_TYPE_CONNECT = 1
export const PACKET_TYPE_PUBLISH = 3
export const PACKET_TYPE_DISCONNECT = 14

export interface ScanState {
  phase: 'type' | 'length' | 'body'
  packetType: number
  flags: number
  remaining: number
  multiplier: number
  lengthBytes: number
  /** A DISCONNECT header has gone by: the close that follows is the client's own. */
  disconnectSeen: boolean
  /**
   * The field being read at the start of a PUBLISH body: 'len' while its
   * topic's 2-byte length arrives, 'bytes' while its bytes do, which may span
   * chunks, 'pid' while the packet id of a QoS 1 or 2 PUBLISH does; 'none'
   * otherwise.
   */
  field: 'none' | 'len' | 'bytes' | 'pid'
  fieldLength: number
  fieldLengthBytes: number
  fieldParts: Uint8Array[]
  fieldGot: number
  /** The body is collected whole for its check (checkedWhole): its pieces so far. */
  collecting: boolean
  bodyParts: Uint8Array[]
}

export type ScanVerdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: 'PAYLOAD_TOO_LARGE'; readonly packetType: number; readonly remainingLength: number }
  | { readonly ok: false; readonly code: 'MALFORMED_PACKET'; readonly packetType: number; readonly remainingLength: number }
  | { readonly ok: false; readonly code: 'INVALID_UTF8'; readonly packetType: number; readonly remainingLength: number; readonly detail: string }
  /** A rule of packet-rules.ts; UNSUPPORTED_PROTOCOL is answered with CONNACK 1 before the close. */
  | { readonly ok: false; readonly code: 'PROTOCOL_VIOLATION' | 'UNSUPPORTED_PROTOCOL'; readonly packetType: number; readonly remainingLength: number; readonly detail: string }

const OK: ScanVerdict = { ok: true }
const EMPTY = new Uint8Array(0)

export function newScanState(): ScanState {
  return {
    phase: 'type', packetType: 0, flags: 0, remaining: 0, multiplier: 1, lengthBytes: 0, disconnectSeen: false,
    field: 'none', fieldLength: 0, fieldLengthBytes: 0, fieldParts: [], fieldGot: 0, collecting: false, bodyParts: [],
  }
}

function refusal(state: ScanState, rule: NonNullable<RuleVerdict>): ScanVerdict {
  return { ok: false, code: rule.code, packetType: state.packetType, remainingLength: state.remaining, detail: rule.detail }
}

/**
 * Advances `state` over `chunk`. Returns a refusal as soon as a header
 * announces a remaining length above `maxRemainingLength`, or a length field
 * longer than 4 bytes [MQTT-2.2.3], or a packet breaks a rule of
 * packet-rules.ts; after a refusal the state is undefined and the connection
 * must be dropped.
 */
export function scanChunk(state: ScanState, chunk: Uint8Array, maxRemainingLength: number): ScanVerdict {
  let i = 0
  const n = chunk.length
  while (i < n) {
    if (state.phase === 'body' && state.field !== 'none') {
      const bad = readField(state, chunk, i)
      i = bad.next
      if (bad.detail !== undefined) {
        return { ok: false, code: bad.utf8 ? 'INVALID_UTF8' : 'PROTOCOL_VIOLATION', packetType: state.packetType, remainingLength: state.remaining, detail: bad.detail }
      }
      if (state.remaining === 0) { state.phase = 'type'; state.field = 'none' }
      continue
    }
    if (state.phase === 'body') {
      const take = Math.min(state.remaining, n - i)
      if (state.collecting) state.bodyParts.push(chunk.subarray(i, i + take))
      i += take
      state.remaining -= take
      if (state.remaining === 0) {
        state.phase = 'type'
        if (state.collecting) {
          const body = state.bodyParts.length === 1 ? state.bodyParts[0]! : Buffer.concat(state.bodyParts)
          state.bodyParts = []
          state.collecting = false
          const rule = checkBody(state.packetType, body)
          if (rule !== undefined) return refusal(state, rule)
        }
      }
      continue
    }
    const byte = chunk[i++] as number
    if (state.phase === 'type') {
      state.packetType = byte >> 4
      state.flags = byte & 0x0f
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
    const header = checkFixedHeader(state.packetType, state.flags, state.remaining)
    if (header !== undefined) return refusal(state, header)
    state.phase = state.remaining === 0 ? 'type' : 'body'
    if (state.phase === 'type') {
      // A whole-body packet with no body at all: its check says what is missing.
      if (checkedWhole(state.packetType)) {
        const rule = checkBody(state.packetType, EMPTY)
        if (rule !== undefined) return refusal(state, rule)
      }
      continue
    }
    if (checkedWhole(state.packetType)) {
      state.collecting = true
      state.bodyParts = []
    } else if (state.packetType === PACKET_TYPE_PUBLISH) {
      // A PUBLISH body opens with its topic [MQTT-3.3.2-1]: checked as it passes.
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
 * Reads the current field of a PUBLISH from `chunk` at `i`: its topic, then
 * (QoS 1 and 2) its packet id. The topic, once whole, must be well-formed
 * UTF-8 with no encoded surrogates [MQTT-1.5.3-1] and no U+0000
 * [MQTT-1.5.3-2] [MQTT-4.7.3-2] (mqtt-packet decodes it as a JS string,
 * turning bad bytes into U+FFFD, so only the raw bytes can tell), non-empty
 * and without wildcards; the packet id must not be 0 [MQTT-2.3.1-1].
 */
function readField(state: ScanState, chunk: Uint8Array, i: number): { next: number; detail?: string; utf8?: boolean } {
  if (state.field === 'len' || state.field === 'pid') {
    state.fieldLength = state.fieldLength * 256 + (chunk[i] as number)
    state.fieldLengthBytes++
    state.remaining--
    if (state.fieldLengthBytes < 2) return { next: i + 1 }
    if (state.field === 'pid') {
      state.field = 'none'
      return state.fieldLength === 0 ? { next: i + 1, detail: 'PUBLISH with QoS > 0 and packet id 0 [MQTT-2.3.1-1]' } : { next: i + 1 }
    }
    if (state.fieldLength === 0) return { next: i + 1, ...topicNameProblem(EMPTY) }
    state.field = 'bytes'
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
  const bad = topicNameProblem(bytes)
  if (bad !== undefined) return { next: i + take, ...bad }
  if (((state.flags >> 1) & 3) > 0) {
    if (state.remaining < 2) return { next: i + take, detail: 'PUBLISH with QoS > 0 ends before its packet id' }
    state.field = 'pid'
    state.fieldLength = 0
    state.fieldLengthBytes = 0
  }
  return { next: i + take }
}
