import { openDatabase, migrate, type Db } from '../common/sqlite.js'

/**
 * The hub's schema. Numbered, append-only: a migration that has shipped is
 * never edited; a change is a new entry at the end.
 *
 * Samples are clustered by (device_key, ts, seq) in a WITHOUT ROWID table: a
 * group commit of N samples from D devices then touches about D leaf pages,
 * not one page per (device, sensor) series, which is what keeps 10k-row
 * commits fast as the table grows (see docs/benchmarks.md). Device ids and
 * sensor names are interned as integers to keep rows small.
 */
export const HUB_MIGRATIONS: readonly string[] = [
  /* 1 */ `
  CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    grp TEXT,
    token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE observers (
    name TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;

  -- Interned ids; never deleted, so data outlives a device's removal.
  CREATE TABLE device_keys (key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE) STRICT;
  CREATE TABLE sensor_keys (key INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE) STRICT;

  CREATE TABLE presence (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    since INTEGER NOT NULL,
    epoch INTEGER,
    last_seen INTEGER,
    agent_version TEXT,
    boot_id TEXT,
    store_id TEXT,
    capabilities TEXT
  ) STRICT;

  CREATE TABLE presence_history (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    epoch INTEGER
  ) STRICT;
  CREATE INDEX presence_history_device_ts ON presence_history(device_id, ts);

  -- A stream is one device's ledger (store): its high-water mark says every
  -- seq <= up_to of that store is stored.
  CREATE TABLE streams (
    key INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    up_to INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (device_id, store_id)
  ) STRICT;

  -- stream_key is in the key: a re-flashed device (new store, seq from 1 again)
  -- whose clock restarts at the same time must not collide with its old rows.
  CREATE TABLE samples (
    device_key INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    stream_key INTEGER NOT NULL,
    sensor_key INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (device_key, ts, seq, stream_key)
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE device_events (
    id INTEGER PRIMARY KEY,
    device_key INTEGER NOT NULL,
    stream_key INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
  ) STRICT;
  CREATE INDEX device_events_device_ts ON device_events(device_key, ts);
  CREATE INDEX device_events_ts ON device_events(ts);

  CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    device_id TEXT,
    client_id TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL,
    payload_excerpt TEXT NOT NULL
  ) STRICT;
  CREATE INDEX dead_letters_device ON dead_letters(device_id, id);
  `,
]

export function openHubDb(path: string): Db {
  const db = openDatabase(path, { synchronous: 'FULL' })
  // Hot leaf pages of the samples table stay cached across group commits.
  db.pragma('cache_size = -65536')
  migrate(db, HUB_MIGRATIONS)
  return db
}
