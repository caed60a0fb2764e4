import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createAgent } from '../agent/agent.js'
import { resolveAgentConfig } from '../agent/config.js'
import { loadAgentConfig } from '../agent/config-sources.js'
import { removeDir, tempDir } from './agent.support.js'

/** The job options of the agent config: defaults, schedules, and the handlers module. */

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) removeDir(d) })
const base = { hub: 'mqtt://127.0.0.1:1', id: 'dev-cfg', token: 't' }

describe('agent job config', () => {
  it('has defaults and resolves schedules', () => {
    const c = resolveAgentConfig({ ...base, schedules: [{ name: 'tick', cron: '*/5 * * * *', task: 'echo', timeoutMs: '30s' }, { name: 'tock', cron: '0 * * * *', task: 'sensors.sample', timezone: 'UTC' }] })
    expect(c).toMatchObject({ jobQueueMax: 100, jobConcurrency: 2, pullIntervalMs: 300_000, shellAllow: [], shellMaxOutputBytes: 65536, handlersModule: undefined })
    expect(c.schedules).toEqual([
      { name: 'tick', cron: '*/5 * * * *', task: 'echo', timeoutMs: 30_000 },
      { name: 'tock', cron: '0 * * * *', task: 'sensors.sample', timezone: 'UTC', timeoutMs: 60_000 },
    ])
  })

  it('refuses bad schedules, naming each field', () => {
    let message = ''
    try {
      resolveAgentConfig({ ...base, schedules: [{ name: 'Bad Name', cron: '99 * * * *', task: 'x y', timezone: 'Mars/Olympus' }, { name: 'ok', cron: 'every hour', task: 'echo' }] })
    } catch (err) {
      message = (err as Error).message
    }
    expect(message).toContain('schedules.0.name')
    expect(message).toContain('schedules.0.cron: "99 * * * *" is not a cron expression')
    expect(message).toContain('schedules.0.task')
    expect(message).toContain('schedules.0.timezone')
    expect(message).toContain('schedules.1.cron')
  })

  it('resolves handlersModule against the config file, and a bad module fails start with a clear message', async () => {
    const dir = tempDir()
    dirs.push(dir)
    writeFileSync(join(dir, 'handlers.mjs'), 'export const handlers = { "Bad Name": () => 1 }\n')
    writeFileSync(join(dir, 'agent.json'), JSON.stringify({ handlersModule: './handlers.mjs' }))
    const c = loadAgentConfig({ flags: { ...base, config: join(dir, 'agent.json'), data: join(dir, 'data') } })
    expect(c.handlersModule).toBe(join(dir, 'handlers.mjs'))
    const agent = createAgent(c)
    await expect(agent.start()).rejects.toThrow(/handlersModule .*handlers\.mjs: handler name "Bad Name" is not a task name/)
    await agent.stop()
  })
})
