import { Worker } from 'node:worker_threads'
import type { Logger } from '../../common/logger.js'
import { requireCjs } from '../../common/cjs.js'
import type { Db } from '../../common/sqlite.js'

/**
 * WAL checkpoints on a thread of their own.
 *
 * SQLite copies the WAL back into the database file (a checkpoint) inside
 * the COMMIT that takes the WAL past 1,000 pages. A fleet's one-sample
 * commits dirty a leaf page per device, so at 8,000 devices that is several
 * times a second, each copying thousands of pages and fsyncing the file,
 * all on the hub's one event loop: they were its longest commits (p99
 * 8-11 ms against 2 ms without them; docs/benchmarks.md, "The fsync and the
 * checkpoints off the event loop").
 *
 * Here a worker thread holds its own connection and runs PASSIVE
 * checkpoints, which never block the writer, at most every `intervalMs`
 * after a commit. Once a checkpoint has copied every frame, the writer's
 * next transaction starts the WAL over from its beginning, so it stays
 * small. The writer's own automatic checkpoint stays as the fallback, at
 * `fallbackPages`: if the thread ever falls behind (or dies), the WAL is
 * bounded as before, just later.
 */
export interface CheckpointerOptions {
  /** Least time between two checkpoints the thread is asked for. */
  readonly intervalMs: number
  /** The writer's own automatic checkpoint, past this many WAL pages. */
  readonly fallbackPages: number
}

export interface CheckpointStats {
  readonly checkpoints: number
  readonly failed: number
  /** Pages in the WAL at the last checkpoint, and how many it had copied. */
  readonly lastWalPages: number
  readonly lastCopiedPages: number
}

interface Result { readonly ok: boolean; readonly log?: number; readonly checkpointed?: number; readonly error?: string }

// A script, not a module of ours: a worker cannot load TypeScript, and this is all it runs.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.path)
// A checkpoint that finds the lock taken (the writer's fallback running) is skipped, never waited for.
db.pragma('busy_timeout = 0')
parentPort.on('message', (m) => {
  if (m === 'close') {
    db.close()
    parentPort.close()
    return
  }
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)')
    parentPort.postMessage({ ok: true, log: r.log, checkpointed: r.checkpointed })
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String(err && err.message || err) })
  }
})
`

export function createCheckpointer(db: Db, dbPath: string, options: CheckpointerOptions, logger: Logger) {
  db.pragma(`wal_autocheckpoint = ${options.fallbackPages}`)
  const worker = new Worker(WORKER, { eval: true, workerData: { driver: requireCjs.resolve('better-sqlite3'), path: dbPath } })
  // The thread must not keep a hub that is otherwise done alive.
  worker.unref()
  const stats = { checkpoints: 0, failed: 0, lastWalPages: 0, lastCopiedPages: 0 }
  let busy = false
  let lastAsked = -Infinity
  let dead = false
  let closing = false
  /** Settles when the thread has ended, however it ended. */
  const exited = new Promise<void>((resolve) => {
    worker.once('exit', () => {
      dead = true
      busy = false
      resolve()
    })
  })

  worker.on('message', (r: Result) => {
    busy = false
    if (r.ok) {
      stats.checkpoints++
      stats.lastWalPages = r.log ?? 0
      stats.lastCopiedPages = r.checkpointed ?? 0
    } else {
      stats.failed++
      logger.warn({ error: r.error }, 'checkpoint on its thread failed; the writer\'s own checkpoint bounds the WAL')
    }
  })
  worker.on('error', (err) => {
    logger.error({ err }, 'checkpoint thread stopped; the writer checkpoints on its own from now on')
  })
  void exited.then(() => {
    if (closing) return
    logger.error('checkpoint thread ended; the writer checkpoints on its own from now on')
    // The database may be closed already (a thread that died during the hub's stop).
    try { db.pragma('wal_autocheckpoint = 1000') } catch { /* closed: nothing left to bound */ }
  })

  return {
    /** After a commit: asks the thread for a checkpoint, unless one runs or the last was under intervalMs ago. */
    committed(now = performance.now()): void {
      if (busy || dead || closing || now - lastAsked < options.intervalMs) return
      busy = true
      lastAsked = now
      worker.postMessage('checkpoint')
    },
    stats: (): CheckpointStats => ({ ...stats }),
    /** Closes the thread's connection and waits for the thread to end; the writer's close does the last checkpoint. */
    close(): Promise<void> {
      if (!closing && !dead) {
        // Held while it closes, or a process with nothing else to do would exit before the writer's close.
        worker.ref()
        worker.postMessage('close')
      }
      closing = true
      return exited
    },
  }
}

export type Checkpointer = ReturnType<typeof createCheckpointer>
