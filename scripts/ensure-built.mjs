// Run before `npm start` and `npm run bench`: builds dist/ when it is missing
// or older than a source file, and does nothing otherwise. A fresh clone
// needs the build (`npm install` no longer runs one: the published package
// ships dist/), but a build on every start would rewrite dist/ under whatever
// else is running from it, such as the test suite's processes.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

const STAMP = 'dist/cli/main.js'
const SOURCES = ['protocol', 'broker', 'hub', 'agent', 'devices-sim', 'common', 'cli', 'bench', 'scripts']
const FILES = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'hub/ui/tsconfig.json']

function newestIn(dir) {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestIn(path))
    else if (/\.(ts|html|css)$/.test(entry.name)) newest = Math.max(newest, statSync(path).mtimeMs)
  }
  return newest
}

const builtAt = existsSync(STAMP) ? statSync(STAMP).mtimeMs : 0
const changedAt = Math.max(...SOURCES.filter(existsSync).map(newestIn), ...FILES.filter(existsSync).map((f) => statSync(f).mtimeMs))
if (changedAt > builtAt) {
  process.stderr.write(builtAt === 0 ? 'rollcall: building dist/ (first run)\n' : 'rollcall: sources changed since the last build; building dist/\n')
  const { status } = spawnSync('npm', ['run', 'build'], { stdio: 'inherit' })
  if (status !== 0) process.exit(status ?? 1)
}
