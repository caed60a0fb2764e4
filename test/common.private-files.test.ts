import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino, type Logger } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createAgent, type Agent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { ensurePrivateDir, ensurePrivateFile, isShared, octalMode, tightenIfExists } from '../common/private-files.js'
import { createHub } from '../hub/hub.js'
import { loadHubConfig } from '../hub/config.js'
import { QUICK_AGENT } from './support/agents.js'
import { waitFor } from './support/hub.js'

// #12 section 4: the hub's data (telemetry, job results, token hashes) and the
// agent's ledger (job results with shell output) are private to their user.
// Modes are checked as bits, which holds even when the tests run as root.

interface Captured { readonly logger: Logger; readonly lines: Array<{ level: number; msg: string; [k: string]: unknown }> }

function capture(): Captured {
  const lines: Captured['lines'] = []
  const logger = pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s) as Captured['lines'][number]) } })
  return { logger, lines }
}

function mode(path: string): string {
  return octalMode(statSync(path).mode)
}

let base: string
let savedUmask: number

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'rollcall-files-'))
  // The usual umask, under which mkdir gives 0755 and a new file 0644. (Tests run in forks, so umask works.)
  savedUmask = process.umask(0o022)
})

afterEach(() => {
  process.umask(savedUmask)
  rmSync(base, { recursive: true, force: true })
})

describe('private files: the pure parts', () => {
  it.each([
    [0o700, false], [0o600, false], [0o400, false], [0o750, true], [0o755, true], [0o644, true], [0o602, true], [0o1777, true],
  ])('isShared(%s) is %s', (m, shared) => {
    expect(isShared(m)).toBe(shared)
  })

  it('spells modes the way chmod does', () => {
    expect(octalMode(0o100644)).toBe('0644')
    expect(octalMode(0o40700)).toBe('0700')
    expect(octalMode(0o7)).toBe('0007')
  })
})

describe('private files: dirs and files', () => {
  it('makes a new dir 0700 and leaves the parents it had to make as the umask makes them', () => {
    const dir = join(base, 'a', 'b', 'data')
    expect(ensurePrivateDir(dir)).toBe('created')
    expect(mode(dir)).toBe('0700')
    expect(mode(join(base, 'a'))).toBe('0755')
  })

  it('warns about an existing dir open to others, says the fix, and does not change it', () => {
    const dir = join(base, 'shared')
    mkdirSync(dir, { mode: 0o755 })
    const c = capture()
    expect(ensurePrivateDir(dir, c.logger)).toBe('shared')
    expect(mode(dir)).toBe('0755')
    const warn = c.lines.find((l) => l.level === 40)
    expect(warn?.msg).toContain(`chmod 700 ${dir}`)
    expect(warn?.mode).toBe('0755')
  })

  it('refuses a data dir that is a file, saying so', () => {
    const f = join(base, 'file')
    writeFileSync(f, '')
    expect(() => ensurePrivateDir(f)).toThrow(/is not a directory/)
  })

  it('creates a file 0600, tightens a 0644 one with a log line, leaves a stricter 0400 one', () => {
    const f = join(base, 'x')
    expect(ensurePrivateFile(f)).toBe('created')
    expect(mode(f)).toBe('0600')
    chmodSync(f, 0o644)
    const c = capture()
    expect(ensurePrivateFile(f, c.logger)).toBe('tightened')
    expect(mode(f)).toBe('0600')
    expect(c.lines.some((l) => l.level === 30 && l.from === '0644' && l.to === '0600')).toBe(true)
    chmodSync(f, 0o400)
    expect(tightenIfExists(f)).toBe('private')
    expect(mode(f)).toBe('0400')
    expect(tightenIfExists(join(base, 'missing'))).toBe('missing')
    expect(existsSync(join(base, 'missing'))).toBe(false)
  })
})

