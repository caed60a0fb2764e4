import { join } from 'node:path'
import type { Logger } from '../common/logger.js'
import type { Db } from '../common/sqlite.js'
import { createPostgresCommandStore } from './commands/postgres.js'
import { createSqliteCommandStore } from './commands/sqlite.js'
import type { CommandStore } from './commands/store.js'
import type { HubConfig } from './config.js'
import { createPostgresRegistry } from './fleet/registry-postgres.js'
import { createRegistry, type Registry } from './fleet/registry.js'
import { sqliteJobsBackend, type JobsBackend } from './jobs/context.js'
import { postgresJobsBackend } from './jobs/postgres.js'
import { postgresScheduleStore, sqliteScheduleStore, type ScheduleStore } from './jobs/schedule-stores.js'
import { createPostgresDeadLetters } from './mqtt/dead-letters-postgres.js'
import { createDeadLetters, type DeadLetters } from './mqtt/dead-letters.js'
import { createPostgresPresenceRecorder } from './presence/postgres.js'
import { createPresence, createPresenceStore, type PresenceStore } from './presence/store.js'
import { createPostgresTelemetryStore } from './telemetry/postgres.js'
import { createSqliteTelemetryStore } from './telemetry/sqlite.js'
import type { TelemetryStore } from './telemetry/store.js'
import { createCheckpointer, type CheckpointStats } from './storage/checkpointer.js'
import { createWriter, type Writer, type WriterOptions, type WriterStats } from './storage/group-commit.js'
import { openPostgres } from './storage/postgres/pool.js'
import { migratePostgres } from './storage/postgres/schema.js'
import { openHubDb } from './storage/schema.js'
import { createWalSync, type WalSync } from './storage/wal-sync.js'

/**
 * The hub's state, on one of its two stores (docs/scale-out.md): the SQLite
 * file in the data dir (the default, one hub), or a PostgreSQL shared by
 * several hubs (`database`). Each capability has one interface and an
 * implementation per store; this module picks them and says in which order
 * they are released. The rest of the hub does not know which it runs on,
 * except where the stores differ in what they can do (`local`).
 */

export interface HubStores {
  readonly kind: 'sqlite' | 'postgres'
  readonly registry: Registry
  readonly presence: PresenceStore
  readonly telemetry: TelemetryStore
  readonly deadLetters: DeadLetters
  readonly jobs: JobsBackend
  readonly commands: CommandStore
  readonly schedules: ScheduleStore
  /**
   * The hub's SQLite file and its group-commit writer, on SQLite only: the
   * rules keep their state there and react inside its transactions (they do
   * not run on PostgreSQL yet: issue #18).
   */
  readonly local: { readonly db: Db; readonly writer: Writer } | undefined
  /** The write path's load (the group-commit writer, or the PostgreSQL telemetry writer), for /metrics and the saturation monitor. */
  writerStats(): WriterStats
  /** The WAL checkpoints of the SQLite file (undefined on PostgreSQL, which keeps its own). */
  readonly checkpoints: (() => CheckpointStats) | undefined
  /** Runs each time a commit's rows are written (SQLite: what the broker holds for that commit leaves then). */
  onWritten(hook: () => (() => void) | void): void
}

export interface StoreDeps {
  readonly logger: Logger
  /** The broker's client id on an external broker: whose commands a row is (commands/postgres.ts). */
  readonly hubId: string
  readonly observeCommit?: WriterOptions['observeCommit']
  readonly walSync?: (real: WalSync) => WalSync
  readonly onSyncFailed?: (err: Error) => void
  /** Pushes each part's release, to run last-in first-out with the hub's. */
  readonly release: (fn: () => Promise<void> | void) => void
}

export type StoreConfig = Pick<HubConfig, 'dataDir' | 'database' | 'flushDelayMs' | 'maxCommitRows' | 'deadLetterMaxRows'> & { readonly databasePassword?: string | undefined }

export async function openStores(config: StoreConfig, deps: StoreDeps): Promise<HubStores> {
  return config.database === undefined ? openSqlite(config, deps) : openPostgresStores(config.database, config, deps)
}

