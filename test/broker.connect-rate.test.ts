import { describe, expect, it } from 'vitest'
import { connect as netConnect } from 'node:net'
import { manualClock } from '../common/clock.js'
import { connectPacket, credentialsFrom, HOST, leakCheckedCleanups, startBroker } from './broker.harness.js'

/**
 * M14d: the connect rate is charged to the client that spends it. A device
 * reconnecting in a loop is refused from its own bucket; the global bucket is
 * only the last line, and a whole fleet reconnecting at once is admitted at
 * the global rate. The broker's clock is a manual one, so the buckets refill
 * exactly as the test says, however fast this machine is.
 */

const cleanups = leakCheckedCleanups()

const FLEET = Array.from({ length: 150 }, (_, i) => `fleet-${String(i).padStart(3, '0')}`)
const TOKENS: Record<string, string> = { 'dev-loop': 'token-loop', 'dev-other': 'token-other' }
for (const id of FLEET) TOKENS[id] = `token-${id}`

/** One CONNECT on a fresh socket (raw bytes: thousands of them, quickly); resolves with the CONNACK return code. */
function connack(port: number, id: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: HOST, port })
    let got = Buffer.alloc(0)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no CONNACK for ${id} within 30 s`))
    }, 30_000)
    socket.on('error', () => undefined)
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length < 4) return
      clearTimeout(timer)
      socket.destroy()
      resolve(got[3]!)
    })
    socket.on('close', () => {
      clearTimeout(timer)
      if (got.length < 4) reject(new Error(`connection of ${id} closed before its CONNACK`))
    })
    socket.write(connectPacket({ clientId: id, username: id, password: TOKENS[id] }))
  })
}

const options = (clock: ReturnType<typeof manualClock>) => ({
  clock, checkCredentials: credentialsFrom(TOKENS), maxConnections: 1000, maxPendingConnections: 500, maxPendingPerAddress: 500,
  connectRatePerSec: 50, connectBurst: 100, clientConnectRatePerSec: 1, clientConnectBurst: 10,
})

describe('connect rate per client (M14d)', () => {
  it('a device reconnecting in a loop is refused from its own bucket; another device connecting repeatedly never is', async () => {
    const clock = manualClock(Date.now())
    const { broker, port } = await startBroker(cleanups, options(clock))
    const loopCodes: number[] = []
    const otherCodes: number[] = []
    // 3,000 CONNECTs over 15 s of the broker's clock (200/s, four times the global rate);
    // the other device connects once a second of that clock, within its own rate.
    for (let i = 0; i < 3000; i++) {
      loopCodes.push(await connack(port, 'dev-loop'))
      clock.advance(5)
      if (i % 200 === 199) otherCodes.push(await connack(port, 'dev-other'))
    }
    expect(otherCodes).toEqual(Array.from({ length: 15 }, () => 0))
    // The loop got its burst and then about one CONNECT a second: 10 + 15, give or take the last refill.
    const admitted = loopCodes.filter((c) => c === 0).length
    expect(admitted).toBeGreaterThanOrEqual(10)
    expect(admitted).toBeLessThanOrEqual(26)
    expect(loopCodes.filter((c) => c !== 0).every((c) => c === 3)).toBe(true)
    expect(broker.stats().limits).toMatchObject({ clientRate: 3000 - admitted, globalRate: 0 })
  }, 30_000)

  it('a fleet reconnecting at once is admitted at the global rate, whatever one looping device does', async () => {
    const clock = manualClock(Date.now())
    const { broker, port } = await startBroker(cleanups, options(clock))
    // A device in a reconnect loop first: 1,000 CONNECTs within one second of the broker's clock.
    for (let i = 0; i < 1000; i++) {
      await connack(port, 'dev-loop')
      clock.advance(1)
    }
    // Then 150 devices at once, as after a hub restart; refused ones retry a second later.
    let waiting = [...FLEET]
    const admittedPerRound: number[] = []
    for (let round = 0; round < 5 && waiting.length > 0; round++) {
      const codes = await Promise.all(waiting.map((id) => connack(port, id)))
      expect(codes.every((c) => c === 0 || c === 3)).toBe(true)
      admittedPerRound.push(codes.filter((c) => c === 0).length)
      waiting = waiting.filter((_, i) => codes[i] !== 0)
      clock.advance(1000)
    }
    expect(waiting).toEqual([])
    // The loop took at most its own burst of 10 global tokens: the burst of 100 (less those) at once,
    // then the global rate of 50 a second for the rest; no fleet device was refused by its own bucket.
    expect(admittedPerRound[0]).toBeGreaterThanOrEqual(89)
    expect(admittedPerRound.length).toBe(2)
    expect(broker.stats().limits.globalRate).toBe(150 - admittedPerRound[0]!)
  }, 30_000)
})