describe('private files: a real hub and a real agent', () => {
  /** Starts both, waits until the agent is online, checks the modes, stops both; returns the device's token for a second run. */
  async function runHubAndAgent(hubDir: string, agentDir: string, hubLog: Logger, agentLog: Logger, knownToken?: string): Promise<string> {
    const hubConfig = loadHubConfig({ dataDir: hubDir, mqttPort: 0, httpPort: 0, logLevel: 'info' }, {})
    const hub = createHub(hubConfig, { logger: hubLog })
    let agent: Agent | undefined
    try {
      const running = await hub.start()
      let token = knownToken
      if (token === undefined) {
        const res = await fetch(`http://127.0.0.1:${running.httpPort}/api/devices`, {
          method: 'POST', headers: { authorization: `Bearer ${running.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ id: 'pump-1' }),
        })
        expect(res.status).toBe(201)
        token = (await res.json() as { token: string }).token
      }
      agent = createAgent(resolveAgentConfig({ ...QUICK_AGENT, hub: `mqtt://127.0.0.1:${running.mqttPort}`, id: 'pump-1', token, dataDir: agentDir }), { logger: agentLog })
      await agent.start()
      await waitFor(() => running.services.presence.isReachable('pump-1'), 'the agent online')
      // Both databases are open and have written: their -wal (and the hub's -shm) exist now. The
      // ledger holds its lock for good, so SQLite keeps its WAL index in memory: no -shm (issue #13).
      for (const f of [join(hubDir, 'hub.db-wal'), join(hubDir, 'hub.db-shm'), join(agentDir, 'ledger.db-wal')]) {
        expect(existsSync(f), f).toBe(true)
      }
      expect(existsSync(join(agentDir, 'ledger.db-shm'))).toBe(false)
      expectPrivate(hubDir, agentDir)
      return token
    } finally {
      await agent?.stop()
      await hub.stop()
    }
  }

  function expectPrivate(hubDir: string, agentDir: string): void {
    const modes: Record<string, string> = Object.fromEntries([
      ...['hub.db', 'hub.db-wal', 'hub.db-shm', 'admin-token'].map((f): [string, string] => [`hub/${f}`, mode(join(hubDir, f))]),
      ...['ledger.db', 'ledger.db-wal'].map((f): [string, string] => [`agent/${f}`, mode(join(agentDir, f))]),
    ])
    expect(modes).toEqual({
      'hub/hub.db': '0600', 'hub/hub.db-wal': '0600', 'hub/hub.db-shm': '0600', 'hub/admin-token': '0600',
      'agent/ledger.db': '0600', 'agent/ledger.db-wal': '0600',
    })
  }

  it('new data dirs are 0700 and every database file 0600 under umask 022', async () => {
    const hubDir = join(base, 'var', 'hub')
    const agentDir = join(base, 'var', 'agents', 'pump-1')
    const hubLog = capture()
    const agentLog = capture()
    await runHubAndAgent(hubDir, agentDir, hubLog.logger, agentLog.logger)
    expect(mode(hubDir)).toBe('0700')
    expect(mode(agentDir)).toBe('0700')
    expect([...hubLog.lines, ...agentLog.lines].filter((l) => l.level === 40 && String(l.msg).includes('chmod 700'))).toEqual([])
  })

  it('data dirs that existed with 0755 (mkdir -p) get a warning naming the fix; the files are still 0600', async () => {
    const hubDir = join(base, 'hub')
    const agentDir = join(base, 'ledger')
    mkdirSync(hubDir, { mode: 0o755 })
    mkdirSync(agentDir, { mode: 0o755 })
    const hubLog = capture()
    const agentLog = capture()
    await runHubAndAgent(hubDir, agentDir, hubLog.logger, agentLog.logger)
    expect(hubLog.lines.find((l) => l.level === 40 && l.dir === hubDir)?.msg).toContain(`chmod 700 ${hubDir}`)
    expect(agentLog.lines.find((l) => l.level === 40 && l.dir === agentDir)?.msg).toContain(`chmod 700 ${agentDir}`)
    // Left as the operator made it: it may be shared on purpose.
    expect(mode(hubDir)).toBe('0755')
  })

  it('database files left 0644 by an older version (db, WAL and SHM) are tightened at start, with a log line', async () => {
    const hubDir = join(base, 'hub')
    const agentDir = join(base, 'ledger')
    // A first run, then the modes an older version left behind.
    const token = await runHubAndAgent(hubDir, agentDir, capture().logger, capture().logger)
    for (const f of ['hub.db', 'admin-token']) chmodSync(join(hubDir, f), 0o644)
    chmodSync(join(agentDir, 'ledger.db'), 0o644)
    // SQLite deletes the WAL at a clean close; one left by a crash stays, so stand one in.
    writeFileSync(join(hubDir, 'hub.db-wal'), '', { mode: 0o644 })
    const hubLog = capture()
    await runHubAndAgent(hubDir, agentDir, hubLog.logger, capture().logger, token)
    const tightened = hubLog.lines.filter((l) => l.level === 30 && l.to === '0600').map((l) => l.path)
    expect(tightened).toEqual(expect.arrayContaining([join(hubDir, 'hub.db'), join(hubDir, 'hub.db-wal'), join(hubDir, 'admin-token')]))
  })
})
