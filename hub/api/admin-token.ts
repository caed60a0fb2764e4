import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from '../../common/logger.js'
import { ensurePrivateDir, tightenIfExists } from '../../common/private-files.js'
import { generateToken } from '../fleet/tokens.js'

export const ADMIN_TOKEN_FILE = 'admin-token'

/**
 * The admin token guards the HTTP API. It is made on the hub's first start and
 * kept in the data dir with mode 0600 (readable by the hub's user only), where
 * the CLI on the same machine finds it. `created` tells the caller to print it,
 * which happens once.
 */
export function loadOrCreateAdminToken(dataDir: string, logger?: Logger): { token: string; created: boolean; path: string } {
  const path = join(dataDir, ADMIN_TOKEN_FILE)
  if (existsSync(path)) {
    tightenIfExists(path, logger)
    const token = readFileSync(path, 'utf8').trim()
    if (token.length < 32) throw new Error(`${path} holds no valid admin token; delete it and restart the hub to make a new one`)
    return { token, created: false, path }
  }
  ensurePrivateDir(dataDir)
  const token = generateToken()
  writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' })
  chmodSync(path, 0o600)
  return { token, created: true, path }
}
