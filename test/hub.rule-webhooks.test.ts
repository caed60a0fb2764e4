import { createServer, type IncomingMessage, type Server } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { manualClock } from '../common/clock.js'
import { encode, topics } from '../protocol/index.js'
import { BREAKER_FAILURES } from '../hub/rules/limits.js'
import { backoffMs, signature, verdictOf } from '../hub/rules/webhook.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'

/**
 * Webhooks and the circuit breaker on a real hub, against a real HTTP server
 * in the test that answers as it is told. The hub runs on a manual clock, so
 * the back-off between tries passes when the test moves it.
 */

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

interface Call { readonly headers: IncomingMessage['headers']; readonly body: string }

/** A receiver that answers each call with the next status of `statuses` (the last one repeats). */
async function receiver(statuses: readonly number[]): Promise<{ url: string; calls: Call[] }> {
  const calls: Call[] = []
  const server: Server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => { body += chunk })
    req.on('end', () => {
      calls.push({ headers: req.headers, body })
      res.writeHead(statuses[Math.min(calls.length - 1, statuses.length - 1)]!, { connection: 'close' })
      res.end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve) }))
  const address = server.address()
  return { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/hook`, calls }
}

async function hubAndDevice(clock = manualClock(Date.now())): Promise<{ h: TestHub; dev: MqttClient; clock: typeof clock }> {
  const h = await startTestHub({}, undefined, undefined, clock)
  cleanups.push(() => h.stop())
  const token = await h.addDevice('pump-1')
  const dev = await connectDevice(h.mqttUrl, 'pump-1', token)
  cleanups.push(() => dev.endAsync())
  return { h, dev, clock }
}

const storeId = '0b6c3d1e-aaaa-4bbb-8ccc-0000000000b1'
const SECRET = 'a-shared-secret-of-some-length'

describe('webhook decisions', () => {
  it.each([
    [{ status: 200 }, 'done'], [{ status: 204 }, 'done'], [{ status: 500 }, 'retry'], [{ status: 503 }, 'retry'],
    [{ status: 429 }, 'retry'], [{ status: 408 }, 'retry'], [{ error: 'ECONNREFUSED' }, 'retry'],
    [{ status: 400 }, 'give-up'], [{ status: 404 }, 'give-up'], [{ status: 301 }, 'give-up'],
  ] as const)('%j: %s', (result, verdict) => {
    expect(verdictOf(result)).toBe(verdict)
  })

  it('backs off 1 s, 2 s, 4 s ... up to a minute', () => {
    expect([1, 2, 3, 4, 7, 20].map(backoffMs)).toEqual([1000, 2000, 4000, 8000, 60_000, 60_000])
  })
})

describe('rules calling webhooks', () => {
  it('tries again after 503s and delivers once, signed, with the same delivery id on every try', async () => {
    const hook = await receiver([503, 503, 503, 200])
    const { h, dev, clock } = await hubAndDevice()
    const rules = h.running.services.rules
    await rules.add({
      name: 'pump.hot', for: 'device:pump-1', when: { telemetry: { sensor: 'temp', op: '>', value: 80 } },
      then: [{ webhook: { url: hook.url, secret: SECRET } }],
    })
    expect(rules.get('pump.hot').then).toEqual([{ webhook: { url: hook.url, secret: '(set)' } }])
    await dev.publishAsync(topics.telemetry('pump-1'), encode({ type: 'telemetry', v: 1, storeId, prev: 0, samples: [{ seq: 1, ts: clock.now(), sensor: 'temp', value: 91 }] }), { qos: 1 })
    for (let tried = 1; tried <= 3; tried++) {
      await waitFor(() => hook.calls.length === tried, `try ${tried}`)
      clock.advance(backoffMs(tried))
    }
    await waitFor(() => rules.stats().actions.done === 1, 'the action done')
    expect(hook.calls).toHaveLength(4)
    const firing = rules.get('pump.hot').recentFirings[0]!
    for (const c of hook.calls) {
      expect(c.headers['x-rollcall-delivery']).toBe(`${firing.id}.0`)
      const ts = Number(c.headers['x-rollcall-timestamp'])
      expect(c.headers['x-rollcall-signature']).toBe(signature(SECRET, ts, c.body))
      expect(JSON.parse(c.body)).toMatchObject({ type: 'rule.firing', v: 1, rule: 'pump.hot', firing: firing.id, deviceId: 'pump-1', trigger: { sensor: 'temp', value: 91, seq: 1 } })
    }
    const chain = await h.running.services.firingChain(firing.id)
    expect(chain.actions[0]).toMatchObject({ kind: 'webhook', status: 'done', attempts: 4, outcome: { attempts: 4, status: 200 }, spec: { webhook: { secret: '(set)' } } })
    // The secret signs the calls and shows nowhere.
    expect(JSON.stringify(chain)).not.toContain(SECRET)
    expect(JSON.stringify(rules.get('pump.hot'))).not.toContain(SECRET)
  })

  it('gives up after maxAttempts and keeps the call with the dead letters', async () => {
    const hook = await receiver([500])
    const { h, dev, clock } = await hubAndDevice()
    const rules = h.running.services.rules
    await rules.add({ name: 'pump.hot', for: 'all', when: { telemetry: { sensor: 'temp', op: '>', value: 80 } }, then: [{ webhook: { url: hook.url, maxAttempts: 2 } }] })
    await dev.publishAsync(topics.telemetry('pump-1'), encode({ type: 'telemetry', v: 1, storeId, prev: 0, samples: [{ seq: 1, ts: clock.now(), sensor: 'temp', value: 91 }] }), { qos: 1 })
    await waitFor(() => hook.calls.length === 1, 'the first try')
    clock.advance(backoffMs(1))
    await waitFor(() => rules.stats().actions.failed === 1, 'the action given up')
    expect(hook.calls).toHaveLength(2)
    expect(hook.calls[0]!.headers['x-rollcall-signature']).toBeUndefined()
    expect(rules.get('pump.hot').counters.actionsFailed).toBe(1)
    const letters = await waitFor(async () => {
      const list = await h.running.services.deadLetters.list({ limit: 10 })
      return list.length > 0 ? list : undefined
    }, 'the dead letter')
    expect(letters[0]).toMatchObject({ deviceId: 'pump-1', topic: `webhook:${hook.url}`, reason: 'WEBHOOK_FAILED' })
    expect(letters[0]!.detail).toMatch(/answered 500 after 2 tries/)
  })

  it('pauses a rule whose actions keep failing, counts what it holds back, and resumes it on enable', async () => {
    const hook = await receiver([400])
    const { h, dev, clock } = await hubAndDevice()
    const rules = h.running.services.rules
    await rules.add({ name: 'pump.fault', for: 'device:pump-1', when: { event: { kind: 'pump.fault', level: 'error' } }, then: [{ webhook: { url: hook.url } }] })
    const events = (from: number, n: number, level: 'warn' | 'error' = 'error') => dev.publishAsync(topics.events('pump-1'), encode({
      type: 'events', v: 1, storeId, prev: from - 1,
      events: Array.from({ length: n }, (_, i) => ({ seq: from + i, ts: clock.now(), kind: 'pump.fault', level, message: `fault ${from + i}` })),
    }), { qos: 1 })
    // An event of another level does not match.
    await events(1, 1, 'warn')
    await events(2, BREAKER_FAILURES)
    await waitFor(() => rules.get('pump.fault').paused !== null, 'the rule paused')
    expect(rules.get('pump.fault').counters).toMatchObject({ fired: BREAKER_FAILURES, actionsFailed: BREAKER_FAILURES })
    await events(2 + BREAKER_FAILURES, 3)
    await waitFor(() => rules.get('pump.fault').counters.suppressedPaused === 3, 'held back while paused')
    expect(hook.calls).toHaveLength(BREAKER_FAILURES)

    await rules.setEnabled('pump.fault', true)
    expect(rules.get('pump.fault').paused).toBeNull()
    await events(5 + BREAKER_FAILURES, 1)
    await waitFor(() => hook.calls.length === BREAKER_FAILURES + 1, 'acting again')
  })
})