function openSqlite(config: StoreConfig, deps: StoreDeps): HubStores {
  const { logger: log } = deps
  const dbPath = join(config.dataDir, 'hub.db')
  const db = openHubDb(dbPath, log)
  deps.release(() => { db.close() })
  const walSync = createWalSync(db, dbPath)
  const writer = createWriter(db, {
    flushDelayMs: config.flushDelayMs, maxBatchWeight: config.maxCommitRows, observeCommit: deps.observeCommit,
    walSync: deps.walSync?.(walSync) ?? walSync,
    onSyncFailed: (err) => deps.onSyncFailed?.(err),
  }, log.child({ component: 'writer' }))
  deps.release(() => writer.close())
  // Closed before the writer: the writer's close and the database's do the last checkpoint.
  const checkpointer = createCheckpointer(db, dbPath, { intervalMs: 100, fallbackPages: 10_000 }, log.child({ component: 'checkpointer' }))
  deps.release(() => checkpointer.close())
  writer.onCommit(() => { checkpointer.committed() })
  return {
    kind: 'sqlite',
    registry: createRegistry(db),
    presence: createPresenceStore(db, writer, log.child({ component: 'presence' })),
    telemetry: createSqliteTelemetryStore(db, writer, log.child({ component: 'telemetry' })),
    deadLetters: createDeadLetters(db, writer, { maxRows: config.deadLetterMaxRows }),
    jobs: sqliteJobsBackend(db, writer),
    commands: createSqliteCommandStore(db, writer),
    schedules: sqliteScheduleStore(db),
    local: { db, writer },
    writerStats: () => writer.stats(),
    checkpoints: () => checkpointer.stats(),
    onWritten: (hook) => { writer.onWritten(hook) },
  }
}

/** How long a batch above its stream's mark waits for the earlier one from another hub (telemetry/postgres.ts, gapWaitMs). */
const GAP_WAIT_MS = 250

async function openPostgresStores(url: string, config: StoreConfig, deps: StoreDeps): Promise<HubStores> {
  const { logger: log } = deps
  const password = config.databasePassword
  // Two pools: the writers' (telemetry groups, presence, commands, jobs) and the reads' (the API,
  // the dashboard), so a burst of queries never makes a commit wait for a connection.
  const pool = openPostgres(url, log, { maxConnections: 12, applicationName: `rollcall-hub ${deps.hubId}`, password })
  deps.release(() => pool.end())
  const reads = openPostgres(url, log, { maxConnections: 4, applicationName: `rollcall-hub-reads ${deps.hubId}`, password })
  deps.release(() => reads.end())
  const migrated = await migratePostgres(pool, log)
  if (migrated.from !== migrated.to) log.info(migrated, 'database schema migrated')

  const registry = createPostgresRegistry(pool, { url, password }, log.child({ component: 'registry' }))
  await registry.start()
  deps.release(() => registry.stop())
  const recorder = await createPostgresPresenceRecorder(pool, { flushDelayMs: config.flushDelayMs, maxQueued: 100_000 }, log.child({ component: 'presence' }))
  deps.release(() => recorder.close())
  const presence = createPresence(recorder.recorder, recorder.rows, log.child({ component: 'presence' }))
  const telemetry = createPostgresTelemetryStore(pool, { flushDelayMs: config.flushDelayMs, maxGroupRows: config.maxCommitRows, gapWaitMs: GAP_WAIT_MS, readPool: reads }, log.child({ component: 'telemetry' }))
  deps.release(() => telemetry.close())
  const deadLetters = createPostgresDeadLetters(pool, { maxRows: config.deadLetterMaxRows, flushDelayMs: config.flushDelayMs, maxQueued: 10_000 }, log.child({ component: 'dead-letters' }))
  deps.release(() => deadLetters.close())
  const jobs = postgresJobsBackend(pool, log.child({ component: 'jobs' }))
  deps.release(() => jobs.drain())
  const commands = createPostgresCommandStore(pool, { hubId: deps.hubId }, log.child({ component: 'commands' }))
  deps.release(() => commands.flush())
  return {
    kind: 'postgres',
    registry,
    presence,
    telemetry,
    deadLetters,
    jobs,
    commands,
    schedules: postgresScheduleStore(pool),
    local: undefined,
    writerStats: () => {
      const t = telemetry.stats()
      return {
        commits: t.commits, failedCommits: t.failedCommits, failedOps: t.failedOps, queuedWeight: t.queuedRows, lastCommitMs: t.lastCommitMs,
        lastCommitWeight: t.lastCommitRows, oldestQueuedMs: t.oldestQueuedMs, awaitingSync: 0, failedSyncs: 0,
      }
    },
    checkpoints: undefined,
    onWritten: () => undefined,
  }
}
