import type { Client } from 'aedes'
import type { ConnectionInfo, DisconnectReason, Principal } from './types.js'

/**
 * The broker's record of authenticated connections: who each aedes Client is,
 * which one currently holds a client id, and why a connection ended.
 *
 * Life of one entry:
 *   authenticated  CONNECT accepted; gets a connId, principal known
 *   registered     aedes emitted 'client'; it now owns its client id
 *   ending         a reason was noted (keepalive, kick, slow consumer, ...);
 *                  the first reason noted wins
 *   ended          aedes emitted 'clientDisconnect'; the entry is released
 *
 * Takeover [MQTT-3.1.4-2]: when a second client authenticates with a live
 * id, aedes closes the old one before registering the new one, so the old
 * one's end is seen while the new one is still pending under the same id.
 */
export interface Ended {
  readonly info: ConnectionInfo
  readonly reason: DisconnectReason
  readonly detail: string | undefined
}

export class ConnectionTable {
  private nextConnId = 1
  private readonly infos = new WeakMap<Client, ConnectionInfo>()
  private readonly reasons = new WeakMap<Client, { reason: DisconnectReason; detail: string | undefined }>()
  private readonly live = new Map<string, Client>()
  private readonly pending = new Map<string, Client>()

  authenticated(client: Client, clientId: string, principal: Principal, remoteAddress: string | undefined): ConnectionInfo {
    const info: ConnectionInfo = { connId: this.nextConnId++, clientId, principal, remoteAddress }
    this.infos.set(client, info)
    this.pending.set(clientId, client)
    return info
  }

  /** aedes registered the client; returns its info, or undefined for a client we never authenticated. */
  registered(client: Client): ConnectionInfo | undefined {
    const info = this.infos.get(client)
    if (info === undefined) return undefined
    if (this.pending.get(info.clientId) === client) this.pending.delete(info.clientId)
    this.live.set(info.clientId, client)
    return info
  }

  /** The socket closed; forgets a client that authenticated but never registered. */
  socketClosed(client: Client): void {
    const info = this.infos.get(client)
    if (info !== undefined && this.pending.get(info.clientId) === client) this.pending.delete(info.clientId)
  }

  infoOf(client: Client): ConnectionInfo | undefined {
    return this.infos.get(client)
  }

  principalOf(client: Client | null): Principal | undefined {
    return client === null ? undefined : this.infos.get(client)?.principal
  }

  noteReason(client: Client, reason: DisconnectReason, detail?: string): void {
    if (!this.reasons.has(client)) this.reasons.set(client, { reason, detail })
  }

  /** The connection ended; returns what to report, or undefined if it never registered. */
  ended(client: Client, fallback: DisconnectReason): Ended | undefined {
    const info = this.infos.get(client)
    if (info === undefined) return undefined
    const pending = this.pending.get(info.clientId)
    if (pending === client) this.pending.delete(info.clientId)
    if (this.live.get(info.clientId) !== client) return undefined
    this.live.delete(info.clientId)
    if (pending !== undefined && pending !== client) this.noteReason(client, 'taken-over')
    const noted = this.reasons.get(client)
    return { info, reason: noted?.reason ?? fallback, detail: noted?.detail }
  }

  byClientId(clientId: string): Client | undefined {
    return this.live.get(clientId)
  }

  get size(): number {
    return this.live.size
  }

  clients(): IterableIterator<Client> {
    return this.live.values()
  }

  /** Registered clients and those authenticated but not registered yet (CONNACK in flight). */
  allClients(): Client[] {
    return [...this.live.values(), ...this.pending.values()]
  }
}
