import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * The simulated network (issue #5): each simulated device reaches the hub
 * through its own TCP listener on loopback, so a partition is a real network
 * fault the agent's and the hub's real code must survive, not a flag either
 * of them could cheat on.
 *
 * A device's link is in one of two states:
 * - open: a connection to the device's port is piped to the hub's MQTT port;
 * - cut: live connections are destroyed (the hub sees its socket close, the
 *   agent reconnects with its backoff) and new ones are closed as soon as
 *   they are accepted, until `restore`.
 * A cut has a reason (default "cut"): the connectivity profile's outages and
 * a chaos partition can hold the same link, and the link opens only when no
 * reason holds it, so the end of a flaky outage cannot end a partition early.
 * `drop` destroys the live connections once and leaves the link open (a
 * reconnect burst). `retarget` points new connections at another hub port
 * (a hub restarted on a new port); live ones are left alone.
 *
 * Cost per device: one listening socket; per live connection, the two sockets
 * and Node's pipe. Bytes are counted from the sockets' own counters, so the
 * data path allocates nothing of ours.
 */

export interface NetworkOptions {
  /** The hub's MQTT port on `targetHost`. */
  readonly targetPort: number
  /** Default 127.0.0.1. */
  readonly targetHost?: string
}

export interface LinkCounters {
  /** Connections accepted and piped to the hub. */
  connections: number
  /** Connections closed at once because the link was cut. */
  refused: number
  /** Times the link was cut (a cut of a cut link does not count). */
  cuts: number
  /** Live connections destroyed by `cut` or `drop`. */
  killed: number
  /** Bytes from the device to the hub / from the hub to the device. */
  bytesUp: number
  bytesDown: number
}

export interface NetworkStats extends LinkCounters {
  devices: number
  /** Live device connections now. */
  live: number
  /** Devices whose link is cut now. */
  cutNow: number
}

interface Pair {
  readonly client: Socket
  readonly upstream: Socket
  /** Closes both sockets, leaves the link's set and adds the bytes to its counters; idempotent. */
  readonly finish: () => void
}

interface Link {
  readonly id: string
  readonly server: Server
  readonly port: number
  readonly pairs: Set<Pair>
  /** Reasons holding the link cut; open when empty. */
  readonly holds: Set<string>
  readonly counters: LinkCounters
}

const LOOPBACK = '127.0.0.1'

function zeroCounters(): LinkCounters {
  return { connections: 0, refused: 0, cuts: 0, killed: 0, bytesUp: 0, bytesDown: 0 }
}

export class NetworkSimulator {
  private readonly links = new Map<string, Link>()
  private targetPort: number
  private targetHost: string
  private closed = false

  constructor(options: NetworkOptions) {
    this.targetPort = options.targetPort
    this.targetHost = options.targetHost ?? LOOPBACK
  }

  /** A simulator with a listener for each of `deviceIds` already open. */
  static async start(options: NetworkOptions & { readonly deviceIds?: readonly string[] }): Promise<NetworkSimulator> {
    const network = new NetworkSimulator(options)
    try {
      await network.add(options.deviceIds ?? [])
    } catch (err) {
      await network.close()
      throw err
    }
    return network
  }

  /** Opens a listener for each new device (port 0: the OS picks). Adding a device twice is a no-op. */
  async add(deviceIds: readonly string[]): Promise<void> {
    if (this.closed) throw new Error('the network simulator is closed')
    // Listeners open in parallel batches: fast for thousands, without a burst of thousands of pending binds.
    const fresh = [...new Set(deviceIds)].filter((id) => !this.links.has(id))
    const BATCH = 256
    for (let i = 0; i < fresh.length; i += BATCH) {
      await Promise.all(fresh.slice(i, i + BATCH).map((id) => this.listen(id)))
    }
  }

  get targetAddress(): { host: string; port: number } {
    return { host: this.targetHost, port: this.targetPort }
  }

  has(deviceId: string): boolean {
    return this.links.has(deviceId)
  }

  portFor(deviceId: string): number {
    return this.link(deviceId).port
  }

  /** The MQTT URL the device's agent connects to. */
  urlFor(deviceId: string): string {
    return `mqtt://${LOOPBACK}:${this.portFor(deviceId)}`
  }

  isCut(deviceId: string): boolean {
    return this.link(deviceId).holds.size > 0
  }

  /**
   * Cuts the devices' links for `reason`: live connections are destroyed and
   * new ones refused until every reason holding the link is restored.
   */
  cut(deviceIds: Iterable<string>, reason = 'cut'): void {
    for (const id of deviceIds) {
      const link = this.link(id)
      if (link.holds.size === 0) {
        link.counters.cuts++
        this.killAll(link)
      }
      link.holds.add(reason)
    }
  }

  /** Lifts `reason`'s cut, or every cut when no reason is given; the link opens when nothing holds it. */
  restore(deviceIds: Iterable<string>, reason?: string): void {
    for (const id of deviceIds) {
      const link = this.link(id)
      if (reason === undefined) link.holds.clear()
      else link.holds.delete(reason)
    }
  }

  /** Destroys the devices' live connections once; they may reconnect at once. Returns how many were destroyed. */
  drop(deviceIds: Iterable<string>): number {
    let n = 0
    for (const id of deviceIds) n += this.killAll(this.link(id))
    return n
  }

  /** New connections go to this hub port from now on (a hub restarted elsewhere). */
  retarget(targetPort: number, targetHost = this.targetHost): void {
    this.targetPort = targetPort
    this.targetHost = targetHost
  }

  statsFor(deviceId: string): LinkCounters & { live: number; cut: boolean } {
    const link = this.link(deviceId)
    const c = { ...link.counters }
    for (const p of link.pairs) this.addBytes(c, p)
    return { ...c, live: link.pairs.size, cut: link.holds.size > 0 }
  }

  stats(): NetworkStats {
    const total: NetworkStats = { ...zeroCounters(), devices: this.links.size, live: 0, cutNow: 0 }
    for (const link of this.links.values()) {
      const c = link.counters
      total.connections += c.connections
      total.refused += c.refused
      total.cuts += c.cuts
      total.killed += c.killed
      total.bytesUp += c.bytesUp
      total.bytesDown += c.bytesDown
      total.live += link.pairs.size
      if (link.holds.size > 0) total.cutNow++
      for (const p of link.pairs) this.addBytes(total, p)
    }
    return total
  }

  /** Destroys every connection and closes every listener; safe to call twice. */
  async close(): Promise<void> {
    this.closed = true
    const links = [...this.links.values()]
    this.links.clear()
    for (const link of links) this.killAll(link)
    await Promise.all(links.map((link) => new Promise<void>((resolve) => link.server.close(() => resolve()))))
  }

  private link(deviceId: string): Link {
    const link = this.links.get(deviceId)
    if (!link) throw new Error(`device ${deviceId} has no link in the network simulator; add() it first`)
    return link
  }

  /** Bytes of a live pair, not yet in the counters (they are added when it closes). */
  private addBytes(into: LinkCounters, pair: Pair): void {
    into.bytesUp += pair.client.bytesRead
    into.bytesDown += pair.client.bytesWritten
  }

  private killAll(link: Link): number {
    const n = link.pairs.size
    link.counters.killed += n
    for (const pair of [...link.pairs]) pair.finish()
    return n
  }

  private async listen(id: string): Promise<void> {
    const server = createServer({ noDelay: true }, (client) => { this.accept(id, client) })
    // A listener error after start (none expected on loopback) must not crash the fleet.
    server.on('error', () => undefined)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, LOOPBACK, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const address = server.address()
    const port = typeof address === 'object' && address ? address.port : 0
    if (this.closed) {
      server.close()
      return
    }
    this.links.set(id, { id, server, port, pairs: new Set(), holds: new Set(), counters: zeroCounters() })
  }

  private accept(id: string, client: Socket): void {
    const link = this.links.get(id)
    client.on('error', () => undefined)
    if (!link || link.holds.size > 0) {
      if (link) link.counters.refused++
      client.destroy()
      return
    }
    link.counters.connections++
    // MQTT packets are small; Nagle on the relay would add up to 40 ms to every exchange.
    const upstream = connect({ port: this.targetPort, host: this.targetHost, noDelay: true })
    let done = false
    const finish = () => {
      if (done) return
      done = true
      client.destroy()
      upstream.destroy()
      link.pairs.delete(pair)
      this.addBytes(link.counters, pair)
    }
    const pair: Pair = { client, upstream, finish }
    link.pairs.add(pair)
    // Either side closing or failing (the hub is down: ECONNREFUSED) closes both, as a real link would.
    client.on('close', finish)
    upstream.on('error', () => undefined).on('close', finish)
    client.pipe(upstream)
    upstream.pipe(client)
  }
}
