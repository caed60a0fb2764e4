/**
 * The QoS a client receives a message at, as MQTT 3.1.1 says and aedes 1.2
 * does not quite do (issue #15): the lower of the QoS it was published at
 * and the highest QoS granted among the client's subscriptions that match
 * its topic [MQTT-3.3.5-1] [MQTT-3.8.4-6].
 *
 * aedes delivers a message to a client through whichever of its matching
 * subscriptions comes first (the others are deduplicated away), at that
 * subscription's QoS; and it downgrades a QoS 2 publish to a QoS 1 grant
 * only when the filter equals the topic, so a wildcard subscription granted
 * QoS 1 got QoS 2. `deliverAtGrantedQos` wraps the two delivery functions
 * aedes gives each client (and binds into each subscription as it is made):
 * both now work out the QoS from all the client's subscriptions and hand the
 * message to the one that delivers at it.
 *
 * One case stays as aedes has it: when a subscription whose filter equals
 * the topic was granted less than a wildcard one that also matches, aedes
 * lowers the message to that exact subscription's QoS on the way out.
 */

/** What the wrapper needs of an aedes client: its subscriptions and its two delivery functions. */
export interface DeliveringClient {
  subscriptions: Record<string, { readonly qos: number }>
  deliver0: Deliver
  deliverQoS: Deliver
}

type Deliver = (packet: { topic: string; qos: number }, cb: () => void) => void

/** Whether a topic filter matches a topic name [MQTT-4.7]: `+` one level, `#` the rest; no wildcard first level matches a `$` topic [MQTT-4.7.2-1]. */
export function filterMatches(filter: string, topic: string): boolean {
  return matchesLevels(filter, topic.charCodeAt(0) === 36, topic.split('/'))
}

/** filterMatches on a topic already split into levels (split once per delivery, not once per filter). */
function matchesLevels(filter: string, dollar: boolean, t: readonly string[]): boolean {
  if (dollar && (filter.charCodeAt(0) === 43 || filter.charCodeAt(0) === 35)) return false
  const f = filter.split('/')
  for (let i = 0; i < f.length; i++) {
    const level = f[i]
    if (level === '#') return true
    if (i >= t.length) return false
    if (level !== '+' && level !== t[i]) return false
  }
  return f.length === t.length
}

/** The highest QoS granted among `subscriptions` matching `topic`; -1 when none does. */
export function grantedQos(subscriptions: Readonly<Record<string, { readonly qos: number }>>, topic: string): number {
  const levels = topic.split('/')
  const dollar = topic.charCodeAt(0) === 36
  let best = -1
  for (const filter in subscriptions) {
    const qos = subscriptions[filter]!.qos
    // An exact filter needs no split; the highest grant possible ends the search.
    if (qos > best && (filter === topic || matchesLevels(filter, dollar, levels))) best = qos
    if (best === 2) break
  }
  return best
}

export function deliverAtGrantedQos(client: DeliveringClient): void {
  const deliver0 = client.deliver0
  const deliverQoS = client.deliverQoS
  // The packet each receives is the subscription's own copy (aedes makes one per delivery): its qos may be set.
  const deliver: Deliver = (packet, cb) => {
    const granted = grantedQos(client.subscriptions, packet.topic)
    // No subscription matches (one just removed): aedes's own choice stands.
    const qos = granted < 0 ? packet.qos : Math.min(packet.qos, granted)
    packet.qos = qos
    if (qos === 0) deliver0(packet, cb)
    else deliverQoS(packet, cb)
  }
  client.deliver0 = deliver
  client.deliverQoS = deliver
}
