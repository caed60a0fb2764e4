import { describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { leakCheckedCleanups, rawConnect, remainingLength, startBroker, waitFor } from './broker.harness.js'

/**
 * Issue #15, part 2: the refusals MQTT 3.1.1 requires of a server, played as
 * raw packets over TCP (no MQTT library in the loop) against the broker the
 * hub runs. Each breaks one normative statement; the broker must close the
 * connection (a CONNECT of another protocol version hears CONNACK 1 first),
 * answer nothing else to it, and count it once as a violation. Beside them,
 * the packets closest to each rule that are fine, which must still work.
 */
const cleanups = leakCheckedCleanups()

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
const str = (v: string | Buffer) => { const b = typeof v === 'string' ? Buffer.from(v) : v; return Buffer.concat([u16(b.length), b]) }
const packet = (firstByte: number, ...body: Buffer[]) => { const b = Buffer.concat(body); return Buffer.concat([Buffer.from([firstByte]), remainingLength(b.length), b]) }

interface Connect { name?: string; level?: number; flags?: number; clientId?: string | Buffer; payload?: Buffer[] }
/** A CONNECT, anonymous with clean session unless told otherwise; `payload` follows the client id. */
const connect = (o: Connect = {}) => packet(0x10, str(o.name ?? 'MQTT'), Buffer.from([o.level ?? 4, o.flags ?? 0x02]), u16(30), str(o.clientId ?? 'raw-client'), ...(o.payload ?? []))

const CONNACK_OK = '20020000'
const CONNACK_1 = '20020001'
const PINGRESP = 'd000'

/** Sends the packets one by one; returns what came back, as hex, once the broker closed the connection. */
async function refused(packets: Buffer[]): Promise<{ received: string; violations: number }> {
  const { broker, port } = await startBroker(cleanups, { allowAnonymous: true })
  const raw = await rawConnect(cleanups, port)
  const [first, ...rest] = packets
  raw.socket.write(first!)
  // After a CONNECT, the packet under test goes once the connection is accepted.
  if (rest.length > 0) await waitFor(() => raw.received().toString('hex') === CONNACK_OK, 'CONNACK 0')
  for (const p of rest) raw.socket.write(p)
  // Bounded: a broker that takes the packet keeps the connection open.
  let timer: NodeJS.Timeout | undefined
  const open = new Promise<'open'>((resolve) => { timer = setTimeout(() => resolve('open'), 10_000) })
  const outcome = await Promise.race([raw.closed.then(() => 'closed' as const), open])
  clearTimeout(timer)
  expect(outcome, `still open after 10 s, having answered ${raw.received().toString('hex')}`).toBe('closed')
  await waitFor(() => broker.stats().violations > 0, 'the violation counted')
  return { received: raw.received().toString('hex'), violations: broker.stats().violations }
}

/**
 * Sends the packets; once the broker answered `expected` (hex, in any order
 * of whole packets), a PINGREQ must still get its PINGRESP: the connection
 * works, and no violation was counted.
 */
async function accepted(packets: Buffer[], expected: string[]): Promise<void> {
  const { broker, port } = await startBroker(cleanups, { allowAnonymous: true })
  const raw = await rawConnect(cleanups, port)
  let closed = false
  void raw.closed.then(() => { closed = true })
  for (const p of packets) raw.socket.write(p)
  const want = expected.join('').length
  const got = () => raw.received().toString('hex')
  await waitFor(() => got().length >= want || closed, `answers ${expected.join(' ')}`)
  expect(closed, `closed after ${got()}`).toBe(false)
  // Whole answers, each where it starts: order between different kinds of answer is the broker's.
  const answers = got()
  expect(answers.length).toBe(want)
  expect([...expected].sort()).toEqual(splitAnswers(answers).sort())
  raw.socket.write(Buffer.from([0xc0, 0x00]))
  await waitFor(() => got().endsWith(PINGRESP) || closed, 'PINGRESP')
  expect(closed).toBe(false)
  expect(broker.stats().violations).toBe(0)
}

/** Hex of a run of short packets (remaining length < 128), split into packets. */
function splitAnswers(hex: string): string[] {
  const out: string[] = []
  for (let i = 0; i < hex.length;) {
    const len = 4 + parseInt(hex.slice(i + 2, i + 4), 16) * 2
    out.push(hex.slice(i, i + len))
    i += len
  }
  return out
}

describe('CONNECT refusals', () => {
  it.each<[string, Buffer]>([
    ['MQTT 5 (level 5), whatever the client id [MQTT-3.1.2-2]', connect({ level: 5, clientId: 'dev-a' })],
    ['MQTT 3.1 (MQIsdp, level 3)', connect({ name: 'MQIsdp', level: 3 })],
    ['a protocol name other than MQTT [MQTT-3.1.2-1]', connect({ name: 'MQTX' })],
  ])('%s: CONNACK 1, then the close', async (_name, p) => {
    const r = await refused([p])
    expect(r.received).toBe(CONNACK_1)
    expect(r.violations).toBe(1)
  })

  it.each<[string, Buffer]>([
    ['bytes after the payload [MQTT-3.1.3-1]', connect({ payload: [Buffer.from([1, 2, 3])] })],
    ['a Will QoS of 3 [MQTT-3.1.2-14]', connect({ flags: 0x02 | 0x04 | 0x18, payload: [str('apps/will'), str('bye')] })],
    ['Will QoS 1 without the Will flag [MQTT-3.1.2-13]', connect({ flags: 0x02 | 0x08 })],
    ['Will retain without the Will flag [MQTT-3.1.2-15]', connect({ flags: 0x02 | 0x20 })],
    ['the Will flag without a Will topic and message [MQTT-3.1.2-9]', connect({ flags: 0x02 | 0x04 })],
    ['a password without a user name [MQTT-3.1.2-22]', connect({ flags: 0x02 | 0x40, payload: [str('secret')] })],
    ['the user name flag without a user name [MQTT-3.1.2-19]', connect({ flags: 0x02 | 0x80 })],
    ['the password flag without a password [MQTT-3.1.2-21]', connect({ flags: 0x02 | 0x80 | 0x40, payload: [str('user')] })],
    ['the reserved flag set [MQTT-3.1.2-3]', connect({ flags: 0x03 })],
    ['a client id with U+0000 [MQTT-1.5.3-2]', connect({ clientId: Buffer.from('a\u0000b') })],
    ['a client id with an encoded surrogate [MQTT-1.5.3-1]', connect({ clientId: Buffer.from([0x61, 0xed, 0xa0, 0x80]) })],
    ['a client id of ill-formed UTF-8 [MQTT-1.5.3-1]', connect({ clientId: Buffer.from([0x61, 0xff]) })],
    ['a user name with U+0000', connect({ flags: 0x02 | 0x80, payload: [str(Buffer.from('u\u0000'))] })],
    ['a Will topic with a wildcard', connect({ flags: 0x02 | 0x04, payload: [str('apps/+'), str('bye')] })],
    ['a Will topic of ill-formed UTF-8', connect({ flags: 0x02 | 0x04, payload: [str(Buffer.from([0x61, 0xc0, 0x80])), str('bye')] })],
  ])('%s: closed without a CONNACK', async (_name, p) => {
    const r = await refused([p])
    expect(r.received).toBe('')
    expect(r.violations).toBe(1)
  })

  it('still accepts the CONNECTs closest to those rules', async () => {
    // A real U+FFFD in the client id; a Will at QoS 2 (anonymous clients may not retain one: the ACL's CONNACK 5).
    await accepted([connect({ clientId: 'a\ufffd' })], [CONNACK_OK])
    await accepted([connect({ flags: 0x02 | 0x04 | 0x10, payload: [str('apps/will'), str('bye')] })], [CONNACK_OK])
  })
})

describe('refusals after the CONNECT', () => {
  const ok = connect()
  it.each<[string, Buffer]>([
    ['a PUBLISH topic with + [MQTT-3.3.2-2]', packet(0x30, str('apps/+'), Buffer.from('x'))],
    ['a PUBLISH topic with #', packet(0x30, str('apps/#'), Buffer.from('x'))],
    ['an empty PUBLISH topic [MQTT-4.7.3-1]', packet(0x30, str(''), Buffer.from('x'))],
    ['a PUBLISH topic with U+0000 [MQTT-1.5.3-2]', packet(0x30, str(Buffer.from('apps/\u0000')), Buffer.from('x'))],
    ['a QoS 1 PUBLISH with packet id 0 [MQTT-2.3.1-1]', packet(0x32, str('apps/x'), u16(0), Buffer.from('x'))],
    ['a QoS 2 PUBLISH with packet id 0', packet(0x34, str('apps/x'), u16(0), Buffer.from('x'))],
    ['a PUBLISH with QoS 3 [MQTT-3.3.1-4]', packet(0x36, str('apps/x'), u16(1), Buffer.from('x'))],
    ['a SUBSCRIBE with packet id 0', packet(0x82, u16(0), str('apps/x'), Buffer.from([0]))],
    ['a SUBSCRIBE without a filter [MQTT-3.8.3-3]', packet(0x82, u16(5))],
    ['a SUBSCRIBE filter with + inside a level [MQTT-4.7.1-3]', packet(0x82, u16(5), str('apps/a+'), Buffer.from([0]))],
    ['a SUBSCRIBE filter with # before its end [MQTT-4.7.1-2]', packet(0x82, u16(5), str('apps/#/x'), Buffer.from([0]))],
    ['a SUBSCRIBE filter with U+0000', packet(0x82, u16(5), str(Buffer.from('apps/\u0000')), Buffer.from([0]))],
    ['a SUBSCRIBE requesting QoS 3 [MQTT-3.8.3-4]', packet(0x82, u16(5), str('apps/x'), Buffer.from([3]))],
    ['an UNSUBSCRIBE with packet id 0', packet(0xa2, u16(0), str('apps/x'))],
    ['an UNSUBSCRIBE without a filter [MQTT-3.10.3-2]', packet(0xa2, u16(5))],
    ['an UNSUBSCRIBE with an invalid filter', packet(0xa2, u16(5), str('a#'))],
    ['a PINGREQ with a body', Buffer.from([0xc0, 0x01, 0x00])],
    ['a SUBSCRIBE with reserved flags 0 [MQTT-3.8.1-1]', packet(0x80, u16(5), str('apps/x'), Buffer.from([0]))],
    ['a PUBREL with reserved flags 0 [MQTT-3.6.1-1]', packet(0x60, u16(5))],
    ['a PINGREQ with a reserved flag set [MQTT-2.2.2-2]', Buffer.from([0xc1, 0x00])],
    ['a PUBACK of 3 bytes', packet(0x40, u16(5), Buffer.from([0]))],
    ['a CONNACK, which only a server sends', Buffer.from([0x20, 0x02, 0x00, 0x00])],
    ['a packet of reserved type 15', Buffer.from([0xf0, 0x00])],
  ])('%s: closed, nothing answered', async (_name, p) => {
    const r = await refused([ok, p])
    expect(r.received).toBe(CONNACK_OK)
    expect(r.violations).toBe(1)
  })

  it('still takes the packets closest to those rules', async () => {
    // A QoS 1 PUBLISH with packet id 1: PUBACK 1. Wildcards that fill their levels: SUBACK 0, 1, 0.
    await accepted([ok, packet(0x32, str('apps/x'), u16(1), Buffer.from('x'))], [CONNACK_OK, '40020001'])
    const subscribe = packet(0x82, u16(9), str('apps/+/x'), Buffer.from([0]), str('apps/#'), Buffer.from([1]), str('x/+'), Buffer.from([0]))
    await accepted([ok, subscribe], [CONNACK_OK, '90050009000100'])
    await accepted([ok, packet(0xa2, u16(10), str('apps/#'))], [CONNACK_OK, 'b002000a'])
  })

  it('completes an inbound QoS 2 flow, a DUP resend included, delivering the message once [MQTT-4.3.3]', async () => {
    const { broker, port, url } = await startBroker(cleanups, { allowAnonymous: true })
    const sub = await mqtt.connectAsync(url, { clientId: 'sub-1', reconnectPeriod: 0, keepalive: 30 })
    cleanups.add(() => sub.endAsync(true))
    const got: string[] = []
    sub.on('message', (topic, payload, p) => got.push(`${topic} ${payload.toString()} qos ${p.qos}`))
    await sub.subscribeAsync('apps/#', { qos: 2 })
    const raw = await rawConnect(cleanups, port)
    const answers = () => raw.received().toString('hex')
    raw.socket.write(connect({ clientId: 'pub-1' }))
    await waitFor(() => answers() === CONNACK_OK, 'CONNACK')
    raw.socket.write(packet(0x34, str('apps/q2'), u16(5), Buffer.from('one')))
    await waitFor(() => answers() === `${CONNACK_OK}50020005`, 'PUBREC 5')
    // The sender did not hear the PUBREC (as far as it knows): the same PUBLISH again, DUP set.
    raw.socket.write(packet(0x3c, str('apps/q2'), u16(5), Buffer.from('one')))
    await waitFor(() => answers() === `${CONNACK_OK}5002000550020005`, 'PUBREC 5 again')
    raw.socket.write(packet(0x62, u16(5)))
    await waitFor(() => answers() === `${CONNACK_OK}500200055002000570020005`, 'PUBCOMP 5')
    await waitFor(() => got.length > 0, 'the message at the subscriber')
    // One more message through the same subscriber: anything duplicated would have arrived before it.
    raw.socket.write(packet(0x30, str('apps/after'), Buffer.from('two')))
    await waitFor(() => got.length >= 2, 'the next message')
    expect(got).toEqual(['apps/q2 one qos 2', 'apps/after two qos 0'])
    expect(broker.stats().violations).toBe(0)
  })

  it('handles unsolicited acknowledgements without stalling: PUBACK and PUBCOMP ignored, PUBREC and PUBREL answered', async () => {
    // PUBREC 8 is answered with PUBREL 8, PUBREL 9 with PUBCOMP 9 [MQTT-4.3.3]; a PINGREQ after them with its PINGRESP.
    await accepted([connect(), packet(0x40, u16(7)), packet(0x50, u16(8)), packet(0x62, u16(9)), packet(0x70, u16(10))], [CONNACK_OK, '62020008', '70020009'])
  })
})
