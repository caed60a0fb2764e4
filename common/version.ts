import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * rollcall's package.json, found from this module's place: two levels up
 * from dist/common, one from common/ (the tests run the sources).
 */
function findPackage(): { root: string | undefined; version: string } {
  for (const rel of ['../../', '../']) {
    try {
      const dir = new URL(rel, import.meta.url)
      const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'rollcall' && pkg.version) return { root: fileURLToPath(dir), version: pkg.version }
    } catch {
      // try the next candidate
    }
  }
  return { root: undefined, version: '0.0.0' }
}

const found = findPackage()

/** rollcall's version, from package.json. */
export const VERSION = found.version

/** The folder of rollcall's package.json (where dist/ and node_modules/ are), if it was found. */
export const PACKAGE_ROOT = found.root
