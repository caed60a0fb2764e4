import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

/**
 * hub/ is grouped by capability (docs/architecture.md, "The hub's folders").
 * This reads every import of every module under hub/ and checks it against
 * what its folder may import, so the layout the docs describe is the one the
 * code has.
 */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const HUB = join(ROOT, 'hub')

/** Where an import may lead, per folder: hub folders by name, '(top)' for hub/*.ts, and the repository's other top folders. */
const OUTSIDE = ['common', 'protocol']
const ALLOWED: Record<string, readonly string[]> = {
  '(top)': ['*'],
  storage: [...OUTSIDE],
  fleet: [...OUTSIDE, 'broker', 'storage'],
  presence: [...OUTSIDE, 'storage'],
  telemetry: [...OUTSIDE, 'storage'],
  jobs: [...OUTSIDE, 'storage', 'fleet', 'mqtt (type)'],
  commands: [...OUTSIDE, 'storage', 'fleet', 'jobs'],
  rules: [...OUTSIDE, 'storage', 'fleet'],
  mqtt: [...OUTSIDE, 'broker', 'storage', 'presence', 'telemetry', 'jobs', 'commands'],
  observe: [...OUTSIDE, 'broker', 'storage', 'fleet', 'presence', 'telemetry', 'jobs', 'commands', 'rules'],
  api: [...OUTSIDE, '(top)', 'storage', 'fleet', 'presence', 'telemetry', 'jobs', 'commands', 'rules', 'mqtt', 'observe'],
}

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.isDirectory()) return e.name === 'ui' ? [] : modules(join(dir, e.name))
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : []
  })
}

/** The folder a path belongs to: a hub folder's name, '(top)', or the repository's top folder. */
function folderOf(path: string): string {
  const inHub = relative(HUB, path)
  if (!inHub.startsWith('..')) return inHub.includes('/') ? inHub.split('/')[0]! : '(top)'
  return relative(ROOT, path).split('/')[0]!
}

const IMPORT = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+'(\.[^']+)'/gm

describe('hub/ layout', () => {
  it('has a README.md in each folder', () => {
    const folders = readdirSync(HUB, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name !== 'ui').map((e) => e.name)
    expect(folders.sort()).toEqual(Object.keys(ALLOWED).filter((f) => f !== '(top)').sort())
    for (const f of folders) expect(readdirSync(join(HUB, f)), f).toContain('README.md')
  })

  it('imports across folders only as docs/architecture.md allows', () => {
    const refused: string[] = []
    let checked = 0
    for (const file of modules(HUB)) {
      const from = folderOf(file)
      const allowed = ALLOWED[from]
      expect(allowed, `${relative(ROOT, file)} is in a folder the layout does not know`).toBeDefined()
      for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
        const to = folderOf(resolve(dirname(file), m[3]!))
        checked++
        if (to === from || allowed!.includes('*') || allowed!.includes(to)) continue
        if (m[2] !== undefined && allowed!.includes(`${to} (type)`)) continue
        refused.push(`${relative(ROOT, file)} imports ${m[3]} (${from} -> ${to}${m[2] !== undefined ? ', type only' : ''})`)
      }
    }
    expect(checked).toBeGreaterThan(150)
    expect(refused).toEqual([])
  })
})
