import { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Handles that outlive a test are leaks: a socket, a listening server, a
 * timer or a child process still there after the test's own teardown.
 * resourceCounts() counts those kinds; expectNoLeaks() waits (bounded) for
 * them to come back to a baseline taken before the test, and fails naming
 * what stayed. test/support/leak-check.setup.ts runs it after every test file.
 */
const LEAKABLE = ['TCPSocketWrap', 'TCPServerWrap', 'Timeout', 'ProcessWrap'] as const

export function resourceCounts(): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const kind of LEAKABLE) counts[kind] = 0
  for (const kind of process.getActiveResourcesInfo()) {
    if (kind in counts) counts[kind] = (counts[kind] ?? 0) + 1
  }
  return counts
}

export async function expectNoLeaks(baseline: Record<string, number>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const now = resourceCounts()
    const leaked = LEAKABLE.filter((kind) => (now[kind] ?? 0) > (baseline[kind] ?? 0))
    if (leaked.length === 0) return
    if (Date.now() > deadline) {
      throw new Error(`leaked handles after teardown: ${leaked.map((k) => `${k} ${baseline[k]} -> ${now[k]}`).join(', ')}${openSockets()}`)
    }
    await sleep(25)
  }
}

/** The TCP sockets still open, local -> remote, to tell whose they are (process._getActiveHandles is Node's own, undocumented). */
function openSockets(): string {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? []
  const sockets = handles.filter((h): h is Socket => h instanceof Socket && h.remotePort !== undefined)
  return sockets.length === 0 ? '' : `; sockets: ${sockets.map((s) => `${s.localAddress}:${s.localPort} -> ${s.remoteAddress}:${s.remotePort}${s.isPaused() ? ' (paused)' : ''}`).join(', ')}`
}

/**
 * `fetch(...).then(drained)`: reads the body of a response a test checks only
 * by its status or headers. A body nobody reads keeps its socket open and
 * paused, even after the server closed its side: a leak.
 */
export async function drained(res: Response): Promise<Response> {
  await res.arrayBuffer()
  return res
}

/**
 * `promise`, or `fallback` once `ms` have passed: a hang guard whose timer is
 * cleared either way. A bare setTimeout raced against the promise outlives
 * the test by its whole delay: a leak, and a teardown that waits it out.
 */
export async function within<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<F>((resolve) => { timer = setTimeout(() => resolve(fallback), ms) })])
  } finally {
    clearTimeout(timer)
  }
}
