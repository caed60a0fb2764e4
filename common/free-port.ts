import { createServer } from 'node:net'

/**
 * A TCP port free on 127.0.0.1 now: for a process that must be told its port
 * before it starts (a broker started twice on the same port). Another
 * process may take it meanwhile; callers that can bind port 0 should.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address()
      const port = typeof a === 'object' && a ? a.port : 0
      srv.close(() => resolve(port))
    })
  })
}
