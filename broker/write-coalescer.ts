/**
 * Fewer, fuller socket writes. A device's PUBACK is written when its PUBLISH
 * arrives and the hub's ack when the group commit lands a few ms later; as two
 * writes they are two syscalls, and on a busy hub the writes were the largest
 * single cost per message. A connection whose writes are coalesced corks its
 * socket at its first write and is uncorked when the commit that holds its
 * message has written its acks (below), or by the timer: what it wrote
 * meanwhile leaves in one writev. Nothing is reordered or dropped.
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
 *
 * `maxDelayMs` counts from each set's first write, so the timer releases only
 * sets that waited that long: under steady load there is always a set open,
 * and a timer that released everything would cut each commit's sets off
 * from their acks. A sealed set waits for its commit's release longer,
 * `sealedMaxDelayMs` (a second): its release is on its way, as soon as the
 * fsync is done. On a hub past its limit a commit takes longer to become
 * durable, and releasing its PUBACKs without their acks would make every
 * message cost two socket writes just when the hub can least afford them;
 * the cap is for a disk that stalls. Both are counted from the set's first
 * write: no write waits longer than `sealedMaxDelayMs`, and none longer than
 * `maxDelayMs` unless a commit has begun since. The clock should be steady
 * (a wall clock set back would stretch a hold by as much).
 */

import { systemClock, type Clock, type ClockTimer } from '../common/clock.js'

/** The longest delay a Node timer takes (2^31 - 1 ms); longer ones fire at once. */
export const MAX_TIMER_MS = 2_147_483_647

/** What the coalescer holds: a connection that can release its corked writes. */
export interface Corked {
  /** Writes out what was held since the first write after the last release. */
  release(): void
}

/** Connections released, by what released them (a counter each; a metric, and how a test sees which path ran). */
export interface WriteReleases {
  /** By their commit's release (sealWrites), once its acks were written: the common case on a busy hub. */
  commit: number
  /** By the timer: no commit came in time. More than a few on a busy hub means two writes per message. */
  timer: number
  /** One connection at once: a command, a CONNACK, a SUBACK. */
  single: number
  /** By flush(): flushWrites(), the broker's close. */
  flush: number
}

/** Connections held since `since` (the clock's time of the set's first write). */
interface HeldSet {
  readonly members: Set<Corked>
  since: number
}

export class WriteCoalescer {
  private held: HeldSet = { members: new Set(), since: 0 }
  /** Sets closed by seal(), waiting for their commit's acks, oldest first. */
  private sealed = new Set<HeldSet>()
  private timer: ClockTimer | undefined
  /** The clock's time the timer is set for. */
  private timerAt = 0
  private readonly clock: Clock
  readonly sealedMaxDelayMs: number
  readonly released: WriteReleases = { commit: 0, timer: 0, single: 0, flush: 0 }

  constructor(readonly maxDelayMs: number, clock: Clock = systemClock, sealedMaxDelayMs = Math.max(1000, maxDelayMs)) {
    if (!(maxDelayMs > 0 && maxDelayMs <= MAX_TIMER_MS)) throw new RangeError(`maxDelayMs must be a number of ms above 0, at most ${MAX_TIMER_MS}, got ${maxDelayMs}`)
    if (!(sealedMaxDelayMs >= maxDelayMs && sealedMaxDelayMs <= MAX_TIMER_MS)) {
      throw new RangeError(`sealedMaxDelayMs must be at least maxDelayMs (${maxDelayMs}) and at most ${MAX_TIMER_MS}, got ${sealedMaxDelayMs}`)
    }
    this.clock = clock
    this.sealedMaxDelayMs = sealedMaxDelayMs
  }

  /** `c` just corked its socket for its first held write: it joins the open set, released with the commit that seals it or by the timer. */
  hold(c: Corked): void {
    if (this.held.members.size === 0) {
      this.held.since = this.clock.now()
      this.held.members.add(c)
      this.arm()
      return
    }
    this.held.members.add(c)
  }

  /** Releases one connection now (what it holds is wanted at once: a command, a CONNACK). */
  release(c: Corked): void {
    let found = this.held.members.delete(c)
    if (!found) {
      for (const set of this.sealed) if (set.members.delete(c)) { found = true; break }
    }
    if (!found) return
    this.released.single++
    c.release()
    if (this.size === 0) this.stopTimer()
  }

  /**
   * Closes the set of connections held now (the ones whose messages a commit
   * just wrote): the returned function releases them, and only them. Later
   * writes start a new set. The timer still caps how long any write waits.
   */
  seal(): () => void {
    const set = this.held
    this.held = { members: new Set(), since: 0 }
    if (set.members.size === 0) return () => undefined
    this.sealed.add(set)
    return () => {
      if (!this.sealed.delete(set)) return
      this.released.commit += set.members.size
      for (const c of set.members) c.release()
      if (this.size === 0) this.stopTimer()
    }
  }

  /** Releases every held connection now, sealed or not. */
  flush(): void {
    this.stopTimer()
    const sets = [...this.sealed, this.held]
    this.sealed = new Set()
    this.held = { members: new Set(), since: 0 }
    for (const set of sets) {
      this.released.flush += set.members.size
      for (const c of set.members) c.release()
    }
  }

  /** Releases the sets that have waited their time, then waits for the next one due. */
  private onTimer(): void {
    this.timer = undefined
    // Timers keep their own time, which may run a little ahead of the clock's reading: 1 ms of slack.
    const now = this.clock.now() + 1
    for (const set of this.sealed) {
      if (set.since + this.sealedMaxDelayMs > now) break
      this.sealed.delete(set)
      this.released.timer += set.members.size
      for (const c of set.members) c.release()
    }
    if (this.held.members.size > 0 && this.held.since + this.maxDelayMs <= now) {
      const set = this.held
      this.held = { members: new Set(), since: 0 }
      this.released.timer += set.members.size
      for (const c of set.members) c.release()
    }
    this.arm()
  }

  /** Sets the timer for the next set due, unless it is set for that already or sooner. */
  private arm(): void {
    const next = this.nextDue()
    if (next === undefined || (this.timer !== undefined && this.timerAt <= next)) return
    this.clock.clearTimer(this.timer)
    this.timerAt = next
    this.timer = this.clock.setTimeout(() => this.onTimer(), Math.max(1, next - this.clock.now()))
  }

  /** When the next set is due for release by the timer: sealed sets are oldest first. */
  private nextDue(): number | undefined {
    const open = this.held.members.size > 0 ? this.held.since + this.maxDelayMs : undefined
    const oldest = this.sealed.values().next()
    const sealed = oldest.done === true ? undefined : oldest.value.since + this.sealedMaxDelayMs
    return open === undefined ? sealed : sealed === undefined ? open : Math.min(open, sealed)
  }

  private stopTimer(): void {
    this.clock.clearTimer(this.timer)
    this.timer = undefined
  }

  /** Connections holding writes now (a gauge for tests and stats). */
  get size(): number {
    let n = this.held.members.size
    for (const set of this.sealed) n += set.members.size
    return n
  }
}
