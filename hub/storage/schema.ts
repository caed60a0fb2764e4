import type { Logger } from '../../common/logger.js'
import { openDatabase, migrate, type Db } from '../../common/sqlite.js'

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
  /* 2: jobs, executions and their history, schedules (hub/jobs/store.ts, hub/jobs/schedules.ts) */ `
  CREATE TABLE schedules (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    cron TEXT NOT NULL,
    timezone TEXT,
    template TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;

  -- rollout_tat: the rollout pacer's state (see hub/jobs/decisions.ts, rolloutRelease).
  -- (schedule_id, schedule_tick) is unique: a tick creates at most one job,
  -- however often it fires.
  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    target TEXT NOT NULL,
    priority INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    expires_at INTEGER,
    max_attempts INTEGER NOT NULL,
    backoff_base_ms INTEGER NOT NULL,
    backoff_max_ms INTEGER NOT NULL,
    rate_per_min REAL,
    rollout_tat INTEGER,
    abort_min_finished INTEGER,
    abort_failure_pct REAL,
    continuous INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    schedule_id INTEGER,
    schedule_tick INTEGER,
    UNIQUE (schedule_id, schedule_tick)
  ) STRICT;
  CREATE INDEX jobs_status ON jobs(status, created_at);

  -- One execution per (job, device); exec id = job_id || '.' || device_id.
  -- base_version: the version this attempt was queued with (sent to the
  -- device); device_version: the version the device's last update produced;
  -- cancel_notify: the attempt the device must still be told to stop (0: none).
  CREATE TABLE executions (
    key INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    version INTEGER NOT NULL,
    base_version INTEGER NOT NULL,
    device_version INTEGER,
    run_after INTEGER NOT NULL,
    first_delivered_at INTEGER,
    delivered_at INTEGER,
    lease_until INTEGER,
    cancel_notify INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER,
    finished_at INTEGER,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (job_id, device_id)
  ) STRICT;
  CREATE INDEX executions_device_due ON executions(device_id, state, priority DESC, key);
  CREATE INDEX executions_job_state ON executions(job_id, state);
  CREATE INDEX executions_lease ON executions(state, lease_until) WHERE lease_until IS NOT NULL;
  CREATE INDEX executions_run_after ON executions(state, run_after);

  -- Every state change of an execution, one row per version.
  CREATE TABLE execution_history (
    exec_key INTEGER NOT NULL REFERENCES executions(key) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    at INTEGER NOT NULL,
    source TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (exec_key, version)
  ) STRICT, WITHOUT ROWID;
  `,
  /* 3: indexes for the job sweeper and paced rollouts, so their per-second
     queries cost what is due, not what is queued */ `
  CREATE INDEX executions_undelivered ON executions(job_id, key) WHERE state = 'queued' AND delivered_at IS NULL;
  CREATE INDEX executions_cancel_notify ON executions(device_id) WHERE cancel_notify > 0;
  CREATE INDEX jobs_active_expiry ON jobs(expires_at) WHERE status = 'active' AND expires_at IS NOT NULL;
  `,
  /* 4: the command record (hub/commands/store.ts) */ `
  -- One row per command to one device; a group command's members share group_id.
  -- status: offline | queued | sent | succeeded | failed | timed_out | disconnected.
  -- A reply after the deadline is kept in late_* and never changes the outcome.
  CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT,
    group_id TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at INTEGER,
    expires_at INTEGER NOT NULL,
    finished_at INTEGER,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    job_id TEXT,
    late_at INTEGER,
    late_response TEXT
  ) STRICT;
  CREATE INDEX commands_device ON commands(device_id, created_at);
  CREATE INDEX commands_group ON commands(group_id) WHERE group_id IS NOT NULL;
  CREATE INDEX commands_created ON commands(created_at);
  `,
  /* 5: schedule ids are never reused (AUTOINCREMENT): a job names the schedule
     that made it, and (schedule_id, schedule_tick) must not match a removed
     schedule's ticks. SQLite cannot add AUTOINCREMENT in place: rebuild. */ `
  CREATE TABLE schedules_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    cron TEXT NOT NULL,
    timezone TEXT,
    template TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;
  INSERT INTO schedules_new (id, name, cron, timezone, template, created_at) SELECT id, name, cron, timezone, template, created_at FROM schedules;
  DELETE FROM sqlite_sequence WHERE name = 'schedules_new';
  INSERT INTO sqlite_sequence (name, seq) SELECT 'schedules_new', max(m) FROM (
    SELECT max(id) AS m FROM schedules UNION ALL SELECT max(schedule_id) FROM jobs) HAVING max(m) IS NOT NULL;
  DROP TABLE schedules;
  ALTER TABLE schedules_new RENAME TO schedules;
  `,
  /* 6: the sensor units a device's birth declared, as a JSON object (hub/presence/store.ts) */ `
  ALTER TABLE presence ADD COLUMN units TEXT;
  `,
  /* 7: samples whose ts is the device's unchecked clock (issue #13): 1, else NULL. Rows
     written before it read as NULL; a NULL last column costs a row one header byte. */ `
  ALTER TABLE samples ADD COLUMN unsynced INTEGER;
  `,
  /* 8: rules (issue #17, hub/rules/store.ts): the rules, the condition state of each
     (rule, device), each firing and its actions (the transactional outbox); a command
     or a job a rule made names its cause. */ `
  CREATE TABLE rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    fired INTEGER NOT NULL DEFAULT 0,
    suppressed_stale INTEGER NOT NULL DEFAULT 0,
    suppressed_cooldown INTEGER NOT NULL DEFAULT 0,
    suppressed_rate INTEGER NOT NULL DEFAULT 0,
    suppressed_paused INTEGER NOT NULL DEFAULT 0,
    actions_failed INTEGER NOT NULL DEFAULT 0,
    last_fired_at INTEGER,
    -- The circuit breaker: set while the rule is paused because its actions keep failing.
    paused_until INTEGER,
    paused_reason TEXT
  ) STRICT;
  CREATE TABLE rule_states (
    rule_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    since INTEGER,
    count INTEGER,
    last_fired_at INTEGER,
    PRIMARY KEY (rule_id, device_id)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE rule_firings (
    id TEXT PRIMARY KEY,
    rule_id INTEGER NOT NULL,
    rule TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    trigger TEXT NOT NULL
  ) STRICT;
  CREATE INDEX rule_firings_rule ON rule_firings(rule_id, at);
  CREATE INDEX rule_firings_at ON rule_firings(at);
  CREATE TABLE rule_actions (
    firing_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    outcome TEXT,
    PRIMARY KEY (firing_id, idx)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX rule_actions_pending ON rule_actions(status) WHERE status = 'pending';
  ALTER TABLE commands ADD COLUMN cause_rule TEXT;
  ALTER TABLE commands ADD COLUMN cause_firing TEXT;
  ALTER TABLE jobs ADD COLUMN cause_rule TEXT;
  ALTER TABLE jobs ADD COLUMN cause_firing TEXT;
  `,
  /* 9: a device's firings, newest first (GET /api/devices/{id}/firings, the dashboard's
     device page), read from an index rather than by scanning every rule's firings. */ `
  CREATE INDEX rule_firings_device ON rule_firings(device_id, at);
  `,
  // 10: a command sent again under its id (a rule's action carried out again after a restart) keeps
  // when it was first sent and how often it went again, for its timeline.
  `
  ALTER TABLE commands ADD COLUMN first_sent_at INTEGER;
  ALTER TABLE commands ADD COLUMN resent INTEGER NOT NULL DEFAULT 0;
  `,
]

/**
 * A JSON value the schema keeps as TEXT (a job's payload, a command's args,
 * a result, a late reply), read back for a view: NULL is null, and text that
 * does not parse is shown as it is rather than failing the read.
 */
export function readJsonColumn(text: string | null): unknown {
  if (text === null) return null
  try {
    return JSON.parse(text) as unknown
  } catch {
    return text
  }
}

export function openHubDb(path: string, logger?: Logger): Db {
  const db = openDatabase(path, { synchronous: 'FULL', logger })
  // Hot leaf pages of the samples table stay cached across group commits.
  db.pragma('cache_size = -65536')
  // Each write of a group commit runs in a savepoint (storage/group-commit.ts), whose undo
  // copies of the pages it touches go to a sub-journal. Past 64 KiB (one write touching
  // ~16 pages: a rule's firing with its outbox rows and indexes) SQLite spills that
  // sub-journal to a temp file for the rest of the transaction, and every later write
  // of the group then pays write syscalls for its undo pages. In memory, it is emptied
  // at each savepoint's release and stays a few pages.
  db.pragma('temp_store = MEMORY')
  migrate(db, HUB_MIGRATIONS)
  return db
}
