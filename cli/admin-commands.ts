import { resolveAdminTarget, type AdminTarget } from './admin-config.js'
import { call } from './http.js'
import { cliCommand, hint } from './invocation.js'
import { ago, clip, localTime, out, printJson, table } from './output.js'
import { intFlag } from './parse.js'
import type { AdminOpts, TelemetryOpts } from './main.js'

/** Admin commands talk to a running hub over its HTTP API (cli/http.ts). */

/** Where MQTT clients reach the hub, as seen from here: the API's host and the port /healthz reports, TLS when the hub serves it. */
async function hubMqtt(t: AdminTarget): Promise<{ host: string; port: number; tls: boolean }> {
  const host = new URL(t.api).hostname
  try {
    const h = await call<{ mqttPort: number; mqttTlsPort?: number | null }>(t, 'GET', '/healthz')
    if (typeof h.mqttTlsPort === 'number' && h.mqttTlsPort > 0) return { host, port: h.mqttTlsPort, tls: true }
    return { host, port: h.mqttPort, tls: false }
  } catch {
    return { host, port: 1883, tls: false }
  }
}

/** The CA file to name in a hint: the one this command pinned, else the file `rollcall tls init` makes. */
const caHint = (t: AdminTarget) => t.ca ?? 'ca.pem'

interface Presence { status: string; reason: string; since: number; lastSeen: number | null; epoch: number | null; reachable: boolean; clockSkewMs?: number | null; info: { agentVersion: string | null; storeId: string | null } }
interface Device { id: string; group: string | null; createdAt: number; presence: Presence | null }

