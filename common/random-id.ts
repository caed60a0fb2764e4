import { randomBytes } from 'node:crypto'

const BASE32 = '0123456789abcdefghijklmnopqrstuv'

/** `prefix` + 12 lowercase base-32 characters: 60 random bits (job ids "j...", command ids "c..."). */
export function randomId(prefix: string): string {
  let n = randomBytes(8).readBigUInt64BE()
  let s = prefix
  for (let i = 0; i < 12; i++) {
    s += BASE32[Number(n & 31n)]
    n >>= 5n
  }
  return s
}
