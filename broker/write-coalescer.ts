/**
 * Fewer, fuller socket writes. A device's PUBACK is written when its PUBLISH
 * arrives and the hub's ack when the group commit lands a few ms later; as two
 * writes they are two syscalls, and on a busy hub the writes were the largest
 * single cost per message. A connection whose writes are coalesced corks its
 * socket at its first write and is uncorked at the next `flush()` (the hub
 * calls it after each commit, once the acks are written) or `maxDelayMs`
 * after that first write, whichever comes first: what it wrote meanwhile
 * leaves in one writev. Nothing is reordered or dropped; a write waits at most
 * `maxDelayMs`.
 *
 * When the commit's acks are written later than the commit itself (its fsync
 * runs in the thread pool, hub/storage/wal-sync.ts), packets keep arriving
 * meanwhile and their PUBACKs are held too. `seal()`, called at the commit,
 * closes the set of connections held at that moment; the function it
 * returns releases exactly those once the commit's acks are written. A
 * connection that first holds a write after the seal (a PUBACK that arrived
 * during the fsync) waits for the next commit's release, with its own ack. A
 * connection still held in a sealed set keeps collecting writes until that
 * set's release, so a device publishing twice within a commit may see its
 * second PUBACK leave with the first ack: one write either way.
 */

/** What the coalescer holds: a connection that can release its corked writes. */
export interface Corked {
  /** Writes out what was held since the first write after the last release. */
  release(): void
}

export class WriteCoalescer {
  private held = new Set<Corked>()
  /** Sets closed by seal(), waiting for their commit's acks. */
  private sealed = new Set<Set<Corked>>()
  private timer: NodeJS.Timeout | undefined

  constructor(readonly maxDelayMs: number) {
    if (!(Number.isFinite(maxDelayMs) && maxDelayMs > 0)) throw new RangeError(`maxDelayMs must be a positive number of ms, got ${maxDelayMs}`)
  }

  /** `c` just corked its socket for its first held write: released at the next flush. */
  hold(c: Corked): void {
    this.held.add(c)
    this.timer ??= setTimeout(() => this.flush(), this.maxDelayMs)
  }

  /** Releases one connection now (what it holds is wanted at once: a command, a job batch). */
  release(c: Corked): void {
    if (this.held.delete(c)) {
      c.release()
      return
    }
    for (const set of this.sealed) if (set.delete(c)) { c.release(); return }
  }

  /**
   * Closes the set of connections held now (the ones whose messages a commit
   * just wrote): the returned function releases them, and only them. Later
   * writes start a new set. The timer still caps how long any write waits.
   */
  seal(): () => void {
    const set = this.held
    this.held = new Set()
    this.sealed.add(set)
    return () => {
      if (!this.sealed.delete(set)) return
      for (const c of set) c.release()
      if (this.held.size === 0 && this.sealed.size === 0) this.stopTimer()
    }
  }

  /** Releases every held connection now, sealed or not. */
  flush(): void {
    this.stopTimer()
    const sets = [...this.sealed, this.held]
    this.sealed = new Set()
    this.held = new Set()
    for (const set of sets) for (const c of set) c.release()
  }

  private stopTimer(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
  }

  /** Connections holding writes now (a gauge for tests and stats). */
  get size(): number {
    let n = this.held.size
    for (const set of this.sealed) n += set.size
    return n
  }
}
