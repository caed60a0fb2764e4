import { timingSafeEqual } from 'node:crypto'
import { hashToken } from '../tokens.js'

/** Bearer-token check for the admin API; compares hashes so lengths never leak. */
export function adminAuthorizer(adminToken: string) {
  const expected = hashToken(adminToken)
  return (header: string | undefined): boolean => {
    if (!header?.startsWith('Bearer ')) return false
    return timingSafeEqual(hashToken(header.slice(7).trim()), expected)
  }
}
