import { spawn } from 'node:child_process'
import { Agent as HttpAgent, request } from 'node:http'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt, { type MqttClient } from 'mqtt'
import { percentiles } from '../common/latency.js'
import { openDatabase } from '../common/sqlite.js'
import { provision, startIdleFleets, type Fleet } from './fleet.js'
import { startHubProcess } from './hub-process.js'
import { cpuMs, mb, rssBytes } from './proc-stats.js'
import { startRawAedes } from './raw-aedes-process.js'
import { table } from '../cli/output.js'

/**
 * `npm run bench -- commands`: in one run,
 * 1. the baseline: a request/response round trip through a bare aedes, one
 *    MQTT.js requester publishing QoS 1 to one responder that answers QoS 1
 *    on another topic, one at a time, TCP_NODELAY on every socket;
 * 2. a command round trip through the hub: `ping` to one device at a time,
 *    over the HTTP API (a keep-alive client), to N connected agents (real
 *    agent code in two fleet processes), timed by the client;
 * 3. a group command (`ping` to `all`) until every member has answered.
 * The baselines run first, before the hub and the fleets exist, so they have
 * the machine to themselves. Besides raw MQTT, the HTTP floor: the same
 * client POSTing to a bare node:http server that answers at once, since the
 * round trip through the hub is an HTTP call around an MQTT one. The hub is
 * timed with two keep-alive clients: fetch (what the CLI uses) and node:http
 * with a keep-alive Agent (about 0.3 ms less per call on this machine).
 * And the disk's floor: the hub commits a command's record before it sends
 * it and again before it answers, so one commit of one row (WAL,
 * synchronous=FULL, on the hub's file system) is timed on its own.
 */
export interface CommandsBenchOptions {
  readonly agents: number
  readonly commands: number
  readonly warmup: number
  readonly rounds: number
}

type Latency = ReturnType<typeof percentiles> & { mean: number }

function latency(values: number[]): Latency {
  return { ...percentiles(values), mean: values.reduce((a, b) => a + b, 0) / values.length }
}

type Post = (url: string, body: string, headers: Record<string, string>) => Promise<{ status: number; text: string }>

const fetchPost: Post = async (url, body, headers) => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
  return { status: res.status, text: await res.text() }
}

function nodeHttpPost(): { post: Post; close: () => void } {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 })
  const post: Post = (url, body, headers) => new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
    })
    req.on('error', reject)
    req.end(body)
  })
  return { post, close: () => agent.destroy() }
}

/** The HTTP floor: sequential POSTs to a bare node:http server in another process that answers a small JSON at once. */
async function httpFloor(post: Post, warmup: number, count: number): Promise<Latency> {
  const server = 'const s=require("node:http").createServer((q,r)=>{q.resume();q.on("end",()=>{r.setHeader("content-type","application/json");r.end(\'{"ok":true,"result":{"pong":true}}\')})});s.listen(0,"127.0.0.1",()=>console.log(s.address().port))'
  const child = spawn(process.execPath, ['-e', server], { stdio: ['ignore', 'pipe', 'ignore'] })
  try {
    const port = await new Promise<number>((resolve) => {
      createInterface({ input: child.stdout }).once('line', (l) => resolve(Number(l)))
    })
    const url = `http://127.0.0.1:${port}/api/devices/x/commands`
    const body = JSON.stringify({ name: 'ping', timeout: '5s' })
    const times: number[] = []
    for (let i = 0; i < warmup + count; i++) {
      const t0 = performance.now()
      await post(url, body, { authorization: 'Bearer x' })
      if (i >= warmup) times.push(performance.now() - t0)
    }
    return latency(times)
  } finally {
    child.kill('SIGTERM')
  }
}

/** The disk floor: sequential one-row commits (WAL, synchronous=FULL, as the hub's database) in `dir`. */
function commitFloor(dir: string, warmup: number, count: number): Latency {
  const db = openDatabase(join(dir, 'commit-floor.db'), { synchronous: 'FULL' })
  try {
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)')
    const insert = db.prepare<[string]>('INSERT INTO t (v) VALUES (?)')
    const one = db.transaction((v: string) => { insert.run(v) })
    const row = JSON.stringify({ name: 'ping', status: 'sent' }).padEnd(200, ' ')
    const times: number[] = []
    for (let i = 0; i < warmup + count; i++) {
      const t0 = performance.now()
      one(row)
      if (i >= warmup) times.push(performance.now() - t0)
    }
    return latency(times)
  } finally {
    db.close()
  }
}

/** An MQTT.js client whose socket has Nagle off from the start, as the agent's link does. */
async function noDelayClient(url: string, clientId: string): Promise<MqttClient> {
  const client = mqtt.connect(url, { clientId, reconnectPeriod: 0, manualConnect: true })
  const connected = new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  client.connect()
  ;(client.stream as { setNoDelay?: (on: boolean) => unknown }).setNoDelay?.(true)
  await connected
  return client
}