export const adminCommands = {
  async deviceAdd(id: string, opts: AdminOpts & { group?: string }) {
    const t = resolveAdminTarget(opts)
    const r = await call<Device & { token: string }>(t, 'POST', '/api/devices', { id, ...(opts.group ? { group: opts.group } : {}) })
    if (opts.json) return printJson(r)
    out(`device ${r.id} added${r.group ? ` to group ${r.group}` : ''}`)
    out(`token (shown once, store it on the device): ${r.token}`)
    const m = await hubMqtt(t)
    const hubFlags = m.tls ? `--hub mqtts://${m.host}:${m.port} --ca ${caHint(t)}` : `--hub mqtt://${m.host}:${m.port}`
    out(`run the agent: ROLLCALL_TOKEN=${r.token} ${cliCommand()} agent ${hubFlags} --id ${r.id}`)
  },

  async deviceList(opts: AdminOpts & { group?: string }) {
    const t = resolveAdminTarget(opts)
    const r = await call<{ devices: Device[] }>(t, 'GET', `/api/devices${opts.group ? `?group=${encodeURIComponent(opts.group)}` : ''}`)
    if (opts.json) return printJson(r)
    if (r.devices.length === 0) return out(`no devices; add one with: ${hint(opts, 'device', 'add', 'ID')}`)
    out(table([['ID', 'GROUP', 'PRESENCE', 'SINCE', 'LAST SEEN', 'AGENT'], ...r.devices.map((d) => [
      d.id, d.group ?? '-', d.presence ? `${d.presence.status} (${d.presence.reason})` : 'never connected',
      d.presence ? ago(d.presence.since) : '-', ago(d.presence?.lastSeen), d.presence?.info.agentVersion ?? '-',
    ])]))
  },

  async deviceShow(id: string, opts: AdminOpts) {
    const t = resolveAdminTarget(opts)
    const d = await call<Device & { streams: Array<{ storeId: string; upTo: number; updatedAt: number }> }>(t, 'GET', `/api/devices/${encodeURIComponent(id)}`)
    const h = await call<{ history: Array<{ ts: number; status: string; reason: string; epoch: number | null }> }>(t, 'GET', `/api/devices/${encodeURIComponent(id)}/presence?limit=10`)
    if (opts.json) return printJson({ ...d, history: h.history })
    const p = d.presence
    out(`device   ${d.id}${d.group ? `  (group ${d.group})` : ''}`)
    out(`presence ${p ? `${p.status} since ${ago(p.since)} (${p.reason})${p.reachable ? ', reachable' : ''}` : 'never connected'}`)
    out(`seen     ${ago(p?.lastSeen)}   epoch ${p?.epoch ?? '-'}   agent ${p?.info.agentVersion ?? '-'}`)
    out(`clock    ${skewText(p?.clockSkewMs)}`)
    for (const s of d.streams) out(`stream   store ${s.storeId}: stored up to seq ${s.upTo} (${ago(s.updatedAt)})`)
    if (h.history.length > 0) {
      out('history')
      for (const e of h.history) out(`  ${localTime(e.ts)}  ${e.status.padEnd(7)} ${e.reason}${e.epoch ? `  epoch ${e.epoch}` : ''}`)
    }
  },

  async deviceRemove(id: string, opts: AdminOpts) {
    await call(resolveAdminTarget(opts), 'DELETE', `/api/devices/${encodeURIComponent(id)}`)
    if (opts.json) return printJson({ removed: id })
    out(`device ${id} removed and disconnected`)
  },

  async deviceToken(id: string, opts: AdminOpts) {
    const r = await call<{ id: string; token: string }>(resolveAdminTarget(opts), 'POST', `/api/devices/${encodeURIComponent(id)}/token`)
    if (opts.json) return printJson(r)
    out(`new token for ${id} (shown once; the old one no longer works): ${r.token}`)
  },

  async observerAdd(name: string, opts: AdminOpts) {
    const t = resolveAdminTarget(opts)
    const r = await call<{ name: string; token: string; username: string; topics: string[] }>(t, 'POST', '/api/observers', { name })
    if (opts.json) return printJson(r)
    const hub = await hubMqtt(t)
    out(`observer ${r.name} added; MQTT username: ${r.username}`)
    out(`password (shown once): ${r.token}`)
    out(`may subscribe to: ${r.topics.join(', ')}; its client id must not look like a device id (e.g. ${r.name}:1)`)
    out(`try: mosquitto_sub -h ${hub.host} -p ${hub.port}${hub.tls ? ` --cafile ${caHint(t)}` : ''} -i '${r.name}:1' -u '${r.username}' -P '${r.token}' -t 'devices/+/telemetry' -v`)
  },

  async observerList(opts: AdminOpts) {
    const r = await call<{ observers: Array<{ name: string; username: string; createdAt: number }> }>(resolveAdminTarget(opts), 'GET', '/api/observers')
    if (opts.json) return printJson(r)
    if (r.observers.length === 0) return out(`no observers; add one with: ${hint(opts, 'observer', 'add', 'NAME')}`)
    out(table([['NAME', 'USERNAME', 'CREATED'], ...r.observers.map((o) => [o.name, o.username, localTime(o.createdAt)])]))
  },

  async observerRemove(name: string, opts: AdminOpts) {
    await call(resolveAdminTarget(opts), 'DELETE', `/api/observers/${encodeURIComponent(name)}`)
    if (opts.json) return printJson({ removed: name })
    out(`observer ${name} removed and disconnected`)
  },

  async telemetry(id: string, opts: AdminOpts & TelemetryOpts) {
    const limit = intFlag('limit', opts.limit, 1, 100_000)
    const q = new URLSearchParams({ since: opts.since, limit: String(limit) })
    if (opts.until) q.set('until', opts.until)
    if (opts.sensor) q.set('sensor', opts.sensor)
    if (opts.bucket) q.set('bucket', opts.bucket)
    const t = resolveAdminTarget(opts)
    const r = await call<TelemetryReply>(t, 'GET', `/api/devices/${encodeURIComponent(id)}/telemetry?${q.toString()}`)
    if (opts.json) return printJson(r)
    const what = `${opts.sensor ? `sensor ${opts.sensor} of ` : ''}${id}`
    const more = () => { if (r.truncated) process.stderr.write(`(only the oldest ${limit} rows of the range; narrow it with --since/--until, use --bucket, or raise --limit)\n`) }
    // No rows for the sensor asked for: say which sensors the device did send (issue #11: cpu.temp
    // exists only where /sys/class/thermal does, and a name may be misspelt).
    const none = async (range: string) => {
      out(`no telemetry for ${what} ${range}`)
      if (!opts.sensor) return
      const others = await sensorsIn(t, id, r.sinceMs, r.untilMs)
      out(others.length > 0
        ? `${id} sent ${others.join(', ')} in that range; try: ${hint(opts, 'telemetry', id, '--since', opts.since, '--sensor', others[0]!)}`
        : `${id} sent no telemetry at all in that range`)
    }
    if (r.buckets) {
      if (r.buckets.length === 0) return none('in that range')
      out(table([['TIME', 'SENSOR', 'COUNT', 'AVG', 'MIN', 'MAX'], ...r.buckets.map((b) => [localTime(b.ts), b.sensor, String(b.count), fmt(b.avg), fmt(b.min), fmt(b.max)])]))
      return more()
    }
    const samples = r.samples ?? []
    if (samples.length === 0) return none(`since ${opts.since}`)
    // A flagged sample's time is the device's own clock, unchecked (docs/api.md): marked, and explained once below.
    out(table([['TIME', 'SENSOR', 'VALUE', 'SEQ'], ...samples.map((s) => [s.unsynced ? `${localTime(s.ts)}?` : localTime(s.ts), s.sensor, fmt(s.value), String(s.seq)])]))
    const unsynced = samples.filter((s) => s.unsynced).length
    if (unsynced > 0) out(`? ${unsynced} sample(s) carry the device's own clock, which could not be checked against the hub's (taken before a reboot, offline): their time may be off`)
    more()
  },

  async events(id: string, opts: AdminOpts & { since: string; limit: string }) {
    const q = new URLSearchParams({ since: opts.since, limit: String(intFlag('limit', opts.limit, 1, 10_000)) })
    const r = await call<{ events: Array<{ ts: number; seq: number; kind: string; level: string; message: string; data?: unknown }> }>(
      resolveAdminTarget(opts), 'GET', `/api/devices/${encodeURIComponent(id)}/events?${q.toString()}`)
    if (opts.json) return printJson(r)
    if (r.events.length === 0) return out(`no events for ${id} since ${opts.since}`)
    out(table([['TIME', 'LEVEL', 'KIND', 'MESSAGE'], ...r.events.map((e) => [localTime(e.ts), e.level, e.kind, clip(e.message, 100)])]))
  },

  async deadLetters(opts: AdminOpts & { device?: string; limit: string }) {
    const q = new URLSearchParams({ limit: String(intFlag('limit', opts.limit, 1, 10_000)) })
    if (opts.device) q.set('device', opts.device)
    const r = await call<{ deadLetters: Array<{ id: number; ts: number; deviceId: string | null; topic: string; reason: string; detail: string; payloadBytes: number }>; countsByReason: Record<string, number> }>(
      resolveAdminTarget(opts), 'GET', `/api/dead-letters?${q.toString()}`)
    if (opts.json) return printJson(r)
    if (r.deadLetters.length === 0) return out('no dead letters')
    out(table([['TIME', 'DEVICE', 'REASON', 'BYTES', 'TOPIC', 'DETAIL'], ...r.deadLetters.map((d) => [
      localTime(d.ts), d.deviceId ?? '-', d.reason, String(d.payloadBytes), d.topic, clip(d.detail, 80)])]))
  },
}

