import Database from 'better-sqlite3'
import { join } from 'node:path'

/**
 * Reads an agent's ledger from outside (read-only, like an auditor): how many
 * records it ever numbered, how many it dropped, how many wait in the outbox.
 * The agent holds the ledger's lock while it runs: read it after the agent
 * stopped (a clean stop also deletes acked rows from the file). The newest seq
 * is the larger of the table's and meta.outboxSeq (agent/outbox.ts).
 */
export function readLedger(dataDir: string): { generated: number; dropped: number; backlog: number } {
  const db = new Database(join(dataDir, 'ledger.db'), { readonly: true, fileMustExist: true })
  try {
    const meta = db.prepare<[], { key: string; value: number }>('SELECT key, value FROM meta').all()
    const maxSeq = db.prepare<[], { m: number | null }>('SELECT MAX(seq) AS m FROM outbox').get()?.m ?? 0
    const seq = Math.max(maxSeq, Number(meta.find((m) => m.key === 'outboxSeq')?.value ?? 0))
    const dropped = meta.filter((m) => m.key.startsWith('dropped')).reduce((a, m) => a + Number(m.value), 0)
    const backlog = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM outbox').get()!.n
    return { generated: seq, dropped, backlog }
  } finally {
    db.close()
  }
}
