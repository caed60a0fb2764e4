import { timingSafeEqual } from 'node:crypto'
import { hashToken } from '../fleet/tokens.js'

/** Bearer-token check for the admin API; compares hashes so lengths never leak. */
export function adminAuthorizer(adminToken: string) {
  const expected = hashToken(adminToken)
  return (header: string | undefined): boolean => {
    // The scheme is case-insensitive [RFC 7235 §2.1].
    if (header === undefined || header.slice(0, 7).toLowerCase() !== 'bearer ') return false
    return timingSafeEqual(hashToken(header.slice(7).trim()), expected)
  }
}
