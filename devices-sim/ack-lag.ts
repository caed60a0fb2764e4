import type { Outbox } from '../agent/outbox.js'

/**
 * Ingest lag as a device sees it: a sample timed from its append to the
 * outbox to the hub's ack that covers it. Every 10th append is timed, so
 * watching a whole fleet costs little. The simulator's report and the load
 * generator's reports (fleet-runner.ts) both measure it so; `now` is their
 * clock, `record` gets each lag in its unit.
 */
export function watchAckLag(outbox: Pick<Outbox, 'onAppend' | 'onAck'>, now: () => number, record: (lagMs: number) => void): void {
  const open = new Map<number, number>()
  let appends = 0
  outbox.onAppend((seq) => { if (appends++ % 10 === 0) open.set(seq, now()) })
  outbox.onAck((upTo) => {
    const at = now()
    for (const [seq, appendedAt] of open) {
      if (seq > upTo) continue
      record(at - appendedAt)
      open.delete(seq)
    }
  })
}
