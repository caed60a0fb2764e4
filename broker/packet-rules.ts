import { isUtf8 } from 'node:buffer'

/**
 * What MQTT 3.1.1 says a client may send, checked on the raw bytes before
 * aedes parses them (issue #15). aedes and mqtt-packet accept some packets
 * the specification says a server must refuse (a Will QoS of 3, a password
 * without a username, bytes after a CONNECT's payload, a packet id of 0,
 * ill-formed UTF-8 decoded to U+FFFD, a topic filter with `+` inside a
 * level, a PINGREQ with a body), and answer a CONNECT of another protocol
 * version by closing without the CONNACK 1 the specification asks for. The
 * header scanner (header-scanner.ts) calls these as packets pass; a verdict
 * closes the connection, and names the rule broken.
 *
 * Only what a client sends is checked: the CONNECT, SUBSCRIBE and
 * UNSUBSCRIBE bodies whole (they are small and rare), a PUBLISH's topic and
 * packet id (its payload is the application's), and every fixed header.
 */

export type RuleVerdict =
  | undefined
  /** Close the connection. */
  | { readonly code: 'PROTOCOL_VIOLATION'; readonly detail: string }
  /** Answer CONNACK 1 (unacceptable protocol version), then close [MQTT-3.1.2-2]. */
  | { readonly code: 'UNSUPPORTED_PROTOCOL'; readonly detail: string }

export const TYPE = {
  CONNECT: 1, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7, SUBSCRIBE: 8, UNSUBSCRIBE: 10, PINGREQ: 12, DISCONNECT: 14,
} as const

const NAMES = ['reserved (0)', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP', 'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ', 'PINGRESP', 'DISCONNECT', 'reserved (15)']

/** The fixed-header flags of each packet type a client sends [MQTT-2.2.2-1]; PUBLISH carries its own. */
const FLAGS: Readonly<Record<number, number>> = { 1: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 10: 2, 12: 0, 14: 0 }

/** Remaining length fixed by the specification for these types (3.1.1 has no properties). */
const FIXED_LENGTH: Readonly<Record<number, number>> = { 4: 2, 5: 2, 6: 2, 7: 2, 12: 0, 14: 0 }

/** The packet types whose bodies are checked whole. */
export function checkedWhole(type: number): boolean {
  return type === TYPE.CONNECT || type === TYPE.SUBSCRIBE || type === TYPE.UNSUBSCRIBE
}

const violation = (detail: string): RuleVerdict => ({ code: 'PROTOCOL_VIOLATION', detail })

/** A fixed header, once its remaining length is known. */
export function checkFixedHeader(type: number, flags: number, remaining: number): RuleVerdict {
  const name = NAMES[type]!
  if (type === TYPE.PUBLISH) {
    if (((flags >> 1) & 3) === 3) return violation('PUBLISH with QoS 3 [MQTT-3.3.1-4]')
    return undefined
  }
  const required = FLAGS[type]
  if (required === undefined) return violation(`${name} is not a packet a client sends [MQTT-2.2.1]`)
  if (flags !== required) return violation(`${name} with fixed-header flags ${flags}, not ${required} [MQTT-2.2.2-2]`)
  const fixed = FIXED_LENGTH[type]
  if (fixed !== undefined && remaining !== fixed) return violation(`${name} with a remaining length of ${remaining}, not ${fixed} [MQTT-2.2.3]`)
  return undefined
}

/** The checks on one UTF-8 string field [MQTT-1.5.3-1] [MQTT-1.5.3-2]; `what` names it. */
export function utf8Problem(bytes: Uint8Array, what: string): string | undefined {
  if (!isUtf8(bytes)) return `${what} is not well-formed UTF-8 [MQTT-1.5.3-1]`
  if (bytes.includes(0)) return `${what} contains U+0000 [MQTT-1.5.3-2]`
  return undefined
}

/**
 * A topic name (a PUBLISH's, a Will's): a valid string [MQTT-1.5.3-1]
 * [MQTT-1.5.3-2] (`utf8`: the problem is its encoding), not empty
 * [MQTT-4.7.3-1], no wildcards [MQTT-3.3.2-2].
 */
export function topicNameProblem(bytes: Uint8Array): { readonly detail: string; readonly utf8: boolean } | undefined {
  const bad = utf8Problem(bytes, 'PUBLISH topic')
  if (bad !== undefined) return { detail: bad, utf8: true }
  if (bytes.length === 0) return { detail: 'PUBLISH topic is empty [MQTT-4.7.3-1]', utf8: false }
  if (bytes.includes(0x2b) || bytes.includes(0x23)) return { detail: 'PUBLISH topic contains a wildcard (+ or #) [MQTT-3.3.2-2]', utf8: false }
  return undefined
}

/** A topic filter: a valid, non-empty string whose wildcards each fill a whole level, `#` only last [MQTT-4.7.1-2] [MQTT-4.7.1-3]. */
export function topicFilterProblem(bytes: Uint8Array): string | undefined {
  const bad = utf8Problem(bytes, 'topic filter')
  if (bad !== undefined) return bad
  if (bytes.length === 0) return 'empty topic filter [MQTT-4.7.3-1]'
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]
    if (c !== 0x2b && c !== 0x23) continue
    const alone = (i === 0 || bytes[i - 1] === 0x2f) && (i === bytes.length - 1 || bytes[i + 1] === 0x2f)
    if (!alone) return `topic filter with ${c === 0x23 ? '#' : '+'} inside a level [MQTT-4.7.1-${c === 0x23 ? 2 : 3}]`
    if (c === 0x23 && i !== bytes.length - 1) return 'topic filter with # before its last level [MQTT-4.7.1-2]'
  }
  return undefined
}

