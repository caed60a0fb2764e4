import type { IClientOptions } from 'mqtt'
import { encode } from '../protocol/codec.js'
import type { Birth, Death } from '../protocol/messages.js'

/**
 * What one attempt of the agent's link (agent/link.ts) presents to the hub,
 * shaped apart from the connection state machine: the CONNECT's options with
 * a Will that is the death of the attempt's epoch, the birth published once
 * the down-topics are subscribed (with the optional fields the hub has said
 * it takes), and the death a clean stop publishes. Pure: no socket, no clock.
 */

export interface LinkIdentity {
  readonly deviceId: string
  readonly token: string
  readonly storeId: string
  readonly bootId: string
  readonly agentVersion: string
  readonly capabilities: readonly string[]
  /** Units of the sensors, by name; declared in the birth once the hub takes them (see hubAccepts). */
  readonly units?: Readonly<Record<string, string>>
}

/** The CONNECT settings of the agent's config. */
export interface ConnectSettings {
  readonly keepaliveSec: number
  readonly connectTimeoutMs: number
}

/** An epoch's death: the Will of its attempt, and what a clean stop publishes by hand. */
export function deathOf(storeId: string, epoch: number): Death {
  return { type: 'death', v: 1, epoch, storeId }
}

/**
 * An epoch's birth. `units` and `clockMs` (the device's wall clock, from
 * which the hub works out its skew, issue #13) only when the hub takes them.
 */
export function birthOf(identity: LinkIdentity, epoch: number, extras: { units?: Readonly<Record<string, string>>; clockMs?: number }): Birth {
  return {
    type: 'birth',
    v: 1,
    epoch,
    bootId: identity.bootId,
    agentVersion: identity.agentVersion,
    storeId: identity.storeId,
    capabilities: [...identity.capabilities],
    ...(extras.units ? { units: { ...extras.units } } : {}),
    ...(extras.clockMs === undefined ? {} : { clock: extras.clockMs }),
  }
}

/** MQTT.js's options for one attempt: a fresh client, never reconnecting by itself, its Will the death of `epoch` on `stateTopic`. */
export function connectOptions(link: Pick<LinkIdentity, 'deviceId' | 'token' | 'storeId'> & ConnectSettings, stateTopic: string, epoch: number): IClientOptions {
  return {
    clientId: link.deviceId,
    username: link.deviceId,
    password: link.token,
    clean: true,
    keepalive: link.keepaliveSec,
    connectTimeout: link.connectTimeoutMs,
    reconnectPeriod: 0,
    protocolVersion: 4,
    manualConnect: true,
    // mqtt-packet otherwise pre-builds a 2-byte Buffer for every 16-bit
    // number (65,536 of them, ~6 MB of heap, a tenth of an idle agent's RSS)
    // to save one small allocation per packet; an agent sends a few packets a
    // minute. The setting is process-wide in mqtt-packet.
    writeCache: false,
    will: { topic: stateTopic, payload: encode(deathOf(link.storeId, epoch)), qos: 1, retain: true },
  }
}
