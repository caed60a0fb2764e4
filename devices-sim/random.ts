import { seededRandom, type Random } from '../common/clock.js'
import { seedFromName } from '../agent/sensors.js'

/**
 * Seeds for the simulator. Every random choice the simulator makes is drawn
 * from a stream named by what it decides (run seed, device, sensor, event…),
 * so adding a device or an event never shifts the values of another one, and
 * the same run seed gives the same fleet (STYLE habit 11).
 */

/** murmur3's finaliser: a cheap, well-mixed 32-bit hash step. */
export function mix32(value: number): number {
  let h = value >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A seed for one named stream: `deriveSeed(runSeed, deviceIndex, 'env.temp')`. */
export function deriveSeed(seed: number, ...parts: ReadonlyArray<number | string>): number {
  let h = mix32(seed ^ 0x9e3779b9)
  for (const part of parts) {
    const v = typeof part === 'number' ? part : seedFromName(part)
    h = mix32((h ^ mix32(v + 0x7f4a7c15)) + 0x165667b1)
  }
  return h
}

/** A sequential stream for one named decision. */
export function streamFor(seed: number, ...parts: ReadonlyArray<number | string>): Random {
  return seededRandom(deriveSeed(seed, ...parts))
}

/**
 * Counter-based randomness: a value in [0, 1) that depends only on (key, index).
 * Sensor models use it so the k-th reading can be computed without replaying the
 * k - 1 before it (an agent restarted mid-run resumes at its tick).
 */
export function unitAt(key: number, index: number): number {
  return mix32((key ^ mix32(Math.imul(index | 0, 0x9e3779b1) + 0x632be5ab)) + index) / 4294967296
}