/** The device's clock against the hub's, as `device show` prints it. */
export function skewText(skewMs: number | null | undefined): string {
  if (skewMs === null || skewMs === undefined) return 'skew not reported (an agent older than the clock check, or none since the hub started)'
  const abs = Math.abs(skewMs)
  if (abs <= 1000) return `in step with the hub (${skewMs >= 0 ? '+' : '-'}${abs} ms)`
  return `${formatSkew(abs)} ${skewMs > 0 ? 'ahead of' : 'behind'} the hub (deadlines and sample times use the hub's; check NTP on the device)`
}

function formatSkew(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`
  if (ms < 172_800_000) return `${(ms / 3_600_000).toFixed(1)} h`
  return `${(ms / 86_400_000).toFixed(1)} days`
}

interface TelemetryReply {
  sinceMs: number
  untilMs: number
  truncated: boolean
  samples?: Array<{ sensor: string; ts: number; seq: number; value: number; unsynced?: true }>
  buckets?: Array<{ sensor: string; ts: number; count: number; avg: number; min: number; max: number }>
}

/** The sensors a device sent in a range, by name: one bucket spanning the range gives a row or two per sensor. */
async function sensorsIn(t: AdminTarget, id: string, sinceMs: number, untilMs: number): Promise<string[]> {
  const q = new URLSearchParams({ since: String(sinceMs), until: String(untilMs), bucket: `${Math.max(1, untilMs - sinceMs)}ms`, limit: '1000' })
  const r = await call<TelemetryReply>(t, 'GET', `/api/devices/${encodeURIComponent(id)}/telemetry?${q.toString()}`)
  return [...new Set((r.buckets ?? []).map((b) => b.sensor))].sort()
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(3)
}
