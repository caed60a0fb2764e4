import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { ADMIN_TOKEN_FILE } from '../hub/admin-token.js'

/**
 * Where admin commands find the hub and its token: flags first, then
 * ROLLCALL_API / ROLLCALL_ADMIN_TOKEN, then the defaults of a hub started on
 * this machine with its default data dir. This is the only CLI module that
 * reads the environment.
 */
export interface AdminTarget { readonly api: string; readonly token: string }

export function resolveAdminTarget(flags: { api?: string | undefined; adminToken?: string | undefined; data?: string | undefined }, env: NodeJS.ProcessEnv = process.env): AdminTarget {
  const api = (flags.api ?? env.ROLLCALL_API ?? 'http://127.0.0.1:8080').replace(/\/+$/, '')
  if (!/^https?:\/\/[^/]+/.test(api)) {
    throw Object.assign(new Error(`--api ${JSON.stringify(api)} is not a URL: write it like http://127.0.0.1:8080`), { code: 'BAD_REQUEST' })
  }
  let token = flags.adminToken ?? env.ROLLCALL_ADMIN_TOKEN
  if (!token) {
    const dataDir = resolve(flags.data ?? env.ROLLCALL_DATA ?? './rollcall-data')
    const path = join(dataDir, ADMIN_TOKEN_FILE)
    if (!existsSync(path)) {
      throw Object.assign(new Error(`no admin token: pass --admin-token, set ROLLCALL_ADMIN_TOKEN, or point --data at the hub's data dir (looked for ${path})`), { code: 'UNAUTHORIZED' })
    }
    token = readFileSync(path, 'utf8').trim()
  }
  return { api, token }
}