/** Baseline: requester → bare aedes → responder → bare aedes → requester, QoS 1 both ways, sequential. */
async function rawRoundTrips(warmup: number, count: number): Promise<Latency & { brokerCpuPct: number }> {
  const { child, url } = await startRawAedes('ignore')
  const exited = new Promise((resolve) => child.once('exit', resolve))
  try {
    const requester = await noDelayClient(url, 'bench-requester')
    const responder = await noDelayClient(url, 'bench-responder')
    try {
      // Payloads shaped like cmd.req and cmd.res for ping.
      responder.on('message', (_topic, payload) => {
        const req = JSON.parse(payload.toString()) as { id: string }
        responder.publish('devices/bench-responder/cmd/res', JSON.stringify({ type: 'cmd.res', v: 1, id: req.id, ok: true, result: { pong: true, ts: Date.now() } }), { qos: 1 })
      })
      await responder.subscribeAsync('devices/bench-responder/cmd/req', { qos: 1 })
      const waiting = new Map<string, () => void>()
      requester.on('message', (_topic, payload) => {
        const res = JSON.parse(payload.toString()) as { id: string }
        waiting.get(res.id)?.()
        waiting.delete(res.id)
      })
      await requester.subscribeAsync('devices/bench-responder/cmd/res', { qos: 1 })
      const once = async (i: number): Promise<number> => {
        const id = `c${String(i).padStart(12, '0')}`
        const t0 = performance.now()
        const answered = new Promise<void>((resolve) => waiting.set(id, resolve))
        requester.publish('devices/bench-responder/cmd/req', JSON.stringify({ type: 'cmd.req', v: 1, id, name: 'ping', expiresAt: Date.now() + 5000 }), { qos: 1 })
        await answered
        return performance.now() - t0
      }
      for (let i = 0; i < warmup; i++) await once(i)
      const cpu0 = cpuMs(child.pid!), t0 = performance.now()
      const times: number[] = []
      for (let i = 0; i < count; i++) times.push(await once(warmup + i))
      const wallMs = performance.now() - t0
      return { ...latency(times), brokerCpuPct: ((cpuMs(child.pid!) - cpu0) / wallMs) * 100 }
    } finally {
      await Promise.allSettled([requester.endAsync(true), responder.endAsync(true)])
    }
  } finally {
    child.kill('SIGTERM')
    await Promise.race([exited, sleep(5000)])
    if (child.exitCode === null) child.kill('SIGKILL')
  }
}

interface GroupReply {
  counts: Record<'succeeded' | 'failed' | 'timed_out' | 'disconnected' | 'skipped', number>
  durationMs: number
}

async function throughHub(work: string, o: CommandsBenchOptions) {
  const hubDir = join(work, 'hub')
  mkdirSync(hubDir, { recursive: true })
  const hub = await startHubProcess(hubDir)
  const fleets: Fleet[] = []
  try {
    const devices = await provision(hub, o.agents, 'cmds')
    await startIdleFleets(hub, work, devices, fleets)
    await sleep(1000)

    // One device at a time, round-robin, timed around the whole HTTP call (fetch keeps the connection alive).
    const auth = { authorization: `Bearer ${hub.adminToken}` }
    const body = JSON.stringify({ name: 'ping', timeout: '5s' })
    let n = 0
    /** `count` pings, one device at a time round-robin, each timed around the whole HTTP call. */
    const series = async (post: Post, count: number) => {
      // The hub's durationMs is its own view: from the publish of cmd/req to the cmd/res, the MQTT leg and the agent.
      const hubLeg: number[] = []
      const times: number[] = []
      const cpu0 = cpuMs(hub.pid), t0 = performance.now()
      for (let i = 0; i < count; i++) {
        const id = devices[n++ % devices.length]!.id
        const s0 = performance.now()
        const r = await post(`http://127.0.0.1:${hub.httpPort}/api/devices/${id}/commands`, body, auth)
        times.push(performance.now() - s0)
        const reply = JSON.parse(r.text) as { ok?: boolean; durationMs: number }
        if (r.status !== 200 || reply.ok !== true) throw new Error(`ping ${id}: ${r.status} ${r.text}`)
        hubLeg.push(reply.durationMs)
      }
      return { times, hubLeg, cpuMs: cpuMs(hub.pid) - cpu0, wallMs: performance.now() - t0 }
    }
    type Series = Awaited<ReturnType<typeof series>>
    const merge = (xs: Series[]) => ({
      ...latency(xs.flatMap((x) => x.times)), mqttLeg: latency(xs.flatMap((x) => x.hubLeg)),
      hubCpuPct: (xs.reduce((a, x) => a + x.cpuMs, 0) / xs.reduce((a, x) => a + x.wallMs, 0)) * 100,
    })
    const nodeHttp = nodeHttpPost()
    // Warm-up: every device once (an agent's first command is its first write
    // to that table), then `warmup` more with each client.
    const firstTouch = latency((await series(fetchPost, devices.length)).times)
    await series(fetchPost, o.warmup)
    await series(nodeHttp.post, o.warmup)
    // The two clients in alternating blocks, so neither gets only the quiet or the noisy part of the run.
    const block = 200
    const parts: { fetch: Series[]; node: Series[] } = { fetch: [], node: [] }
    for (let done = 0; done < o.commands; done += block) {
      const k = Math.min(block, o.commands - done)
      parts.fetch.push(await series(fetchPost, k))
      parts.node.push(await series(nodeHttp.post, k))
    }
    const single = merge(parts.fetch)
    const singleNodeHttp = merge(parts.node)
    nodeHttp.close()

    const groups: Array<{ totalMs: number; hubMs: number; counts: GroupReply['counts']; hubCpuPct: number }> = []
    for (let r = 0; r < o.rounds; r++) {
      await sleep(500)
      const c0 = cpuMs(hub.pid), g0 = performance.now()
      const g = await hub.api<GroupReply>('POST', '/api/commands', { target: 'all', name: 'ping', timeout: '10s' })
      const totalMs = performance.now() - g0
      if (g.status !== 200) throw new Error(`group command: ${g.status} ${JSON.stringify(g.body)}`)
      groups.push({ totalMs, hubMs: g.body.durationMs, counts: g.body.counts, hubCpuPct: ((cpuMs(hub.pid) - c0) / totalMs) * 100 })
    }
    const best = groups.reduce((a, b) => (b.totalMs < a.totalMs ? b : a))
    return { single, singleNodeHttp, firstTouch, groups, best, hubRss: rssBytes(hub.pid), fleetRss: fleets.reduce((s, f) => s + (f.last()?.rssBytes ?? 0), 0) }
  } finally {
    await Promise.allSettled(fleets.map((f) => f.stop()))
    await hub.stop()
  }
}

