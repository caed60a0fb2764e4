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
}

export type ScanVerdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: 'PAYLOAD_TOO_LARGE'; readonly packetType: number; readonly remainingLength: number }
  | { readonly ok: false; readonly code: 'MALFORMED_PACKET'; readonly packetType: number; readonly remainingLength: number }

const OK: ScanVerdict = { ok: true }

export function newScanState(): ScanState {
  return { phase: 'type', packetType: 0, remaining: 0, multiplier: 1, lengthBytes: 0, disconnectSeen: false }
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
  }
  return OK
}
