import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'

/**
 * A private PostgreSQL cluster for the tests and benchmarks of the hub on
 * PostgreSQL (issue #18): made by initdb in `dir`, listening only on a Unix
 * socket in that same directory (no port to collide with anything), started
 * and stopped by whoever called it. As root it runs as the "postgres" user
 * the Debian package makes, since PostgreSQL refuses to run as root.
 */

/** initdb and postgres from Debian's versioned folder (newest first), else from the PATH. */
function binDir(): string | undefined {
  const base = '/usr/lib/postgresql'
  try {
    const versions = readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))
    for (const v of versions) if (existsSync(join(base, v, 'bin', 'initdb'))) return join(base, v, 'bin')
  } catch {
    // no Debian layout: try the PATH below
  }
  const found = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' })
  return found.status === 0 && found.stdout.trim() !== '' ? join(found.stdout.trim(), '..') : undefined
}

export const PG_BIN = binDir()
export const HAVE_POSTGRES = PG_BIN !== undefined && existsSync(join(PG_BIN, 'postgres'))

/** Who runs the cluster: ourselves, or "postgres" when we are root. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' })
  if (id.status !== 0 || gid.status !== 0) throw new Error('running as root and there is no "postgres" user to run PostgreSQL as (apt-get install postgresql makes one)')
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) }
}

export interface PostgresCluster {
  /** A connection string for the database `rollcall` on the cluster's socket. */
  readonly url: string
  readonly dir: string
  /** A connection string for another database on the same cluster, made on first ask. */
  database(name: string): Promise<string>
  output(): string
  stop(): Promise<void>
}

export interface PostgresOptions {
  /**
   * fsync off: the tests kill hubs, never the database, so its durability is
   * not what they check, and a busy CI machine is spared the flushes. Benches
   * keep PostgreSQL's default (on).
   */
  readonly fsync?: boolean
  readonly maxConnections?: number
}

export async function startPostgres(dir: string, opts: PostgresOptions = {}): Promise<PostgresCluster> {
  if (!HAVE_POSTGRES || PG_BIN === undefined) throw new Error('PostgreSQL is not installed (apt-get install postgresql)')
  const owner = runAs()
  const data = join(dir, 'pgdata')
  mkdirSync(data, { recursive: true })
  if (owner) {
    chownSync(dir, owner.uid, owner.gid)
    chownSync(data, owner.uid, owner.gid)
  }
  const as = owner ? { uid: owner.uid, gid: owner.gid } : {}
  const init = spawnSync(join(PG_BIN, 'initdb'), ['-D', data, '-U', 'rollcall', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'], { encoding: 'utf8', ...as })
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}${init.stdout}`)
  const port = 5432
  const child: ChildProcess = spawn(join(PG_BIN, 'postgres'), [
    '-D', data, '-k', dir, '-p', String(port), '-c', 'listen_addresses=',
    '-c', `fsync=${opts.fsync === true ? 'on' : 'off'}`, '-c', `max_connections=${opts.maxConnections ?? 100}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'], ...as })
  let out = ''
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-20_000) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const urlOf = (db: string) => `postgresql://rollcall@/${db}?host=${encodeURIComponent(dir)}&port=${port}`
  const admin = urlOf('postgres')
  // Up once it answers a query.
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`postgres exited (${child.exitCode}): ${out}`)
    const c = new pg.Client({ connectionString: admin })
    try {
      await c.connect()
      await c.query('SELECT 1')
      await c.end()
      break
    } catch (err) {
      await c.end().catch(() => undefined)
      if (Date.now() > deadline) throw new Error(`postgres did not answer within 30 s: ${(err as Error).message}\n${out}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  const made = new Set<string>()
  async function database(name: string): Promise<string> {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`a database name of lower-case letters, digits and _: ${name}`)
    if (!made.has(name)) {
      const c = new pg.Client({ connectionString: admin })
      await c.connect()
      try {
        await c.query(`CREATE DATABASE ${name}`)
      } finally {
        await c.end()
      }
      made.add(name)
    }
    return urlOf(name)
  }
  const url = await database('rollcall')
  return {
    url, dir, database,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      // Fast shutdown: ends the sessions, no checkpoint wait beyond what is needed.
      child.kill('SIGINT')
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
      await exited
      clearTimeout(timer)
    },
  }
}
