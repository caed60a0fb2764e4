import Database from 'better-sqlite3'
import { join } from 'node:path'

/**
 * Reads an agent's ledger from outside (read-only, like an auditor): how many
 * records it ever numbered, how many it dropped, how many wait in the outbox.
 */
export function readLedger(dataDir: string): { generated: number; dropped: number; backlog: number } {
  const db = new Database(join(dataDir, 'ledger.db'), { readonly: true, fileMustExist: true })
  try {
    const seq = db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").get()?.seq ?? 0
    const meta = db.prepare<[], { key: string; value: number }>('SELECT key, value FROM meta').all()
    const dropped = meta.filter((m) => m.key.startsWith('dropped')).reduce((a, m) => a + Number(m.value), 0)
    const backlog = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM outbox').get()!.n
    return { generated: seq, dropped, backlog }
  } finally {
    db.close()
  }
}
