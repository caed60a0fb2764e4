import { DEVICES_PREFIX, parseTopic, TOPIC_KINDS, type TopicKind } from '../protocol/topics.js'
import { isDeviceId, isTaskName } from '../protocol/ids.js'
import type { Principal } from './types.js'

/**
 * Who may publish and subscribe where. Default deny: every rule below is an
 * allowance, and anything that matches none is refused with a reason.
 *
 * device {id}
 *   publish   its own up-topics; retain only on its own `state` (the birth
 *             and the Will). Other topics under its own `devices/{id}/`
 *             prefix that are not a known kind pass, so the hub can
 *             dead-letter them with a reason; its own down-topics do not,
 *             since the device itself subscribes there and would be
 *             spoofing the hub to itself.
 *   subscribe exactly its own down-topics, no wildcards.
 * observer    subscribe `devices/{+ or id}/{telemetry|state|events}` and
 *             `hub/rules/{+ or rule}/events` (what rules publish); publish nothing.
 * anonymous   publish and subscribe outside `devices/#`, `hub/#` and `$...`,
 *             without retain; a filter that could match those trees is refused.
 *
 * `$` topics are the server's [MQTT-4.7.2-1]: no client may touch them.
 */

export type Verdict = { readonly ok: true } | { readonly ok: false; readonly reason: string }

const ALLOW: Verdict = { ok: true }
const deny = (reason: string): Verdict => ({ ok: false, reason })

const OBSERVABLE_KINDS: ReadonlySet<string> = new Set<TopicKind>(['telemetry', 'state', 'events'])
const DOWN_KINDS: ReadonlySet<string> = new Set(
  Object.entries(TOPIC_KINDS).filter(([, direction]) => direction === 'down').map(([kind]) => kind),
)
/** First topic levels closed to anonymous clients. */
const RESERVED_ROOTS: ReadonlySet<string> = new Set(['devices', 'hub'])

export function canPublish(principal: Principal, topic: string, retain: boolean): Verdict {
  if (topic.startsWith('$')) return deny('$ topics are reserved for the broker')
  switch (principal.kind) {
    case 'device':
      return devicePublish(principal.id, topic, retain)
    case 'observer':
      return deny('observers are read-only')
    case 'anonymous':
      if (RESERVED_ROOTS.has(firstLevel(topic))) return deny('anonymous clients may not publish under devices/ or hub/')
      if (retain) return deny('retain is only allowed on a device\'s own state topic')
      return ALLOW
    default:
      return exhaustive(principal)
  }
}

export function canSubscribe(principal: Principal, filter: string): Verdict {
  if (filter.startsWith('$')) return deny('$ topics are reserved for the broker')
  switch (principal.kind) {
    case 'device':
      return deviceSubscribe(principal.id, filter)
    case 'observer':
      return observerSubscribe(filter)
    case 'anonymous': {
      const root = firstLevel(filter)
      // `#`, `+/...` and `devices/...` could all match a topic under devices/.
      if (root === '#' || root === '+') return deny('a filter starting with a wildcard could match devices/ or hub/')
      if (RESERVED_ROOTS.has(root)) return deny('anonymous clients may not subscribe under devices/ or hub/')
      return ALLOW
    }
    default:
      return exhaustive(principal)
  }
}

function devicePublish(id: string, topic: string, retain: boolean): Verdict {
  const ownPrefix = `${DEVICES_PREFIX}${id}/`
  if (!topic.startsWith(ownPrefix)) return deny('devices may only publish under their own devices/{id}/ prefix')
  const parsed = parseTopic(topic)
  if (parsed === undefined) {
    return retain ? deny('retain is only allowed on a device\'s own state topic') : ALLOW
  }
  if (parsed.direction !== 'up') return deny('devices may not publish on their down-topics')
  if (retain && parsed.kind !== 'state') return deny('retain is only allowed on a device\'s own state topic')
  return ALLOW
}

function deviceSubscribe(id: string, filter: string): Verdict {
  if (filter.includes('+') || filter.includes('#')) return deny('devices may not subscribe with wildcards')
  const parsed = parseTopic(filter)
  if (parsed === undefined || parsed.deviceId !== id || !DOWN_KINDS.has(parsed.kind)) {
    return deny('devices may only subscribe to their own down-topics')
  }
  return ALLOW
}

function observerSubscribe(filter: string): Verdict {
  const levels = filter.split('/')
  const [root, device, kind] = levels
  if (levels.length === 3 && root === 'devices' && (device === '+' || isDeviceId(device))
    && kind !== undefined && OBSERVABLE_KINDS.has(kind)) {
    return ALLOW
  }
  if (levels.length === 4 && root === 'hub' && device === 'rules' && (kind === '+' || isTaskName(kind)) && levels[3] === 'events') return ALLOW
  return deny('observers may only subscribe to devices/{+ or id}/{telemetry|state|events} and hub/rules/{+ or rule}/events')
}

function firstLevel(topic: string): string {
  const slash = topic.indexOf('/')
  return slash < 0 ? topic : topic.slice(0, slash)
}

function exhaustive(value: never): never {
  throw new Error(`unhandled principal ${JSON.stringify(value)}`)
}
