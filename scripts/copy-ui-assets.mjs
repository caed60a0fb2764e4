// Copies the dashboard's page and stylesheet next to its compiled modules
// (tsc only emits JavaScript). Run by `npm run build`.
import { copyFileSync, mkdirSync } from 'node:fs'

mkdirSync('dist/hub/ui', { recursive: true })
for (const file of ['index.html', 'style.css']) copyFileSync(`hub/ui/${file}`, `dist/hub/ui/${file}`)
