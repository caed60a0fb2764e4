import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { encode, topics, type Sample } from '../protocol/index.js'
import { createLiveFeed, diffFleet, parseTopics, type FleetRow } from '../hub/observe/live-feed.js'
import { RollcallError } from '../common/errors.js'
import { silentLogger } from '../common/logger.js'
import { systemClock } from '../common/clock.js'
import { isDeviceId } from '../protocol/ids.js'
import { connectDevice, startTestHub, waitFor, type TestHub } from './support/hub.js'
import { drained } from './support/leaks.js'

/**
 * The dashboard's live feed (GET /api/live, Server-Sent Events) and its
 * files: what a stream is sent, against a real hub and raw MQTT devices; and
 * the pure diff and topic parsing as tables.
 */

const row = (id: string, patch: Partial<FleetRow> = {}): FleetRow => ({
  id, group: 'g', status: 'online', reason: 'birth', since: 1000, lastSeen: 10_000, backlog: 0, agentVersion: '0.1.0', ...patch,
})

describe('diffFleet', () => {
  const prev = new Map([['a', row('a')], ['b', row('b')]])
  it.each([
    ['nothing changed', [row('a'), row('b')], [], []],
    ['lastSeen moved less than the step', [row('a', { lastSeen: 14_999 }), row('b')], [], []],
    ['lastSeen moved by the step', [row('a', { lastSeen: 15_000 }), row('b')], ['a'], []],
    ['presence changed', [row('a', { status: 'offline', reason: 'shutdown', since: 20_000 }), row('b')], ['a'], []],
    ['backlog changed', [row('a'), row('b', { backlog: 12 })], ['b'], []],
    ['agent upgraded', [row('a', { agentVersion: '0.2.0' }), row('b')], ['a'], []],
    ['group changed', [row('a', { group: null }), row('b')], ['a'], []],
    ['first seen', [row('a', { lastSeen: null }), row('b')], ['a'], []],
    ['device added', [row('a'), row('b'), row('c')], ['c'], []],
    ['device removed', [row('a')], [], ['b']],
  ] as const)('%s', (_name, rows, changed, removed) => {
    const d = diffFleet(prev, rows, 5000)
    expect(d.changed.map((r) => r.id)).toEqual(changed)
    expect(d.removed).toEqual(removed)
    expect([...d.next.keys()].sort()).toEqual(rows.map((r) => r.id).sort())
  })

  it('keeps what was broadcast for small lastSeen moves, so they add up to a step', () => {
    let held: ReadonlyMap<string, FleetRow> = prev
    const sent: number[] = []
    for (let t = 11_000; t <= 21_000; t += 1000) {
      const d = diffFleet(held, [row('a', { lastSeen: t }), row('b')], 5000)
      if (d.changed.length > 0) sent.push(t)
      held = d.next
    }
    expect(sent).toEqual([15_000, 20_000])
  })
})

describe('parseTopics', () => {
  it.each([
    ['fleet', { fleet: true, jobs: false, devices: [] }],
    ['jobs, fleet', { fleet: true, jobs: true, devices: [] }],
    ['device:dev-1,device:dev-1,device:dev-2', { fleet: false, jobs: false, devices: ['dev-1', 'dev-2'] }],
  ])('%s', (text, expected) => {
    expect(parseTopics(text, isDeviceId)).toEqual(expected)
  })

  it.each([
    ['', /no topic/],
    ['fleets', /unknown topic "fleets": topics are fleet, jobs and device:ID/],
    ['device:', /unknown topic "device:"/],
    ['device:Bad Id', /unknown topic/],
    [Array.from({ length: 9 }, (_, i) => `device:dev-${i}`).join(','), /at most 8 device topics/],
  ])('refuses %j', (text, message) => {
    expect(() => parseTopics(text, isDeviceId)).toThrow(message)
  })

  it('refuses with BAD_REQUEST naming the input, as the API answers it (issue #16)', () => {
    let thrown: unknown
    try { parseTopics('fleets', isDeviceId) } catch (err) { thrown = err }
    expect(thrown).toBeInstanceOf(RollcallError)
    expect((thrown as RollcallError).code).toBe('BAD_REQUEST')
    expect((thrown as RollcallError).message).toMatch(/^topics="fleets": unknown topic/)
  })
})

interface LiveEvent { readonly event: string; readonly data: Record<string, unknown> }

