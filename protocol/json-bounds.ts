import { LIMITS } from './limits.js'

/**
 * Bounds on a free-form JSON value (event data, job payloads and results,
 * command args and results): how deep it nests and how many bytes it takes
 * as JSON.
 *
 * Why here, at the edge (M19b, H05): JSON.parse reads any depth without
 * trouble, so a payload nested 30,000 deep passes parsing and the schema (a
 * free-form field is `unknown` to it) and only blows up later, when
 * JSON.stringify or another recursive walk runs out of stack: inside the
 * hub's group commit, or in an HTTP handler as a 500. The depth is measured
 * here with an explicit stack, never by recursion, so this check cannot
 * overflow itself; the size is measured only once the depth is known to be
 * safe to serialise.
 */

export type JsonBounds =
  | { readonly ok: true; readonly json: string; readonly bytes: number }
  | { readonly ok: false; readonly limit: 'depth'; readonly max: number }
  | { readonly ok: false; readonly limit: 'bytes'; readonly bytes: number; readonly max: number }

/** Whether `value` nests arrays and objects more than `maxDepth` deep (`{}` is 1 deep, a scalar 0). */
export function nestsDeeperThan(value: unknown, maxDepth: number): boolean {
  if (typeof value !== 'object' || value === null) return false
  const values: unknown[] = [value]
  const depths: number[] = [1]
  while (values.length > 0) {
    const v = values.pop() as object
    const depth = depths.pop() as number
    if (depth > maxDepth) return true
    for (const child of Array.isArray(v) ? v as unknown[] : Object.values(v)) {
      if (typeof child === 'object' && child !== null) {
        values.push(child)
        depths.push(depth + 1)
      }
    }
  }
  return false
}

/**
 * Checks `value` against the depth limit, then against `maxBytes` as JSON;
 * gives the JSON text when it fits, so a caller that stores it serialises once.
 */
export function boundJson(value: unknown, maxBytes: number, maxDepth: number = LIMITS.maxJsonDepth): JsonBounds {
  if (nestsDeeperThan(value, maxDepth)) return { ok: false, limit: 'depth', max: maxDepth }
  const json = JSON.stringify(value) ?? 'null'
  // Under a third of the cap in UTF-16 units cannot exceed it in UTF-8 bytes.
  const bytes = json.length * 3 <= maxBytes ? json.length : Buffer.byteLength(json)
  if (bytes > maxBytes) return { ok: false, limit: 'bytes', bytes, max: maxBytes }
  return { ok: true, json, bytes }
}

/** A refusal in words that say which limit, for a dead letter's detail or an HTTP 400/413. */
export function describeBounds(what: string, b: Exclude<JsonBounds, { ok: true }>): string {
  return b.limit === 'depth'
    ? `${what} nests arrays and objects deeper than ${b.max} levels (the limit for free-form JSON)`
    : `${what} is ${b.bytes} bytes of JSON; at most ${b.max}`
}