const f2 = (n: number) => n.toFixed(2)

export async function runCommandsBench(o: CommandsBenchOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rollcall-bench-commands-'))
  try {
    process.stderr.write(`commands bench: ${o.commands} sequential round trips (after ${o.warmup} warm-up) to ${o.agents} connected agents and through a bare aedes; a group command to all, ${o.rounds} rounds\n`)
    process.stderr.write('raw aedes baseline...\n')
    const raw = await rawRoundTrips(o.warmup, o.commands)
    process.stderr.write('HTTP floor...\n')
    const floorHttp = nodeHttpPost()
    const floor = await httpFloor(fetchPost, o.warmup, o.commands)
    const floorNodeHttp = await httpFloor(floorHttp.post, o.warmup, o.commands)
    floorHttp.close()
    process.stderr.write('commit floor...\n')
    const commit = commitFloor(work, o.warmup, o.commands)
    process.stderr.write(`hub with ${o.agents} agents...\n`)
    const hub = await throughHub(work, o)
    const s = hub.single
    const h = hub.singleNodeHttp
    const c = hub.best.counts
    const pp = (l: Latency) => `${f2(l.p50)} / ${f2(l.p99)}`
    const rows: Array<[string, string, string]> = [
      ['', 'rollcall', 'baseline'],
      [`round trip, one at a time (${o.commands}), fetch: p50 / p99 ms`, pp(s), `raw aedes request/response: ${pp(raw)}   (rollcall target p99 < 5 ms)`],
      ['  mean / max ms', `${f2(s.mean)} / ${f2(s.max)}`, `${f2(raw.mean)} / ${f2(raw.max)}`],
      ['  of which the hub\'s publish → reply (MQTT, agent): p50 / p99 ms', pp(s.mqttLeg), ''],
      ['  round trips/s, sequential', (1000 / s.mean).toFixed(0), (1000 / raw.mean).toFixed(0)],
      ['  hub / broker process CPU', `${s.hubCpuPct.toFixed(0)}%`, `${raw.brokerCpuPct.toFixed(0)}%`],
      ['  HTTP floor: fetch to a bare node:http server: p50 / p99 ms', '', pp(floor)],
      ['  disk floor: one SQLite commit, synchronous=FULL (a command makes two): p50 / p99 ms', '', pp(commit)],
      ['the same with node:http, keep-alive Agent: p50 / p99 ms', pp(h), `HTTP floor: ${pp(floorNodeHttp)}`],
      ['  mean / max ms; hub\'s publish → reply p50 / p99 ms', `${f2(h.mean)} / ${f2(h.max)}; ${pp(h.mqttLeg)}`, ''],
      ['each agent\'s first command (warm-up, not in the above): p50 / p99 ms', pp(hub.firstTouch), ''],
      [`group command to all ${o.agents}, until all answered (best of ${o.rounds})`, `${(hub.best.totalMs / 1000).toFixed(3)} s`, 'target < 1 s'],
      ['  each round (client) / as the hub timed it', hub.groups.map((g) => `${g.totalMs.toFixed(0)}/${g.hubMs} ms`).join(', '), ''],
      ['  counts (best round)', `${c.succeeded} succeeded, ${c.failed} failed, ${c.timed_out} timed out, ${c.disconnected} disconnected, ${c.skipped} skipped`, ''],
      ['  hub CPU during the best round', `${hub.best.hubCpuPct.toFixed(0)}%`, ''],
      ['hub RSS / fleet processes RSS', `${mb(hub.hubRss)} / ${mb(hub.fleetRss)}`, ''],
    ]
    process.stdout.write(`${table(rows)}\n`)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