/** Reads a live stream with fetch, as the dashboard does; events are collected as they come. */
async function openStream(hub: TestHub, topicsParam: string, token = hub.running.adminToken) {
  const controller = new AbortController()
  const res = await fetch(`http://127.0.0.1:${hub.running.httpPort}/api/live?topics=${encodeURIComponent(topicsParam)}`, {
    headers: { authorization: `Bearer ${token}` }, signal: controller.signal,
  })
  const events: LiveEvent[] = []
  let ended = false
  let clean = false
  if (res.ok && res.body) {
    void (async () => {
      let buffer = ''
      try {
        const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
        for (;;) {
          const { value, done } = await reader.read()
          if (done) {
            clean = true
            break
          }
          buffer += value
          let cut: number
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut)
            buffer = buffer.slice(cut + 2)
            const event = /^event: (.*)$/m.exec(block)?.[1]
            const data = /^data: (.*)$/m.exec(block)?.[1]
            if (event && data) events.push({ event, data: JSON.parse(data) as Record<string, unknown> })
          }
        }
      } catch {
        // aborted by the test
      }
      ended = true
    })()
  }
  return { res, events, ended: () => ended, endedCleanly: () => clean, close: () => controller.abort() }
}

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function hubWithDevice(overrides = {}) {
  const hub = await startTestHub({ liveTickMs: 100, ...overrides })
  cleanups.push(() => hub.stop())
  const token = await hub.addDevice('live-1', 'lab')
  await hub.addDevice('live-2')
  return { hub, token }
}

async function bringOnline(hub: TestHub, id: string, token: string): Promise<MqttClient> {
  const c = await connectDevice(hub.mqttUrl, id, token)
  cleanups.push(() => c.endAsync())
  await c.publishAsync(topics.state(id), encode({ type: 'birth', v: 1, epoch: 1, bootId: 'b1', agentVersion: '9.9.9', storeId: 'store-live-1', capabilities: [] }), { qos: 1, retain: true })
  await waitFor(() => hub.running.services.presence.isReachable(id), `${id} online`)
  return c
}

