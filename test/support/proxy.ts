import { createServer, connect, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy on loopback between an agent and the hub, so a test can take a
 * device offline with a real network fault: `cut()` drops every connection
 * and refuses new ones (the hub sees the socket close, the agent retries
 * with its backoff); `restore()` lets connections through again.
 */
export interface Proxy {
  readonly port: number
  readonly url: string
  cut(): void
  restore(): void
  close(): Promise<void>
}

export async function startProxy(targetPort: number): Promise<Proxy> {
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
    upstream.pipe(client)
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
