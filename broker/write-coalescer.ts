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
 */

/** What the coalescer holds: a connection that can release its corked writes. */
export interface Corked {
  /** Writes out what was held since the first write after the last release. */
  release(): void
}

export class WriteCoalescer {
  private held = new Set<Corked>()
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
    if (this.held.delete(c)) c.release()
  }

  /** Releases every held connection now. */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    if (this.held.size === 0) return
    const held = this.held
    this.held = new Set()
    for (const c of held) c.release()
  }

  /** Connections holding writes now (a gauge for tests and stats). */
  get size(): number {
    return this.held.size
  }
}
