import { afterEach, describe, expect, it } from 'vitest'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadAgentSetup, type AgentFlags } from '../agent/config-sources.js'
import { issuesOf, removeDir, tempDir } from './agent.support.js'

/**
 * Issue #13: where a service's token comes from. Flags, then environment,
 * then the config file; two sources at one level are refused; with none,
 * systemd's $CREDENTIALS_DIRECTORY/token. Files lose their trailing newline;
 * missing, empty and unreadable files are problems, loose modes a warning.
 */

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) removeDir(d) })

function setupDir(): { dir: string; file: (name: string, text: string, mode?: number) => string; config: (o: Record<string, unknown>) => string } {
  const dir = tempDir('rollcall-token-')
  dirs.push(dir)
  const file = (name: string, text: string, mode = 0o600) => {
    const path = join(dir, name)
    writeFileSync(path, text)
    chmodSync(path, mode)
    return path
  }
  const config = (o: Record<string, unknown>) => file('agent.json', JSON.stringify({ hub: 'mqtt://127.0.0.1:1883', id: 'dev-1', ...o }))
  return { dir, file, config }
}

describe('the token of a service', () => {
  it.each<[string, (s: ReturnType<typeof setupDir>) => { flags?: Partial<AgentFlags>; env?: Record<string, string>; file?: Record<string, unknown> }, string, RegExp]>([
    ['--token-file wins over env and file', (s) => ({ flags: { tokenFile: s.file('f.token', 'from-flag-file\n') }, env: { ROLLCALL_TOKEN: 'from-env' }, file: { token: 'from-config' } }), 'from-flag-file', /--token-file/],
    ['ROLLCALL_TOKEN_FILE wins over the file', (s) => ({ env: { ROLLCALL_TOKEN_FILE: s.file('e.token', 'from-env-file\r\n') }, file: { token: 'from-config' } }), 'from-env-file', /ROLLCALL_TOKEN_FILE/],
    ['tokenFile, relative to the config file', () => ({ file: { tokenFile: 'c.token' } }), 'from-config-file', /"tokenFile" in the config file/],
    ['the systemd credential when nothing else is given', (s) => {
      mkdirSync(join(s.dir, 'creds'))
      s.file('creds/token', 'from-credential', 0o400)
      return { env: { CREDENTIALS_DIRECTORY: join(s.dir, 'creds') } }
    }, 'from-credential', /systemd credential/],
    ['the config file\'s token over the credential', (s) => {
      mkdirSync(join(s.dir, 'creds'))
      s.file('creds/token', 'from-credential', 0o400)
      return { env: { CREDENTIALS_DIRECTORY: join(s.dir, 'creds') }, file: { token: 'from-config' } }
    }, 'from-config', /"token" in the config file/],
  ])('%s', (_name, arrange, token, source) => {
    const s = setupDir()
    s.file('c.token', 'from-config-file\n')
    const { flags = {}, env = {}, file = {} } = arrange(s)
    const setup = loadAgentSetup({ flags: { ...flags, config: s.config(file) }, env })
    expect(setup.config.token).toBe(token)
    expect(setup.tokenSource).toMatch(source)
    expect(setup.warnings).toEqual([])
  })

  it.each<[string, (s: ReturnType<typeof setupDir>) => { flags?: Partial<AgentFlags>; env?: Record<string, string>; file?: Record<string, unknown> }, RegExp]>([
    ['--token and --token-file', (s) => ({ flags: { token: 'a', tokenFile: s.file('t', 'b') } }), /^token: both --token and --token-file/],
    ['ROLLCALL_TOKEN and ROLLCALL_TOKEN_FILE', (s) => ({ env: { ROLLCALL_TOKEN: 'a', ROLLCALL_TOKEN_FILE: s.file('t', 'b') } }), /^token: both ROLLCALL_TOKEN and ROLLCALL_TOKEN_FILE/],
    ['token and tokenFile in the file', () => ({ file: { token: 'a', tokenFile: 'c.token' } }), /^token: both "token" in the config file and "tokenFile"/],
    ['a missing file', (s) => ({ flags: { tokenFile: join(s.dir, 'nope') } }), /^--token-file: .*nope does not exist/],
    ['an empty file', (s) => ({ env: { ROLLCALL_TOKEN_FILE: s.file('t', '\n') } }), /^ROLLCALL_TOKEN_FILE: .* is empty/],
    ['a file of two lines', () => ({ file: { tokenFile: 'two' } }), /^"tokenFile" in the config file: .* does not hold one token/],
    ['a directory', (s) => ({ flags: { tokenFile: s.dir } }), /^--token-file: .* is not a file/],
    ['no source at all', () => ({}), /^token: required; give --token-file/],
  ])('refuses %s, once, naming the source', (_name, arrange, problem) => {
    const s = setupDir()
    s.file('c.token', 'from-config-file\n')
    s.file('two', 'abc\ndef\n')
    const { flags = {}, env = {}, file = {} } = arrange(s)
    const issues = issuesOf(() => loadAgentSetup({ flags: { ...flags, config: s.config(file) }, env }))
    expect(issues).toHaveLength(1)
    expect(issues[0]).toMatch(problem)
  })

  it('warns when other users can read the token file, and takes it', () => {
    const s = setupDir()
    const path = s.file('loose.token', 'tok\n', 0o644)
    const setup = loadAgentSetup({ flags: { config: s.config({ tokenFile: 'loose.token' }) } })
    expect(setup.config.token).toBe('tok')
    expect(setup.warnings).toEqual([`the token file ${path} can be read by other users (mode 0644): chmod 600 ${path}`])
  })

  it('resolves a relative dataDir against the config file, like the other paths', () => {
    const s = setupDir()
    const setup = loadAgentSetup({ flags: { config: s.config({ token: 't', dataDir: 'state' }) } })
    expect(setup.config.dataDir).toBe(join(s.dir, 'state'))
    expect(setup.configFile).toBe(join(s.dir, 'agent.json'))
  })
})

describe('what loadAgentSetup warns about besides the token', () => {
  it.each<[string, Record<string, unknown>, RegExp | undefined]>([
    ['synchronous FULL with samples held in memory (the default outboxCommitMs)', { synchronous: 'FULL' }, /^synchronous is FULL, but samples are written to the ledger only every 120 s \(outboxCommitMs\): a power cut still loses up to that much; set outboxCommitMs to 0/],
    ['synchronous FULL writing every tick', { synchronous: 'FULL', outboxCommitMs: 0 }, undefined],
    ['synchronous NORMAL', { synchronous: 'NORMAL', outboxCommitMs: '30s' }, undefined],
  ])('%s', (_name, file, warning) => {
    const s = setupDir()
    const setup = loadAgentSetup({ flags: { config: s.config({ token: 't', ...file }) } })
    if (warning) expect(setup.warnings).toEqual([expect.stringMatching(warning)])
    else expect(setup.warnings).toEqual([])
  })
})
