import { connect as tcpConnect, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { IClientOptions, MqttClient } from 'mqtt'
import { requireCjs } from '../common/cjs.js'
import { hostOf, isTlsUrl, type TlsConnectOptions } from './hub-tls.js'

/**
 * The agent's MQTT client over a socket it opens itself.
 *
 * MQTT.js's `connect()` is a dispatcher for every transport it knows —
 * WebSocket, SOCKS proxies, WeChat and Alipay mini-programs — and loading it
 * loads `ws`, `socks`, `ip-address` and Node's http, https and zlib with
 * them: about 340 KB of JavaScript an agent never runs, held as source and
 * code for the life of the process. The agent speaks to its hub over TCP or
 * TLS only (agent/config.ts accepts mqtt:// and mqtts://), so it builds
 * `MqttClient` (MQTT.js's documented constructor, `new MqttClient(streamBuilder,
 * options)`) with the one socket it needs; `node:tls` is loaded on the first
 * mqtts:// attempt, never for mqtt://. See docs/benchmarks.md, "Idle agent
 * footprint".
 *
 * What MQTT.js's TCP and TLS builders do is kept: port 1883 or 8883 by
 * default, and a TLS error before the handshake completes reaches the
 * client's 'error' listeners and ends the socket. The agent does not honour
 * MQTT.js's MQTTJS_SOCKS_PROXY environment variable, which it never documented.
 */

// Loaded with require(), as every CommonJS dependency at start (common/cjs.ts).
const { default: Client } = requireCjs('mqtt/lib/client') as { default: typeof MqttClient }

export function createHubClient(hub: string, tls: TlsConnectOptions | undefined, options: IClientOptions): MqttClient {
  const url = new URL(hub)
  const secure = isTlsUrl(hub)
  const host = hostOf(hub)
  const port = url.port === '' ? (secure ? 8883 : 1883) : Number(url.port)
  return new Client((client) => secure ? tlsSocket(client, host, port, tls) : tcpSocket(host, port), options)
}

function tcpSocket(host: string, port: number): Socket {
  return tcpConnect({ host, port })
}

function tlsSocket(client: MqttClient, host: string, port: number, tls: TlsConnectOptions | undefined): TLSSocket {
  const { connect } = requireCjs('node:tls') as typeof import('node:tls')
  const socket = connect({ host, port, rejectUnauthorized: true, ...tls })
  // MQTT.js forwards stream errors that carry a code; a handshake error without one
  // would otherwise go unseen, and the half-open socket would wait for the connect timeout.
  const beforeHandshake = (err: Error) => {
    if ((err as { code?: unknown }).code === undefined) client.emit('error', err)
    socket.end()
  }
  socket.on('error', beforeHandshake)
  socket.once('secureConnect', () => { socket.removeListener('error', beforeHandshake) })
  return socket
}
