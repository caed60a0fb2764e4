// Prints a JSON config block of a doc, so a check runs exactly what the doc
// shows (issue #13: docs/raspberry-pi.md and scripts/check-package.sh cannot
// drift apart). The block is the first ```json fence after the line
// `<!-- check-package: NAME -->`.
//
//   node scripts/guide-json.mjs DOC NAME ROOT [KEY=VALUE ...]
//
// Every absolute path among the block's string values is moved under ROOT
// (/etc/rollcall/ca.pem -> ROOT/etc/rollcall/ca.pem); each KEY=VALUE replaces
// a top-level key's value (a URL that must point at a test hub), and fails
// when the block has no such key: the doc changed, and the check must follow.
import { readFileSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'

const [doc, name, root, ...overrides] = process.argv.slice(2)
if (!doc || !name || !root) {
  process.stderr.write('usage: node scripts/guide-json.mjs DOC NAME ROOT [KEY=VALUE ...]\n')
  process.exit(2)
}
const lines = readFileSync(doc, 'utf8').split('\n')
const marker = lines.findIndex((l) => l.trim() === `<!-- check-package: ${name} -->`)
if (marker === -1) throw new Error(`${doc} has no <!-- check-package: ${name} --> marker`)
const open = lines.findIndex((l, i) => i > marker && l.trim() === '```json')
const close = lines.findIndex((l, i) => i > open && l.trim() === '```')
if (open === -1 || close === -1 || open !== marker + 1) throw new Error(`${doc}: the marker for ${name} must be followed by a \`\`\`json block`)
const config = JSON.parse(lines.slice(open + 1, close).join('\n'))

const moved = (value) => {
  if (typeof value === 'string') return isAbsolute(value) ? join(root, value) : value
  if (Array.isArray(value)) return value.map(moved)
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, moved(v)]))
  return value
}
// Shell payloads and allowlists name programs on this machine: those stay as they are.
const KEEP = new Set(['shellAllow', 'schedules'])
const out = Object.fromEntries(Object.entries(config).map(([k, v]) => [k, KEEP.has(k) ? v : moved(v)]))
for (const o of overrides) {
  const at = o.indexOf('=')
  const key = o.slice(0, at)
  if (!(key in out)) throw new Error(`${doc}: the ${name} block has no "${key}"; update scripts/check-package.sh with the doc`)
  out[key] = o.slice(at + 1)
}
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
