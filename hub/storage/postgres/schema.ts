import type pg from 'pg'
import type { Logger } from '../../../common/logger.js'
import { inTransaction } from './pool.js'

/**
 * The hub's schema on PostgreSQL: numbered migrations, applied in order by
 * whichever hub starts first. Hubs that start together wait on one advisory
 * lock, so each migration runs exactly once; the pending ones run in one
 * transaction (PostgreSQL's DDL is transactional: a failed migration leaves
 * nothing half-made). A database whose schema is newer than this hub knows is
 * refused, as the SQLite file is.
 *
 * Samples and device events are partitioned by day on `ts`
 * (partitions.ts): retention drops whole days instead of deleting rows, and
 * a DEFAULT partition takes rows whose day has no partition (a device clock
 * far off), so no insert ever fails for want of one.
 */

const MIGRATIONS: readonly string[] = [
  /* 1: telemetry: interned keys, streams with their marks, samples and events */ `
  -- Interned ids; never deleted, so data outlives a device's removal.
  CREATE TABLE device_keys (key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE);
  CREATE TABLE sensor_keys (key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE);

  -- A stream is one device's ledger (store): its mark says every seq <= up_to
  -- of that store is stored. A hub locks the row (FOR UPDATE) while it
  -- stores a batch of the stream, so two hubs never store one stream at once.
  CREATE TABLE streams (
    key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text NOT NULL,
    store_id text NOT NULL,
    up_to bigint NOT NULL,
    updated_at bigint NOT NULL,
    UNIQUE (device_id, store_id)
  );

  CREATE TABLE samples (
    device_key integer NOT NULL,
    ts bigint NOT NULL,
    seq bigint NOT NULL,
    stream_key bigint NOT NULL,
    sensor_key integer NOT NULL,
    value double precision NOT NULL,
    unsynced boolean,
    PRIMARY KEY (device_key, ts, seq, stream_key)
  ) PARTITION BY RANGE (ts);
  CREATE TABLE samples_default PARTITION OF samples DEFAULT;

  CREATE TABLE device_events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    device_key integer NOT NULL,
    stream_key bigint NOT NULL,
    ts bigint NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    level text NOT NULL,
    message text NOT NULL,
    data text,
    PRIMARY KEY (device_key, ts, seq, stream_key)
  ) PARTITION BY RANGE (ts);
  CREATE TABLE device_events_default PARTITION OF device_events DEFAULT;
  `,
  /* 2: dead letters (hub/mqtt/dead-letters-postgres.ts) */ `
  CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts bigint NOT NULL,
    device_id text,
    client_id text,
    topic text NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL,
    payload_bytes integer NOT NULL,
    payload_excerpt text NOT NULL
  );
  CREATE INDEX dead_letters_device ON dead_letters (device_id, id);
  `,
  /* 3: the DEFAULT partitions by time: retention deletes from them by ts (day partitions are dropped whole, and need none) */ `
  CREATE INDEX samples_default_ts ON samples_default (ts);
  CREATE INDEX device_events_default_ts ON device_events_default (ts);
  `,
  /* 4: the registry (hub/fleet/registry-postgres.ts) */ `
  CREATE TABLE devices (
    id text PRIMARY KEY,
    grp text,
    token_hash bytea NOT NULL,
    created_at bigint NOT NULL
  );
  CREATE TABLE observers (
    name text PRIMARY KEY,
    token_hash bytea NOT NULL,
    created_at bigint NOT NULL
  );
  `,
  /* 5: presence and its history (hub/presence/postgres.ts) */ `
  CREATE TABLE presence (
    device_id text PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    status text NOT NULL,
    reason text NOT NULL,
    since bigint NOT NULL,
    epoch bigint,
    last_seen bigint,
    agent_version text,
    boot_id text,
    store_id text,
    capabilities text,
    units text
  );
  CREATE TABLE presence_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text NOT NULL,
    ts bigint NOT NULL,
    status text NOT NULL,
    reason text NOT NULL,
    epoch bigint,
    store_id text
  );
  CREATE INDEX presence_history_device_ts ON presence_history (device_id, ts);
  -- A device's ledger (store) goes online once per epoch and offline once after it: every hub
  -- sees every birth and death, and the first to commit a change records it; the others find
  -- it there. The store is in the key: a re-flashed device counts its epochs from 1 again.
  CREATE UNIQUE INDEX presence_history_change ON presence_history (device_id, store_id, epoch, status) WHERE epoch IS NOT NULL;
  `,
  /* 6: the command record (hub/commands/postgres.ts) */ `
  -- One row per command to one device, as on SQLite; sent_by names the hub that sent it
  -- (its broker client id), so a restarted hub settles only what it left in flight.
  CREATE TABLE commands (
    id text PRIMARY KEY,
    device_id text NOT NULL,
    name text NOT NULL,
    args text,
    group_id text,
    status text NOT NULL,
    created_at bigint NOT NULL,
    sent_at bigint,
    expires_at bigint NOT NULL,
    finished_at bigint,
    result text,
    error_code text,
    error_message text,
    job_id text,
    late_at bigint,
    late_response text,
    first_sent_at bigint,
    resent integer NOT NULL DEFAULT 0,
    cause_rule text,
    cause_firing text,
    sent_by text
  );
  CREATE INDEX commands_device ON commands (device_id, created_at);
  CREATE INDEX commands_group ON commands (group_id) WHERE group_id IS NOT NULL;
  CREATE INDEX commands_created ON commands (created_at);
  CREATE INDEX commands_in_flight ON commands (sent_by, expires_at) WHERE status = 'sent';
  `,
  /* 7: jobs, their executions and the executions' history (hub/jobs/postgres.ts), as on SQLite */ `
  CREATE TABLE jobs (
    id text PRIMARY KEY,
    name text NOT NULL,
    payload text NOT NULL,
    target text NOT NULL,
    priority integer NOT NULL,
    timeout_ms bigint NOT NULL,
    expires_at bigint,
    max_attempts integer NOT NULL,
    backoff_base_ms bigint NOT NULL,
    backoff_max_ms bigint NOT NULL,
    rate_per_min double precision,
    rollout_tat bigint,
    abort_min_finished integer,
    abort_failure_pct double precision,
    continuous integer NOT NULL,
    status text NOT NULL,
    status_reason text,
    created_at bigint NOT NULL,
    finished_at bigint,
    -- A schedule's tick makes at most one job, whichever hub's clock fires it first.
    schedule_id bigint,
    schedule_tick bigint,
    cause_rule text,
    cause_firing text,
    UNIQUE (schedule_id, schedule_tick)
  );
  CREATE INDEX jobs_status ON jobs (status, created_at);
  CREATE INDEX jobs_active_expiry ON jobs (expires_at) WHERE status = 'active' AND expires_at IS NOT NULL;
  CREATE TABLE executions (
    key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    device_id text NOT NULL,
    priority integer NOT NULL,
    state text NOT NULL,
    attempt integer NOT NULL,
    version integer NOT NULL,
    base_version integer NOT NULL,
    device_version integer,
    run_after bigint NOT NULL,
    first_delivered_at bigint,
    delivered_at bigint,
    lease_until bigint,
    cancel_notify integer NOT NULL DEFAULT 0,
    started_at bigint,
    finished_at bigint,
    result text,
    error_code text,
    error_message text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    UNIQUE (job_id, device_id)
  );
  CREATE INDEX executions_device_due ON executions (device_id, state, priority DESC, key);
  CREATE INDEX executions_job_state ON executions (job_id, state);
  CREATE INDEX executions_lease ON executions (state, lease_until) WHERE lease_until IS NOT NULL;
  CREATE INDEX executions_run_after ON executions (state, run_after);
  CREATE INDEX executions_undelivered ON executions (job_id, key) WHERE state = 'queued' AND delivered_at IS NULL;
  CREATE INDEX executions_cancel_notify ON executions (device_id) WHERE cancel_notify > 0;
  CREATE TABLE execution_history (
    exec_key bigint NOT NULL REFERENCES executions (key) ON DELETE CASCADE,
    version integer NOT NULL,
    attempt integer NOT NULL,
    state text NOT NULL,
    at bigint NOT NULL,
    source text NOT NULL,
    detail text,
    PRIMARY KEY (exec_key, version)
  );
  `,
  /* 8: schedules (hub/jobs/schedule-stores.ts); ids never reused, as on SQLite */ `
  CREATE TABLE schedules (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    cron text NOT NULL,
    timezone text,
    template text NOT NULL,
    created_at bigint NOT NULL
  );
  `,
]

export const PG_SCHEMA_VERSION = MIGRATIONS.length

/** Any 64-bit number of our own: the lock every starting hub takes to migrate. */
const MIGRATE_LOCK = 0x726f6c6c63616c6cn % 0x7fffffffffffffffn

export async function migratePostgres(pool: pg.Pool, logger: Logger): Promise<{ from: number; to: number }> {
  const { from } = await inTransaction(pool, async (c) => {
    await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK.toString()])
    await c.query('CREATE TABLE IF NOT EXISTS rollcall_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())')
    const { rows } = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM rollcall_schema')
    const at = rows[0]?.v ?? 0
    if (at > MIGRATIONS.length) {
      throw new Error(`the database's schema is version ${at}, newer than this hub knows (${MIGRATIONS.length}): run the newer rollcall, or a new database`)
    }
    for (let v = at + 1; v <= MIGRATIONS.length; v++) {
      await c.query(MIGRATIONS[v - 1]!)
      await c.query('INSERT INTO rollcall_schema (version) VALUES ($1)', [v])
    }
    return { from: at }
  })
  if (from < MIGRATIONS.length) logger.info({ from, to: MIGRATIONS.length }, 'PostgreSQL schema migrated')
  return { from, to: MIGRATIONS.length }
}
