import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Device and observer tokens are 256-bit random values; the hub stores only
 * their SHA-256. A fast hash is right for high-entropy secrets: nobody can
 * brute-force 2^256, and a slow KDF per CONNECT would turn a reconnect storm
 * into a CPU storm.
 */
export function generateToken(): string {
  return randomBytes(32).toString('base64url')
}

export function hashToken(token: string | Buffer): Buffer {
  return createHash('sha256').update(token).digest()
}

export function tokenMatches(token: string | Buffer, storedHash: Buffer): boolean {
  const h = hashToken(token)
  return h.length === storedHash.length && timingSafeEqual(h, storedHash)
}
