import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { InvalidArgumentError } from './commander.js'
import { ADMIN_TOKEN_FILE } from '../hub/api/admin-token.js'

/**
 * Where admin commands find the hub and its token: flags first, then
 * ROLLCALL_API / ROLLCALL_ADMIN_TOKEN, then the defaults of a hub started on
 * this machine with its default data dir. This is the only CLI module that
 * reads rollcall's own environment variables (invocation.ts reads npm's and
 * PATH).
 */
export interface AdminTarget {
  readonly api: string
  readonly token: string
  /** --ca / ROLLCALL_CA / DATA/tls/ca.pem: the CA certificate (PEM path) an https:// API's certificate must chain to; undefined: the system's CAs. */
  readonly ca?: string | undefined
}

export const DEFAULT_API = 'http://127.0.0.1:8080'
export const DEFAULT_DATA = './rollcall-data'
/** Where `rollcall demo` keeps its hub unless told otherwise. */
export const DEFAULT_DEMO_DATA = './rollcall-data/demo'

/** The hub's data dir as the CLI looks for it: --data, then ROLLCALL_DATA, then ./rollcall-data. */
export function hubDataDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env.ROLLCALL_DATA ?? DEFAULT_DATA
}

export function resolveAdminTarget(flags: { api?: string | undefined; adminToken?: string | undefined; data?: string | undefined; ca?: string | undefined }, env: NodeJS.ProcessEnv = process.env): AdminTarget {
  const api = (flags.api ?? env.ROLLCALL_API ?? DEFAULT_API).replace(/\/+$/, '')
  if (!/^https?:\/\/[^/]+/.test(api)) {
    throw new InvalidArgumentError(`--api ${JSON.stringify(api)} is not a URL: write it like ${DEFAULT_API}`)
  }
  const dataDir = resolve(hubDataDir(flags.data, env))
  // On the hub's machine the CA `rollcall tls init` made is in the data dir: an https:// API needs no --ca there.
  const localCa = join(dataDir, 'tls', 'ca.pem')
  const ca = flags.ca ?? (env.ROLLCALL_CA || undefined) ?? (api.startsWith('https:') && existsSync(localCa) ? localCa : undefined)
  if (ca !== undefined && !api.startsWith('https:')) {
    // As for the agent: a CA given means TLS was meant, and the admin token must not cross the network in clear.
    throw new InvalidArgumentError(`--ca (or ROLLCALL_CA) is for an https:// API, but --api is ${api}: write it https://HOST:PORT (the hub serves HTTPS when it has a certificate)`)
  }
  if (ca !== undefined && !existsSync(ca)) throw new InvalidArgumentError(`--ca ${ca} does not exist: give the hub's ca.pem (DATA/tls/ca.pem after \`rollcall tls init\`)`)
  let token = flags.adminToken ?? env.ROLLCALL_ADMIN_TOKEN
  if (!token) {
    const path = join(dataDir, ADMIN_TOKEN_FILE)
    if (!existsSync(path)) {
      // The demo (npm start) keeps its hub in a folder of its own: say so to whoever ran it here.
      const demo = flags.data === undefined && existsSync(join(DEFAULT_DEMO_DATA, ADMIN_TOKEN_FILE))
        ? `; the demo's hub (npm start) keeps its token in ${DEFAULT_DEMO_DATA}: add --data ${DEFAULT_DEMO_DATA}` : ''
      throw Object.assign(new Error(`no admin token: pass --admin-token, set ROLLCALL_ADMIN_TOKEN, or point --data at the hub's data dir (looked for ${path})${demo}`), { code: 'UNAUTHORIZED' })
    }
    token = readFileSync(path, 'utf8').trim()
  }
  return { api, token, ca }
}
