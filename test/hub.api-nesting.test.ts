import { afterEach, describe, expect, it } from 'vitest'
import { LIMITS } from '../protocol/limits.js'
import { startTestHub, type TestHub } from './support/hub.js'

/**
 * H05: free-form JSON in API bodies (a job's payload, a command's args, a
 * schedule's job payload) nested 200,000 deep used to overflow the stack in
 * the handler and answer 500 INTERNAL. It is a 400 that names the limit, and
 * the hub keeps serving. Bodies are written by hand over real HTTP:
 * JSON.stringify cannot write such nesting.
 */
describe('API bodies nested too deep', () => {
  const hubs: TestHub[] = []
  afterEach(async () => {
    while (hubs.length) await hubs.pop()!.stop()
  })

  const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth)

  async function post(hub: TestHub, path: string, body: string): Promise<{ status: number; body: { error?: { code: string; message: string } } }> {
    const r = await fetch(`http://127.0.0.1:${hub.running.httpPort}${path}`, {
      method: 'POST', headers: { authorization: `Bearer ${hub.running.adminToken}`, 'content-type': 'application/json' }, body,
    })
    return { status: r.status, body: await r.json() as { error?: { code: string; message: string } } }
  }

  it.each([
    ['a job payload', '/api/jobs', (v: string) => `{"name":"echo","target":"device:dev-1","payload":${v}}`, 'the job payload'],
    ['command args', '/api/devices/dev-1/commands', (v: string) => `{"name":"ping","args":${v}}`, 'args'],
    ['group command args', '/api/commands', (v: string) => `{"target":"device:dev-1","name":"ping","args":${v}}`, 'args'],
    ['a schedule\'s job payload', '/api/schedules', (v: string) => `{"name":"nightly","cron":"0 3 * * *","job":{"name":"echo","target":"device:dev-1","payload":${v}}}`, 'the job payload'],
    ['a job\'s rate', '/api/jobs', (v: string) => `{"name":"echo","target":"device:dev-1","rate":${v}}`, 'rate=an array nested too deep'],
    ['a job\'s expiresAt', '/api/jobs', (v: string) => `{"name":"echo","target":"device:dev-1","expiresAt":${v}}`, 'expiresAt=an array nested too deep'],
  ])('%s nested 200,000 deep is a 400 that says which limit', async (_what, path, body, named) => {
    const hub = await startTestHub()
    hubs.push(hub)
    await hub.addDevice('dev-1')
    const r = await post(hub, path, body(nested(200_000)))
    expect(r.status).toBe(400)
    expect(r.body.error?.code).toMatch(/^(TOO_DEEP|BAD_REQUEST)$/)
    expect(r.body.error?.message).toContain(named)
    if (r.body.error?.code === 'TOO_DEEP') expect(r.body.error.message).toContain(`${LIMITS.maxJsonDepth} levels`)
    // Still serving, and the same call at the limit is accepted.
    const ok = await post(hub, '/api/jobs', `{"name":"echo","target":"device:dev-1","payload":${nested(LIMITS.maxJsonDepth)}}`)
    expect(ok.status).toBe(201)
  })

  it('refuses one level past the limit as TOO_DEEP', async () => {
    const hub = await startTestHub()
    hubs.push(hub)
    await hub.addDevice('dev-1')
    const r = await post(hub, '/api/jobs', `{"name":"echo","target":"device:dev-1","payload":${nested(LIMITS.maxJsonDepth + 1)}}`)
    expect(r.status).toBe(400)
    expect(r.body.error?.code).toBe('TOO_DEEP')
  })
})
