import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from './support/hub.js'
import { killProc, startCli, type Proc } from './support/procs.js'
import { removeDir, tempDir } from './agent.support.js'

/**
 * `rollcall agent` runs on small devices, so its process loads only what a
 * device needs: no hub, broker, HTTP server, and no TypeBox builder or
 * compiler (validation uses the generated checks, which need typebox/guard),
 * and of MQTT.js only the client: not its connect() dispatcher, which loads
 * WebSocket and SOCKS support (agent/hub-socket.ts). A resolve hook records
 * every ES module the real CLI process loads, and the same preload records
 * the CommonJS modules (require's cache).
 */
const dirs: string[] = []
const procs: Proc[] = []
afterEach(async () => {
  for (const p of procs.splice(0)) await killProc(p)
  for (const d of dirs.splice(0)) removeDir(d)
})

describe('rollcall agent', () => {
  it('loads no hub, broker, HTTP or TypeBox compiler code', async () => {
    const dir = tempDir()
    dirs.push(dir)
    const log = join(dir, 'modules.log')
    const hooks = join(dir, 'hooks.mjs')
    writeFileSync(hooks, `import { appendFileSync } from 'node:fs'
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context)
  appendFileSync(${JSON.stringify(log)}, r.url + '\\n')
  return r
}
`)
    const register = join(dir, 'register.mjs')
    const cjsLog = join(dir, 'cjs.log')
    writeFileSync(register, `import { createRequire, register } from 'node:module'
import { writeFileSync } from 'node:fs'
register(${JSON.stringify(pathToFileURL(hooks).href)})
const require = createRequire(import.meta.url)
setInterval(() => { writeFileSync(${JSON.stringify(cjsLog)}, Object.keys(require.cache).join('\\n')) }, 200).unref()
`)
    writeFileSync(log, '')
    // Nothing listens on port 1: the agent starts offline and keeps retrying.
    const agent = startCli(['agent', '--hub', 'mqtt://127.0.0.1:1', '--id', 'dev-footprint', '--token', 't', '--data', join(dir, 'agent'), '--log-level', 'info'],
      { NODE_OPTIONS: `--import ${pathToFileURL(register).href}` })
    procs.push(agent)
    await waitFor(() => agent.output().includes('agent started') || agent.child.exitCode !== null, 'agent started', 20_000)
    expect(agent.output()).toContain('agent started')

    const loaded = [...new Set(readFileSync(log, 'utf8').split('\n').filter((u) => u.startsWith('file:')))]
    expect(loaded.some((u) => u.includes('/dist/agent/agent.js'))).toBe(true)
    const forbidden = loaded.filter((u) =>
      /\/dist\/(hub|broker|devices-sim|bench)\//.test(u) ||
      /\/node_modules\/(aedes|fastify|@fastify|typebox\/build\/(?!guard\/))/.test(u))
    expect(forbidden).toEqual([])

    // Read after the agent has tried to connect at least once (it logs the failure at info).
    await waitFor(() => /ECONNREFUSED/.test(agent.output()) || agent.child.exitCode !== null, 'a connection attempt', 20_000)
    await new Promise((r) => setTimeout(r, 500))
    const required = readFileSync(cjsLog, 'utf8').split('\n')
    expect(required.some((f) => f.endsWith('/node_modules/mqtt/build/lib/client.js'))).toBe(true)
    expect(required.filter((f) => /\/node_modules\/(ws|socks|ip-address)\/|\/mqtt\/build\/lib\/connect\//.test(f))).toEqual([])
  })
})
