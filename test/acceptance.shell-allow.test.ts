import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { startAgents, waitJobDone, waitOnline } from './support/agents.js'
import { startTestHub, tempDir } from './support/hub.js'

/**
 * #12 section 4: a shellAllow entry that pins arguments, end to end: a real
 * hub sends `shell` jobs to a real agent; the allowed argv runs, another
 * argument is refused with the entry that was close and why it did not fit,
 * and a plain entry for a command that runs other commands is warned about
 * at start.
 */
describe('shell allowlist with pinned arguments, hub to agent', () => {
  const cleanups: Array<() => Promise<unknown> | void> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('runs the allowed argv, refuses another argument with its reason, warns about a plain env', async () => {
    const hub = await startTestHub({ flushDelayMs: 5 })
    cleanups.push(() => hub.stop())
    const tmp = tempDir('shell-allow')
    cleanups.push(tmp.remove)
    const warnings: string[] = []
    const logger = pino({ level: 'warn' }, { write: (s: string) => { warnings.push((JSON.parse(s) as { msg: string }).msg) } })
    const token = await hub.addDevice('pump-1')
    const [agent] = await startAgents(hub.mqttUrl, tmp.dir, [{ id: 'pump-1', token }], {
      shellAllow: [['/bin/echo', 'restart', 'pump'], { cmd: '/bin/echo', args: ['status', { pattern: 'pump|fan' }] }, '/usr/bin/env'],
    }, { logger })
    cleanups.push(() => agent!.stop())
    await waitOnline(hub, ['pump-1'])
    expect(warnings.filter((w) => w.includes('"/usr/bin/env" allows it with any arguments'))).toHaveLength(1)

    const jobs = hub.running.services.jobs
    const shell = async (args: string[]) => (await jobs.create({ name: 'shell', target: 'device:pump-1', payload: { cmd: '/bin/echo', args } }))!
    const restart = await shell(['restart', 'pump'])
    const other = await shell(['restart', 'boiler'])
    const status = await shell(['status', 'fan'])
    const sneaky = await shell(['status', 'fan;reboot'])

    expect((await waitJobDone(hub, restart.id)).executions[0]).toMatchObject({ state: 'succeeded', result: { exitCode: 0, stdout: 'restart pump\n' } })
    expect((await waitJobDone(hub, status.id)).executions[0]).toMatchObject({ state: 'succeeded', result: { exitCode: 0, stdout: 'status fan\n' } })

    const o = (await waitJobDone(hub, other.id)).executions[0]!
    expect(o).toMatchObject({ state: 'rejected', error: { code: 'COMMAND_NOT_ALLOWED' } })
    expect(o.error!.message).toMatch(/\["\/bin\/echo","restart","pump"\]: argument 2 is "boiler", it allows only "pump"/)
    const s = (await waitJobDone(hub, sneaky.id)).executions[0]!
    expect(s).toMatchObject({ state: 'rejected', error: { code: 'COMMAND_NOT_ALLOWED' } })
    expect(s.error!.message).toMatch(/argument 2 is "fan;reboot", it must match the whole of \/pump\|fan\//)
  })
})
