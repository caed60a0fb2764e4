import { createServer, connect, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy on loopback between an agent and the hub, so a test can take a
 * device offline with a real network fault: `cut()` drops every connection
 * and refuses new ones (the hub sees the socket close, the agent retries
 * with its backoff); `restore()` lets connections through again. With
 * `downDelayMs`, everything the hub sends reaches the device that much later.
 */
export interface Proxy {
  readonly port: number
  readonly url: string
  cut(): void
  restore(): void
  close(): Promise<void>
}

export interface ProxyOptions {
  /** Holds every chunk from the hub to the device this long (a slow downlink), keeping their order. */
  readonly downDelayMs?: number
}

export async function startProxy(targetPort: number, options: ProxyOptions = {}): Promise<Proxy> {
  const sockets = new Set<Socket>()
  let open = true
  const server: Server = createServer((client) => {
    if (!open) {
      client.destroy()
      return
    }
    const upstream = connect(targetPort, '127.0.0.1')
    sockets.add(client)
    sockets.add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.pipe(upstream)
    const delay = options.downDelayMs ?? 0
    if (delay === 0) upstream.pipe(client)
    else upstream.on('data', (chunk: Buffer) => { setTimeout(() => { if (!client.destroyed) client.write(chunk) }, delay) })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    cut() {
      open = false
      for (const s of sockets) s.destroy()
      sockets.clear()
    },
    restore() {
      open = true
    },
    async close() {
      open = false
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