describe('GET /api/live', () => {
  it('sends the fleet snapshot, then only the rows that change', async () => {
    const { hub, token } = await hubWithDevice()
    const s = await openStream(hub, 'fleet')
    cleanups.push(s.close)
    expect(s.res.status).toBe(200)
    expect(s.res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const snapshot = await waitFor(() => s.events.find((e) => e.event === 'fleet'), 'the snapshot')
    expect((snapshot.data.devices as FleetRow[]).map((r) => [r.id, r.status, r.group])).toEqual([['live-1', 'offline', 'lab'], ['live-2', 'offline', null]])

    const device = await bringOnline(hub, 'live-1', token)
    const online = await waitFor(() => s.events.find((e) => e.event === 'devices' && (e.data.changed as FleetRow[]).some((r) => r.id === 'live-1' && r.status === 'online')), 'live-1 online')
    const changed = online.data.changed as FleetRow[]
    expect(changed.map((r) => r.id)).toEqual(['live-1'])
    expect(changed[0]).toMatchObject({ agentVersion: '9.9.9', reason: 'birth' })

    await device.endAsync()
    await waitFor(() => s.events.find((e) => e.event === 'devices' && (e.data.changed as FleetRow[]).some((r) => r.id === 'live-1' && r.status === 'offline')), 'live-1 offline')
    await hub.api('DELETE', '/api/devices/live-2')
    await waitFor(() => s.events.find((e) => e.event === 'devices' && (e.data.removed as string[]).includes('live-2')), 'live-2 removed')
    // No row was sent for the device that did not change.
    expect(s.events.filter((e) => e.event === 'devices').flatMap((e) => e.data.changed as FleetRow[]).filter((r) => r.id === 'live-2')).toEqual([])
    expect(s.events.some((e) => e.event === 'tick')).toBe(true)
  })

  it('pushes a watched device its stored samples once each, duplicates never, with the backlog it reported', async () => {
    const { hub, token } = await hubWithDevice()
    const s = await openStream(hub, 'device:live-1')
    cleanups.push(s.close)
    await waitFor(() => s.events.find((e) => e.event === 'fleet'), 'the snapshot')
    const c = await bringOnline(hub, 'live-1', token)
    const now = Date.now()
    const samples: Sample[] = Array.from({ length: 6 }, (_, i) => ({ seq: i + 1, ts: now + i, sensor: 'env.temp', value: 20 + i }))
    const batch = (from: number, to: number, prev: number) => encode({ type: 'telemetry', v: 1, storeId: 'store-live-1', prev, backlog: 6 - from, samples: samples.slice(from, to) })
    await c.publishAsync(topics.telemetry('live-1'), batch(0, 4, 0), { qos: 1 })
    // A resend overlapping what is stored: only seq 5 and 6 are new.
    await c.publishAsync(topics.telemetry('live-1'), batch(2, 6, 2), { qos: 1 })
    await waitFor(() => hub.running.services.telemetry.counters().samplesStored === 6 && hub.running.services.telemetry.counters().samplesDuplicate === 2, 'stored 6, 2 duplicates')
    const pushed = await waitFor(() => {
      const all = s.events.filter((e) => e.event === 'samples').flatMap((e) => e.data.samples as Sample[])
      return all.length >= 6 ? all : undefined
    }, 'six samples pushed')
    await new Promise((r) => setTimeout(r, 300))
    expect(s.events.filter((e) => e.event === 'samples').flatMap((e) => (e.data.samples as Sample[]).map((x) => x.seq))).toEqual([1, 2, 3, 4, 5, 6])
    expect(pushed.map((x) => x.value)).toEqual([20, 21, 22, 23, 24, 25])
    const rows = s.events.filter((e) => e.event === 'devices').flatMap((e) => e.data.changed as FleetRow[])
    expect(rows.every((r) => r.id === 'live-1')).toBe(true)
    await waitFor(() => rows.concat(s.events.filter((e) => e.event === 'devices').flatMap((e) => e.data.changed as FleetRow[])).some((r) => r.backlog === 4), 'the backlog of the last batch (4)')
  })

  it('sends the jobs with their counts when they change', async () => {
    const { hub } = await hubWithDevice()
    const s = await openStream(hub, 'jobs')
    cleanups.push(s.close)
    const first = await waitFor(() => s.events.find((e) => e.event === 'jobs'), 'the jobs snapshot')
    expect(first.data.jobs).toEqual([])
    const job = await hub.api<{ id: string }>('POST', '/api/jobs', { name: 'echo', target: 'device:live-1' })
    const seen = await waitFor(() => s.events.find((e) => e.event === 'jobs' && (e.data.jobs as Array<{ id: string }>).some((j) => j.id === job.body.id)), 'the new job')
    expect((seen.data.jobs as Array<{ counts: Record<string, number> }>)[0]!.counts.queued).toBe(1)
    const before = s.events.filter((e) => e.event === 'jobs').length
    await new Promise((r) => setTimeout(r, 500))
    expect(s.events.filter((e) => e.event === 'jobs').length).toBe(before)
  })

  it('answers a bad request with what to fix, needs the token, and caps the streams', async () => {
    const { hub } = await hubWithDevice({ liveMaxStreams: 2 })
    const noToken = await openStream(hub, 'fleet', 'wrong')
    expect(noToken.res.status).toBe(401)
    const bad = await openStream(hub, 'fleet,gossip')
    expect(bad.res.status).toBe(400)
    expect((await bad.res.json() as { error: { message: string } }).error.message).toMatch(/unknown topic "gossip": topics are fleet, jobs and device:ID/)
    const unknown = await openStream(hub, 'device:nobody-here')
    expect(unknown.res.status).toBe(404)
    expect((await unknown.res.json() as { error: { code: string } }).error.code).toBe('DEVICE_NOT_FOUND')
    const a = await openStream(hub, 'fleet')
    const b = await openStream(hub, 'jobs')
    cleanups.push(a.close, b.close)
    await waitFor(() => a.events.length > 0 && b.events.length > 0, 'two streams open')
    const metrics = await (await fetch(`http://127.0.0.1:${hub.running.httpPort}/metrics`, { headers: { authorization: `Bearer ${hub.running.adminToken}` } })).text()
    expect(metrics).toMatch(/^rollcall_live_streams 2$/m)
    const c = await openStream(hub, 'fleet')
    expect(c.res.status).toBe(503)
    expect((await c.res.json() as { error: { message: string } }).error.message).toMatch(/2 live streams are open already/)
    // A closed stream frees its place.
    a.close()
    const d = await waitFor(async () => {
      const x = await openStream(hub, 'fleet')
      if (x.res.status === 200) return x
      return undefined
    }, 'a place after one closed', 5000, 100)
    cleanups.push(d.close)
  })

  it('ends open streams cleanly when the hub stops, and frees a closed stream at once', async () => {
    const { hub } = await hubWithDevice()
    const gone = await openStream(hub, 'fleet')
    await waitFor(() => gone.events.length > 0, 'the snapshot')
    gone.close()
    await waitFor(async () => (await hub.api<{ live: { streams: number } }>('GET', '/api/stats')).body.live.streams === 0, 'the closed stream freed')
    const s = await openStream(hub, 'fleet')
    await waitFor(() => s.events.length > 0, 'the snapshot')
    const t0 = Date.now()
    await hub.stop()
    await waitFor(() => s.ended(), 'the stream ended', 5000)
    // Ended by the feed (a clean end of the response), not by the socket being torn down.
    expect(s.endedCleanly()).toBe(true)
    expect(Date.now() - t0).toBeLessThan(3000)
  })
})

describe('dashboard files', () => {
  it('serves the page, its modules and uPlot without a token, and nothing else from node_modules', async () => {
    const { hub } = await hubWithDevice()
    const base = `http://127.0.0.1:${hub.running.httpPort}`
    const root = await fetch(`${base}/`, { redirect: 'manual' }).then(drained)
    expect(root.status).toBe(302)
    expect(root.headers.get('location')).toBe('/ui/')
    expect((await fetch(`${base}/ui`, { redirect: 'manual' }).then(drained)).headers.get('location')).toBe('/ui/')
    const page = await fetch(`${base}/ui/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'self';.*frame-ancestors 'none'/)
    const html = await page.text()
    for (const ref of [...html.matchAll(/(?:src|href)="(\/ui\/[^"]+)"/g)].map((m) => m[1]!)) {
      const r = await fetch(`${base}${ref}`).then(drained)
      expect(r.status, ref).toBe(200)
    }
    expect((await fetch(`${base}/ui/app.js`).then(drained)).headers.get('content-type')).toMatch(/javascript/)
    expect((await fetch(`${base}/ui/vendor/uPlot.cjs.js`).then(drained)).status).toBe(404)
    expect((await fetch(`${base}/ui/vendor/../../package.json`).then(drained)).status).toBe(404)
    // The page holds no data: the API behind it still needs the token.
    expect((await fetch(`${base}/api/devices`).then(drained)).status).toBe(401)
  })
})

describe('createLiveFeed', () => {
  // A second feed on a running hub's stores, driven directly: what it holds is visible.
  async function feedOnHub() {
    const { hub, token } = await hubWithDevice()
    const s = hub.running.services
    const feed = createLiveFeed({ tickMs: 50, lastSeenStepMs: 5000, jobsShown: 50 }, {
      registry: s.registry, presence: s.presence, telemetry: s.telemetry, jobs: s.jobs, clock: systemClock, logger: silentLogger(),
    })
    cleanups.push(() => feed.close())
    return { hub, token, feed }
  }

  it('runs its timer only while someone listens, and lets go of a device when its stream ends', async () => {
    const { hub, token, feed } = await feedOnHub()
    expect(feed.running).toBe(false)
    const got: string[] = []
    let ended = 0
    const unsubscribe = feed.subscribe({ fleet: false, jobs: false, devices: ['live-1'] }, (event) => { got.push(event); return true }, () => { ended++ })
    expect(feed.running).toBe(true)
    expect(got).toEqual(['fleet'])
    unsubscribe()
    expect({ running: feed.running, subscribers: feed.subscribers, ended }).toEqual({ running: false, subscribers: 0, ended: 1 })
    // The sample watcher went with it: a stored sample reaches nobody.
    const c = await bringOnline(hub, 'live-1', token)
    await c.publishAsync(topics.telemetry('live-1'), encode({ type: 'telemetry', v: 1, storeId: 'store-live-1', samples: [{ seq: 1, ts: Date.now(), sensor: 'env.temp', value: 1 }] }), { qos: 1 })
    await waitFor(() => hub.running.services.telemetry.counters().samplesStored === 1, 'stored')
    await new Promise((r) => setTimeout(r, 150))
    expect(got).toEqual(['fleet'])
  })

  it('drops a subscriber that cannot keep up, and refuses new ones once closed', async () => {
    const { feed } = await feedOnHub()
    let fast = 0
    let slowEnded = false
    feed.subscribe({ fleet: true, jobs: false, devices: [] }, () => { fast++; return true }, () => {})
    // Takes the fleet's snapshot, then reports it is full when the jobs' (read from the database) comes.
    let calls = 0
    feed.subscribe({ fleet: true, jobs: true, devices: [] }, () => ++calls < 2, () => { slowEnded = true })
    await waitFor(() => slowEnded, 'the slow subscriber dropped')
    expect(calls).toBe(2)
    expect(feed.subscribers).toBe(1)
    await waitFor(() => fast >= 3, 'the other subscriber still served')
    feed.close()
    expect({ subscribers: feed.subscribers, running: feed.running }).toEqual({ subscribers: 0, running: false })
    let lateEnded = false
    feed.subscribe({ fleet: true, jobs: false, devices: [] }, () => true, () => { lateEnded = true })
    expect({ lateEnded, subscribers: feed.subscribers, running: feed.running }).toEqual({ lateEnded: true, subscribers: 0, running: false })
  })
})
