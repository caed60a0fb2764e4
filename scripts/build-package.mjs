// The build `npm pack` ships, run at prepack. It starts from an empty dist/ so
// that nothing a development build left there (bench/, scripts/, source maps,
// modules whose source was since removed) can reach the tarball, then compiles
// the runtime only (tsconfig.package.json) and the dashboard without maps.
// The next `npm test` or `npm start` rebuilds the full development dist/.
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { createRequire } from 'node:module'

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
const run = (...args) => execFileSync(process.execPath, [tsc, ...args], { stdio: 'inherit' })

rmSync('dist', { recursive: true, force: true })
run('-p', 'tsconfig.package.json')
run('-p', 'hub/ui/tsconfig.json', '--sourceMap', 'false')
await import('./finish-build.mjs')
