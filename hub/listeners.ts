import { isIP } from 'node:net'

/**
 * Which listeners the hub opens, decided from its config alone, before
 * anything is bound or opened (issue #12: secure by default).
 *
 * - Without TLS: plaintext MQTT on mqttPort and HTTP on httpPort. On a
 *   loopback address that is the safe default it always was; on any other
 *   address device tokens, observer tokens and the admin token would cross
 *   the network in clear text, so the hub refuses to start unless the
 *   operator says `--allow-plaintext` (as Mosquitto 2.0 refuses remote
 *   access without a configured listener).
 * - With TLS (tlsCert and tlsKey): MQTT over TLS on mqttTlsPort and HTTPS on
 *   httpPort. The plaintext MQTT listener is off unless asked for with
 *   `--allow-plaintext` (devices still on mqtt:// while a fleet moves over);
 *   HTTP is never served in clear beside HTTPS.
 */

export interface ListenerInput {
  readonly host: string
  readonly tls: boolean
  readonly allowPlaintext: boolean
  readonly mqttPort: number
  readonly mqttTlsPort: number
  readonly httpPort: number
  /** Named in the refusal's commands, so they can be pasted as they are. */
  readonly dataDir?: string
}

export type ListenerPlan =
  | { readonly ok: true; readonly mqttPlain: boolean; readonly mqttTls: boolean; readonly https: boolean }
  | { readonly ok: false; readonly code: 'PLAINTEXT_REFUSED' | 'PORT_CONFLICT'; readonly message: string }

/** 127.0.0.0/8, ::1, ::ffff:127.x and the name localhost: nothing beyond this machine can connect. */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1')
  if (h === 'localhost') return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (isIP(h) === 6) return h === '::1' || h.startsWith('::ffff:127.')
  // Any other name may resolve to anything: it is treated as reachable from the network.
  return false
}

export function planListeners(i: ListenerInput): ListenerPlan {
  const mqttPlain = !i.tls || i.allowPlaintext
  const dir = i.dataDir ?? 'DIR'
  if (!isLoopback(i.host) && !i.tls && !i.allowPlaintext) {
    return {
      ok: false,
      code: 'PLAINTEXT_REFUSED',
      message: `refusing to serve plaintext MQTT and HTTP on ${i.host}, which is not a loopback address: device tokens and the admin token would cross the network in clear text. `
        + `Serve TLS instead: \`rollcall tls init --data ${dir} --host NAME\` makes a private CA and a certificate for NAME (the name or address devices use), then start the hub with `
        + `--tls-cert ${dir}/tls/hub.pem --tls-key ${dir}/tls/hub.key (or "tlsCert"/"tlsKey" in the config file; a certificate from a public CA works too). `
        + 'Or, on a network you trust, add --allow-plaintext ("allowPlaintext": true).',
    }
  }
  // Port 0 picks a free port for each listener, so only equal fixed ports collide.
  if (i.tls && mqttPlain && i.mqttPort !== 0 && i.mqttPort === i.mqttTlsPort) {
    return { ok: false, code: 'PORT_CONFLICT', message: `--mqtt-port and --mqtt-tls-port are both ${i.mqttPort}: plaintext MQTT and MQTT over TLS need a port each (1883 and 8883 by convention)` }
  }
  if (i.tls && i.mqttTlsPort !== 0 && i.mqttTlsPort === i.httpPort) {
    return { ok: false, code: 'PORT_CONFLICT', message: `--mqtt-tls-port and --http-port are both ${i.httpPort}: choose a port each` }
  }
  return { ok: true, mqttPlain, mqttTls: i.tls, https: i.tls }
}
