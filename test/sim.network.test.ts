import { afterEach, describe, expect, it } from 'vitest'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { NetworkSimulator } from '../devices-sim/network.js'
import { expectNoLeaks, resourceCounts } from './support/leaks.js'

/**
 * The network simulator against a plain TCP echo server (no broker needed):
 * what matters is what happens to the sockets.
 */

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

interface Echo {
  readonly port: number
  readonly accepted: () => number
}

/** An echo server; with a prefix, replies `${prefix}${data}` so tests can tell two targets apart. */
async function startEcho(prefix = ''): Promise<Echo> {
  const sockets = new Set<Socket>()
  let accepted = 0
  const server: Server = createServer((s) => {
    accepted++
    sockets.add(s)
    s.on('error', () => undefined).on('close', () => sockets.delete(s))
    s.on('data', (d) => s.write(prefix === '' ? d : prefix + d.toString()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  cleanups.push(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { port, accepted: () => accepted }
}

async function startNetwork(targetPort: number, deviceIds: string[]): Promise<NetworkSimulator> {
  const network = await NetworkSimulator.start({ targetPort, deviceIds })
  cleanups.push(() => network.close())
  return network
}

/** A client connection to a device's port, with what it has received and whether it closed. */
interface Client {
  readonly socket: Socket
  received(): string
  closed: Promise<void>
  /** Sends text and waits until `expected` has arrived. */
  roundTrip(text: string, expected?: string): Promise<void>
}

async function open(port: number): Promise<Client> {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => undefined)
  let data = ''
  socket.on('data', (d: Buffer) => { data += d.toString() })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  cleanups.push(async () => { socket.destroy(); await closed })
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  return {
    socket,
    received: () => data,
    closed,
    async roundTrip(text, expected = text) {
      const before = data.length
      socket.write(text)
      const deadline = Date.now() + 10_000
      while (!data.slice(before).includes(expected)) {
        if (Date.now() > deadline) throw new Error(`no echo of ${text}; got ${JSON.stringify(data.slice(before))}`)
        await new Promise((r) => setTimeout(r, 5))
      }
    },
  }
}

/** Resolves true if the promise settles within ms, false otherwise. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
  const result = await Promise.race([promise.then(() => true), timeout])
  clearTimeout(timer)
  return result
}

describe('NetworkSimulator', () => {
  it('gives each device its own port, piped to the target', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a', 'dev-b'])
    expect(network.portFor('dev-a')).not.toBe(network.portFor('dev-b'))
    expect(network.urlFor('dev-a')).toBe(`mqtt://127.0.0.1:${network.portFor('dev-a')}`)
    const a = await open(network.portFor('dev-a'))
    const b = await open(network.portFor('dev-b'))
    await a.roundTrip('hello')
    await b.roundTrip('world')
    expect(network.statsFor('dev-a')).toMatchObject({ connections: 1, live: 1, bytesUp: 5, bytesDown: 5, cut: false })
    expect(() => network.urlFor('dev-c')).toThrow(/dev-c has no link/)
  })

  it('cut destroys the live connection and refuses new ones until restore; other devices carry on', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a', 'dev-b'])
    const a = await open(network.portFor('dev-a'))
    const b = await open(network.portFor('dev-b'))
    await a.roundTrip('one')
    network.cut(['dev-a'])
    expect(await within(a.closed, 1000)).toBe(true)
    expect(network.isCut('dev-a')).toBe(true)
    // A new connection is accepted by the kernel, then closed before anything reaches the target.
    const acceptedBefore = echo.accepted()
    const refused = await open(network.portFor('dev-a'))
    refused.socket.write('lost')
    expect(await within(refused.closed, 1000)).toBe(true)
    expect(refused.received()).toBe('')
    expect(echo.accepted()).toBe(acceptedBefore)
    await b.roundTrip('still here')
    network.restore(['dev-a'])
    const again = await open(network.portFor('dev-a'))
    await again.roundTrip('back')
    expect(network.statsFor('dev-a')).toMatchObject({ connections: 2, refused: 1, cuts: 1, killed: 1, live: 1, cut: false })
  })

  it('cutting a cut link counts once', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a'])
    network.cut(['dev-a'])
    network.cut(['dev-a'])
    expect(network.statsFor('dev-a').cuts).toBe(1)
  })

  it('cuts for different reasons hold the link until each is restored; restore without a reason lifts them all', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a'])
    network.cut(['dev-a'], 'profile')
    network.cut(['dev-a'], 'partition')
    network.restore(['dev-a'], 'profile')
    expect(network.isCut('dev-a')).toBe(true)
    const refused = await open(network.portFor('dev-a'))
    expect(await within(refused.closed, 1000)).toBe(true)
    network.restore(['dev-a'], 'partition')
    expect(network.isCut('dev-a')).toBe(false)
    await (await open(network.portFor('dev-a'))).roundTrip('open')
    network.cut(['dev-a'], 'profile')
    network.cut(['dev-a'], 'partition')
    network.restore(['dev-a'])
    expect(network.isCut('dev-a')).toBe(false)
    expect(network.statsFor('dev-a').cuts).toBe(2)
  })

  it('drop destroys live connections once and lets the device straight back in (a reconnect burst)', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a', 'dev-b', 'dev-c'])
    const clients = await Promise.all(['dev-a', 'dev-b', 'dev-c'].map((id) => open(network.portFor(id))))
    await Promise.all(clients.map((c, i) => c.roundTrip(`hi ${i}`)))
    expect(network.drop(['dev-a', 'dev-b'])).toBe(2)
    expect(await within(Promise.all([clients[0]!.closed, clients[1]!.closed]), 1000)).toBe(true)
    expect(await within(clients[2]!.closed, 100)).toBe(false)
    const back = await open(network.portFor('dev-a'))
    await back.roundTrip('again')
    expect(network.isCut('dev-a')).toBe(false)
  })

  it('a target that is down closes the device connection (the agent sees a failed connect and backs off)', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a'])
    // Nothing listens on the retargeted port: take a free one and close it.
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const address = probe.address()
    const deadPort = typeof address === 'object' && address ? address.port : 0
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    network.retarget(deadPort)
    const c = await open(network.portFor('dev-a'))
    expect(await within(c.closed, 1000)).toBe(true)
    expect(network.statsFor('dev-a').live).toBe(0)
  })

  it('retarget sends new connections to the new port and leaves live ones alone', async () => {
    const first = await startEcho()
    const second = await startEcho('2:')
    const network = await startNetwork(first.port, ['dev-a'])
    const old = await open(network.portFor('dev-a'))
    await old.roundTrip('x')
    network.retarget(second.port)
    expect(network.targetAddress.port).toBe(second.port)
    const fresh = await open(network.portFor('dev-a'))
    await fresh.roundTrip('y', '2:y')
    await old.roundTrip('z')
    expect(old.received()).toBe('xz')
  })

  it('counts bytes each way, live and closed, and sums them over the fleet', async () => {
    const echo = await startEcho('>')
    const network = await startNetwork(echo.port, ['dev-a', 'dev-b'])
    const a = await open(network.portFor('dev-a'))
    await a.roundTrip('abcd', '>abcd')
    a.socket.destroy()
    await a.closed
    const b = await open(network.portFor('dev-b'))
    await b.roundTrip('xy', '>xy')
    // The close of a's relay pair is asynchronous; wait until it is counted.
    for (let i = 0; i < 1000 && network.statsFor('dev-a').live > 0; i++) await new Promise((r) => setTimeout(r, 10))
    expect(network.statsFor('dev-a')).toMatchObject({ bytesUp: 4, bytesDown: 5, live: 0 })
    expect(network.stats()).toMatchObject({ devices: 2, connections: 2, live: 1, bytesUp: 6, bytesDown: 8, cutNow: 0 })
  })

  it('adding a device twice is a no-op; a closed simulator refuses new devices; close is safe twice', async () => {
    const echo = await startEcho()
    const network = await startNetwork(echo.port, ['dev-a'])
    const port = network.portFor('dev-a')
    await network.add(['dev-a', 'dev-a', 'dev-b'])
    expect(network.portFor('dev-a')).toBe(port)
    expect(network.stats().devices).toBe(2)
    await network.close()
    await network.close()
    await expect(network.add(['dev-c'])).rejects.toThrow(/closed/)
  })

  it('holds 2,000 devices with a live connection each, and close leaves no handles behind', async () => {
    const echo = await startEcho()
    const baseline = resourceCounts()
    const ids = Array.from({ length: 2000 }, (_, i) => `dev-${i}`)
    const network = await NetworkSimulator.start({ targetPort: echo.port, deviceIds: ids })
    const clients: Client[] = []
    for (let i = 0; i < ids.length; i += 250) {
      clients.push(...(await Promise.all(ids.slice(i, i + 250).map((id) => open(network.portFor(id))))))
    }
    await Promise.all(clients.map((c, i) => c.roundTrip(`m${i};`)))
    expect(network.stats()).toMatchObject({ devices: 2000, connections: 2000, live: 2000 })
    network.cut(ids.slice(0, 600))
    await Promise.all(clients.slice(0, 600).map((c) => c.closed))
    expect(network.stats()).toMatchObject({ live: 1400, cutNow: 600, cuts: 600 })
    await network.close()
    await Promise.all(clients.map((c) => c.closed))
    await expectNoLeaks(baseline)
  })
})
