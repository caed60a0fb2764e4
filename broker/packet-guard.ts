import { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import { newScanState, scanChunk, type ScanState } from './header-scanner.js'
import type { Corked, WriteCoalescer } from './write-coalescer.js'

/**
 * The stream aedes reads from and writes to, wrapped around one accepted TCP
 * socket. It owns three things aedes does not do for us:
 *
 * - size: every inbound fixed header is scanned as bytes pass; a packet whose
 *   remaining length is above the limit destroys the connection before the
 *   body is buffered (mqtt-packet's parser has no limit of its own);
 * - MQTT 3.1.1's rules for what a client sends (packet-rules.ts): a packet
 *   that breaks one destroys the connection before aedes parses it, and a
 *   CONNECT of another protocol version is answered with CONNACK 1 first;
 * - slowness: if the socket does not drain within `drainTimeoutMs` after a
 *   write filled it, the connection is destroyed with SLOW_CONSUMER;
 * - loss: in lossy mode (observers, anonymous clients) writes never push back
 *   on aedes, because aedes holds the publisher's delivery callback until a
 *   subscriber drains. Instead the broker asks `congested` and drops packets
 *   for this client while it is true, and the drain watchdog cuts it off.
 *
 * Chunks pass by reference in both directions; nothing is copied.
 */

export const GUARD_ERROR_CODES = ['PAYLOAD_TOO_LARGE', 'MALFORMED_PACKET', 'INVALID_UTF8', 'PROTOCOL_VIOLATION', 'UNSUPPORTED_PROTOCOL', 'SLOW_CONSUMER'] as const
export type GuardErrorCode = (typeof GUARD_ERROR_CODES)[number]

/** CONNACK, return code 1: unacceptable protocol version [MQTT-3.1.2-2]. */
const CONNACK_UNSUPPORTED_PROTOCOL = Buffer.from([0x20, 0x02, 0x00, 0x01])

export class GuardError extends Error {
  readonly code: GuardErrorCode
  constructor(code: GuardErrorCode, message: string) {
    super(message)
    this.name = 'GuardError'
    this.code = code
  }
}

export interface PacketGuardOptions {
  /** Largest "remaining length" a packet may announce (MQTT 3.1.1 §2.2.3). */
  readonly maxRemainingLength: number
  readonly drainTimeoutMs: number
  /** Hold writes and let the coalescer release them together (write-coalescer.ts); absent: every write goes at once. */
  readonly coalescer?: WriteCoalescer | undefined
}

export class PacketGuard extends Duplex implements Corked {
  readonly socket: Socket
  readonly remoteAddress: string | undefined
  private readonly scan: ScanState = newScanState()
  private readonly maxRemainingLength: number
  private readonly drainTimeoutMs: number
  private lossyLimitBytes = 0
  private drainTimer: NodeJS.Timeout | undefined
  private pendingWrite: ((error?: Error | null) => void) | undefined
  private readonly coalescer: WriteCoalescer | undefined
  /** The socket is corked by us, waiting for the coalescer's release. */
  private holding = false
  /** Set for the length of a writeUnheld(): its write must not start a hold. */
  private unheld = false

  constructor(socket: Socket, options: PacketGuardOptions) {
    super({ allowHalfOpen: false })
    this.socket = socket
    this.remoteAddress = socket.remoteAddress
    this.maxRemainingLength = options.maxRemainingLength
    this.drainTimeoutMs = options.drainTimeoutMs
    this.coalescer = options.coalescer

    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('end', () => this.push(null))
    socket.on('drain', () => this.onDrain())
    socket.on('error', (err) => this.destroy(err))
    socket.on('close', () => {
      this.clearDrainTimer()
      if (!this.destroyed) this.destroy()
    })
  }

  /** The client sent a DISCONNECT packet [MQTT-3.14.4-3]. */
  get disconnectSeen(): boolean {
    return this.scan.disconnectSeen
  }

  /**
   * Switches to lossy delivery: aedes's writes always complete at once, and
   * `congested` turns true once `limitBytes` sit unsent in the socket.
   */
  setLossy(limitBytes: number): void {
    this.lossyLimitBytes = limitBytes
  }

  get lossy(): boolean {
    return this.lossyLimitBytes > 0
  }

  get congested(): boolean {
    return this.socket.writableLength + this.writableLength >= this.lossyLimitBytes
  }

  override _read(): void {
    if (this.socket.isPaused()) this.socket.resume()
  }

  release(): void {
    if (!this.holding) return
    this.holding = false
    this.socket.uncork()
  }

  /**
   * Writes `chunk` without starting a hold. If the connection holds writes it
   * joins them and leaves at their release; if not, it leaves now (unless
   * this stream still buffers writes of its own: it then goes behind them,
   * and is held if they are). For the
   * hub's acks, written once their commit is durable: a connection whose
   * held PUBACKs were released meanwhile (a command went out, the timer
   * fired) would otherwise keep its ack until the next release.
   */
  writeUnheld(chunk: Buffer): void {
    this.unheld = true
    try {
      this.write(chunk)
    } finally {
      this.unheld = false
    }
  }

  /** The first write since the last release corks the socket until the coalescer releases it. */
  private hold(): void {
    if (this.coalescer === undefined || this.holding || this.unheld || this.socket.destroyed) return
    this.holding = true
    this.socket.cork()
    this.coalescer.hold(this)
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.hold()
    const flushed = this.socket.write(chunk)
    this.afterSocketWrite(flushed, callback)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.hold()
    this.socket.cork()
    let flushed = true
    for (const { chunk } of chunks) flushed = this.socket.write(chunk)
    this.socket.uncork()
    this.afterSocketWrite(flushed, callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Whatever is held goes before the FIN.
    this.release()
    this.socket.end(callback)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.clearDrainTimer()
    this.pendingWrite = undefined
    // What aedes wrote last (a refusing CONNACK before it closes) goes before the socket does, as without coalescing.
    this.release()
    if (this.socket.writableEnded && !this.socket.writableFinished) {
      // Our own last word (CONNACK 1) is still on its way: close once it is out, or in a second at most.
      const timer = setTimeout(() => this.socket.destroy(), 1000)
      this.socket.once('finish', () => { clearTimeout(timer); this.socket.destroy() })
      this.socket.once('close', () => clearTimeout(timer))
    } else {
      this.socket.destroy()
    }
    callback(error)
  }

  private onData(chunk: Buffer): void {
    const verdict = scanChunk(this.scan, chunk, this.maxRemainingLength)
    if (!verdict.ok) {
      if (verdict.code === 'UNSUPPORTED_PROTOCOL') {
        // [MQTT-3.1.2-2]: the client hears why before the close.
        this.release()
        this.socket.end(CONNACK_UNSUPPORTED_PROTOCOL)
      }
      this.destroy(new GuardError(verdict.code, 'detail' in verdict ? verdict.detail
        : `packet type ${verdict.packetType} announces at least ${verdict.remainingLength} bytes (limit ${this.maxRemainingLength})`))
      return
    }
    if (!this.push(chunk)) this.socket.pause()
  }

  private afterSocketWrite(flushed: boolean, callback: (error?: Error | null) => void): void {
    if (!flushed) this.armDrainTimer()
    if (flushed || this.lossy) {
      callback()
      return
    }
    this.pendingWrite = callback
  }

  private onDrain(): void {
    this.clearDrainTimer()
    const callback = this.pendingWrite
    this.pendingWrite = undefined
    callback?.()
  }

  private armDrainTimer(): void {
    if (this.drainTimer !== undefined || this.drainTimeoutMs <= 0) return
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined
      this.destroy(new GuardError('SLOW_CONSUMER', `socket did not drain within ${this.drainTimeoutMs} ms`))
    }, this.drainTimeoutMs)
  }

  private clearDrainTimer(): void {
    if (this.drainTimer === undefined) return
    clearTimeout(this.drainTimer)
    this.drainTimer = undefined
  }
}
