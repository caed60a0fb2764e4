import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import type { AgentStats } from '../agent/agent.js'
import { startStatsFile, type StatsSnapshot } from '../agent/stats-file.js'
import { waitFor } from './support/hub.js'
import { killProc, startCli, type Proc } from './support/procs.js'
import { removeDir, tempDir } from './agent.support.js'

/**
 * ROLLCALL_STATS_FILE (issue #13, the soak benchmark's window into an agent
 * process): the file holds the process's heap, its active handles by kind,
 * its warnings and the agent's stats; the last write comes after the stop.
 */
const dirs: string[] = []
const procs: Proc[] = []
afterEach(async () => {
  for (const p of procs.splice(0)) await killProc(p)
  for (const d of dirs.splice(0)) removeDir(d)
})

const read = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as StatsSnapshot

describe('ROLLCALL_STATS_FILE', () => {
  it('rollcall agent writes its heap, handles and stats there, and once more after a stop', async () => {
    const dir = tempDir()
    dirs.push(dir)
    const path = join(dir, 'stats.json')
    // Nothing listens on port 1: the agent starts offline and keeps retrying.
    const agent = startCli(['agent', '--hub', 'mqtt://127.0.0.1:1', '--id', 'dev-stats', '--token', 't', '--data', join(dir, 'agent'), '--log-level', 'info'],
      { ROLLCALL_STATS_FILE: path })
    procs.push(agent)
    await waitFor(() => agent.output().includes('agent started') && existsSync(path), 'agent started and a stats file', 20_000)
    const first = read(path)
    expect(first.agent.deviceId).toBe('dev-stats')
    expect(first.agent.connected).toBe(false)
    expect(first.final).toBe(false)
    expect(first.memory.heapUsed).toBeGreaterThan(0)
    expect(first.memory.rss).toBeGreaterThan(first.memory.heapUsed)
    // At least the sampler's timer and the link's reconnect or keepalive timer.
    expect(first.resources.Timeout).toBeGreaterThanOrEqual(1)

    agent.child.kill('SIGTERM')
    await waitFor(() => agent.child.exitCode !== null, 'the agent to exit', 20_000)
    expect(agent.child.exitCode).toBe(0)
    const last = read(path)
    expect(last.t).toBeGreaterThanOrEqual(first.t)
    expect(last.final).toBe(true)
    // Written after agent.stop(): the ledger is closed, so no outbox figures.
    expect(last.agent.outbox).toBeUndefined()
    expect(existsSync(`${path}.tmp`)).toBe(false)
  })

  it('counts process warnings by name and lets go of its listener on stop', async () => {
    const dir = tempDir()
    dirs.push(dir)
    const path = join(dir, 'stats.json')
    const listeners = process.listenerCount('warning')
    const stats = { deviceId: 'dev-x' } as unknown as AgentStats
    const file = startStatsFile(path, () => stats, 60_000)
    expect(process.listenerCount('warning')).toBe(listeners + 1)
    process.emitWarning('a test warning', 'SoakTestWarning')
    await new Promise((r) => setImmediate(r))
    file.stop()
    file.stop()
    expect(process.listenerCount('warning')).toBe(listeners)
    const last = read(path)
    expect(last.warnings).toEqual({ SoakTestWarning: 1 })
    expect(last.agent.deviceId).toBe('dev-x')
  })

  it('reports the heap a full collection left', () => {
    const dir = tempDir()
    dirs.push(dir)
    const path = join(dir, 'stats.json')
    // A full collection on demand: the usual way to reach V8's gc() in a process started without --expose-gc.
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const file = startStatsFile(path, () => ({ deviceId: 'dev-gc' }) as unknown as AgentStats, 60_000)
    expect(read(path).gc.full).toBe(0)
    gc()
    file.stop()
    const last = read(path)
    expect(last.gc.full).toBe(1)
    expect(last.gc.heapAfterFullGc).toBeGreaterThan(0)
    expect(last.gc.heapAfterFullGc).toBeLessThanOrEqual(last.memory.heapTotal)
  })
})
