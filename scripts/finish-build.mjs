// What tsc does not do, run last by `npm run build`:
// - copies the dashboard's page and stylesheet next to its compiled modules;
// - makes the CLI executable, so a bin link to it (npx, npm link) runs even
//   after a clean rebuild, which tsc writes with mode 644.
import { chmodSync, copyFileSync, mkdirSync } from 'node:fs'

mkdirSync('dist/hub/ui', { recursive: true })
for (const file of ['index.html', 'style.css']) copyFileSync(`hub/ui/${file}`, `dist/hub/ui/${file}`)
chmodSync('dist/cli/main.js', 0o755)