/** Reads length-prefixed fields off a packet body. */
class Reader {
  private at = 0
  constructor(private readonly body: Uint8Array) {}

  get left(): number {
    return this.body.length - this.at
  }

  u8(): number | undefined {
    return this.at < this.body.length ? this.body[this.at++] : undefined
  }

  u16(): number | undefined {
    if (this.left < 2) return undefined
    const v = this.body[this.at]! * 256 + this.body[this.at + 1]!
    this.at += 2
    return v
  }

  /** A 2-byte length and that many bytes; undefined when the body ends first. */
  field(): Uint8Array | undefined {
    const n = this.u16()
    if (n === undefined || this.left < n) return undefined
    const v = this.body.subarray(this.at, this.at + n)
    this.at += n
    return v
  }
}

const MQTT = Buffer.from('MQTT')

/** A CONNECT's variable header and payload [MQTT-3.1]. */
export function checkConnect(body: Uint8Array): RuleVerdict {
  const r = new Reader(body)
  const name = r.field()
  const level = r.u8()
  if (name === undefined || level === undefined) return violation('CONNECT too short for its protocol name and level')
  if (!MQTT.equals(name) || level !== 4) {
    const proto = `${Buffer.from(name).toString('latin1')} level ${level}`
    return { code: 'UNSUPPORTED_PROTOCOL', detail: `protocol ${proto}${level === 5 ? ' (MQTT 5)' : level === 3 ? ' (MQTT 3.1)' : ''}: this broker speaks MQTT 3.1.1 (MQTT level 4) only [MQTT-3.1.2-2]` }
  }
  const flags = r.u8()
  if (flags === undefined || r.u16() === undefined) return violation('CONNECT too short for its flags and keepalive')
  if ((flags & 0x01) !== 0) return violation('CONNECT with its reserved flag set [MQTT-3.1.2-3]')
  const will = (flags & 0x04) !== 0
  const willQos = (flags >> 3) & 3
  const willRetain = (flags & 0x20) !== 0
  const hasUser = (flags & 0x80) !== 0
  const hasPassword = (flags & 0x40) !== 0
  if (!will && (willQos !== 0 || willRetain)) return violation('CONNECT with Will QoS or Will retain set but no Will [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]')
  if (willQos === 3) return violation('CONNECT with a Will QoS of 3 [MQTT-3.1.2-14]')
  if (!hasUser && hasPassword) return violation('CONNECT with a password but no user name [MQTT-3.1.2-22]')

  const clientId = r.field()
  if (clientId === undefined) return violation('CONNECT without its client id [MQTT-3.1.3-3]')
  const badId = utf8Problem(clientId, 'client id')
  if (badId !== undefined) return violation(badId)
  if (will) {
    const topic = r.field()
    if (topic === undefined || r.field() === undefined) return violation('CONNECT with the Will flag but no Will topic and message [MQTT-3.1.2-9]')
    const badTopic = topicNameProblem(topic)
    if (badTopic !== undefined) return violation(`Will: ${badTopic.detail}`)
  }
  if (hasUser) {
    const user = r.field()
    if (user === undefined) return violation('CONNECT with the user name flag but no user name [MQTT-3.1.2-19]')
    const badUser = utf8Problem(user, 'user name')
    if (badUser !== undefined) return violation(badUser)
  }
  if (hasPassword && r.field() === undefined) return violation('CONNECT with the password flag but no password [MQTT-3.1.2-21]')
  if (r.left > 0) return violation(`${r.left} bytes after the CONNECT payload [MQTT-3.1.3-1]`)
  return undefined
}

/**
 * A SUBSCRIBE's [MQTT-3.8] or an UNSUBSCRIBE's [MQTT-3.10] packet id and
 * filters; a SUBSCRIBE's each with a requested QoS.
 */
function checkFilterList(body: Uint8Array, name: 'SUBSCRIBE' | 'UNSUBSCRIBE'): RuleVerdict {
  const withQos = name === 'SUBSCRIBE'
  const r = new Reader(body)
  const id = r.u16()
  if (id === undefined || id === 0) return violation(`${name} with packet id 0 [MQTT-2.3.1-1]`)
  if (r.left === 0) return violation(`${name} without a topic filter [MQTT-${withQos ? '3.8.3-3' : '3.10.3-2'}]`)
  while (r.left > 0) {
    const filter = r.field()
    const qos = withQos ? r.u8() : 0
    if (filter === undefined || qos === undefined) return violation(`${name} ends inside a topic filter${withQos ? ' and its QoS' : ''}`)
    const bad = topicFilterProblem(filter)
    if (bad !== undefined) return violation(bad)
    if (qos > 2) return violation(`SUBSCRIBE requesting QoS byte ${qos} [MQTT-3.8.3-4]`)
  }
  return undefined
}

export const checkSubscribe = (body: Uint8Array): RuleVerdict => checkFilterList(body, 'SUBSCRIBE')
export const checkUnsubscribe = (body: Uint8Array): RuleVerdict => checkFilterList(body, 'UNSUBSCRIBE')

/** The whole-body check for `type` (see checkedWhole). */
export function checkBody(type: number, body: Uint8Array): RuleVerdict {
  if (type === TYPE.CONNECT) return checkConnect(body)
  if (type === TYPE.SUBSCRIBE) return checkSubscribe(body)
  return checkUnsubscribe(body)
}
