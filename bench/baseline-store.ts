/**
 * The baseline a user would build instead of rollcall (issue #14): a broker
 * (Mosquitto, or bare aedes) plus this one subscriber, which takes every
 * device's QoS 1 telemetry from `devices/+/telemetry` and stores the samples
 * in SQLite with group commits under synchronous=FULL, like the hub. It does
 * less than the hub: the broker's PUBACK goes before anything is stored, no
 * device hears what is stored, and nothing is checked per device. Prints one
 * JSON line per second: samples stored so far and the lag (sample time to its
 * commit) of the samples committed in that second.
 *
 *   node dist/bench/baseline-store.js MQTT_URL DB_PATH
 */
import Database from 'better-sqlite3'
import mqtt from 'mqtt'

interface Row { readonly device: string; readonly ts: number; readonly seq: number; readonly value: number }

const [url, dbPath] = process.argv.slice(2)
if (url === undefined || dbPath === undefined) {
  process.stderr.write('usage: baseline-store.js MQTT_URL DB_PATH\n')
  process.exit(2)
}

const db = new Database(dbPath)
db.pragma('journal_mode = WAL')
db.pragma('synchronous = FULL')
db.exec('CREATE TABLE IF NOT EXISTS samples (device TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (device, ts, seq)) WITHOUT ROWID')
const insert = db.prepare<[string, number, number, number]>('INSERT OR IGNORE INTO samples (device, ts, seq, value) VALUES (?, ?, ?, ?)')
const commit = db.transaction((rows: readonly Row[]) => { for (const r of rows) insert.run(r.device, r.ts, r.seq, r.value) })

let pending: Row[] = []
let stored = 0
let lags: number[] = []
let timer: NodeJS.Timeout | undefined
const flush = (): void => {
  timer = undefined
  if (pending.length === 0) return
  const rows = pending
  pending = []
  commit(rows)
  stored += rows.length
  const now = Date.now()
  for (const r of rows) if (r.seq % 10 === 0) lags.push(now - r.ts)
}

const client = mqtt.connect(url, { clientId: 'baseline-store', clean: true, keepalive: 60, reconnectPeriod: 1000 })
client.on('connect', () => { client.subscribe('devices/+/telemetry', { qos: 1 }) })
client.on('error', (err) => process.stderr.write(`baseline-store: ${err.message}\n`))
client.on('message', (topic, payload) => {
  const device = topic.split('/')[1] ?? ''
  try {
    const m = JSON.parse(payload.toString()) as { samples?: Array<{ seq: number; ts: number; value: number }> }
    for (const s of m.samples ?? []) pending.push({ device, ts: s.ts, seq: s.seq, value: s.value })
  } catch { return }
  // The hub's group commit: every 20 ms, or at once past 10,000 rows.
  if (pending.length >= 10_000) flush()
  else timer ??= setTimeout(flush, 20)
})

setInterval(() => {
  const xs = lags.sort((a, b) => a - b)
  lags = []
  const at = (q: number) => (xs.length === 0 ? 0 : xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]!)
  process.stdout.write(`${JSON.stringify({ t: Date.now(), stored, lagP50Ms: at(0.5), lagP99Ms: at(0.99), lagCount: xs.length })}\n`)
}, 1000)

const stop = (): void => {
  if (timer) clearTimeout(timer)
  flush()
  client.end(true)
  db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
