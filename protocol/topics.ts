import { isDeviceId } from './ids.js'

/**
 * The topic scheme: the one place topics are built and parsed.
 *
 *   devices/{id}/state            up    retained birth/death, also the Will
 *   devices/{id}/telemetry        up    batch of samples
 *   devices/{id}/telemetry/ack    down  cumulative ack
 *   devices/{id}/events           up    device events (same outbox and ack as telemetry)
 *   devices/{id}/cmd/req          down
 *   devices/{id}/cmd/res          up
 *   devices/{id}/jobs/notify      down
 *   devices/{id}/jobs/pull        up
 *   devices/{id}/jobs/batch       down
 *   devices/{id}/jobs/update      up
 *   devices/{id}/jobs/ack         down
 */
export const TOPIC_KINDS = {
  'state': 'up',
  'telemetry': 'up',
  'telemetry/ack': 'down',
  'events': 'up',
  'cmd/req': 'down',
  'cmd/res': 'up',
  'jobs/notify': 'down',
  'jobs/pull': 'up',
  'jobs/batch': 'down',
  'jobs/update': 'up',
  'jobs/ack': 'down',
} as const

export type TopicKind = keyof typeof TOPIC_KINDS
export type Direction = (typeof TOPIC_KINDS)[TopicKind]

export const DEVICES_PREFIX = 'devices/'

export function deviceTopic(deviceId: string, kind: TopicKind): string {
  return `${DEVICES_PREFIX}${deviceId}/${kind}`
}

export const topics = {
  state: (id: string) => deviceTopic(id, 'state'),
  telemetry: (id: string) => deviceTopic(id, 'telemetry'),
  telemetryAck: (id: string) => deviceTopic(id, 'telemetry/ack'),
  events: (id: string) => deviceTopic(id, 'events'),
  cmdReq: (id: string) => deviceTopic(id, 'cmd/req'),
  cmdRes: (id: string) => deviceTopic(id, 'cmd/res'),
  jobsNotify: (id: string) => deviceTopic(id, 'jobs/notify'),
  jobsPull: (id: string) => deviceTopic(id, 'jobs/pull'),
  jobsBatch: (id: string) => deviceTopic(id, 'jobs/batch'),
  jobsUpdate: (id: string) => deviceTopic(id, 'jobs/update'),
  jobsAck: (id: string) => deviceTopic(id, 'jobs/ack'),
  /** What a rule's "event" action publishes (hub/rules/): the hub's own tree, which observers may read. */
  ruleEvents: (rule: string) => `${HUB_RULES_PREFIX}${rule}/events`,
} as const

/** The hub's topics for rules: hub/rules/{rule}/events. */
export const HUB_RULES_PREFIX = 'hub/rules/'

/** Wildcard filters the hub subscribes with, one per up-kind. */
export function upFilter(kind: TopicKind): string {
  return `${DEVICES_PREFIX}+/${kind}`
}

export interface ParsedTopic {
  readonly deviceId: string
  readonly kind: TopicKind
  readonly direction: Direction
}

/**
 * Parses a concrete topic (no wildcards). Returns undefined for anything that
 * is not exactly `devices/{valid id}/{known kind}`.
 */
export function parseTopic(topic: string): ParsedTopic | undefined {
  if (!topic.startsWith(DEVICES_PREFIX)) return undefined
  const slash = topic.indexOf('/', DEVICES_PREFIX.length)
  if (slash < 0) return undefined
  const deviceId = topic.slice(DEVICES_PREFIX.length, slash)
  const kind = topic.slice(slash + 1)
  if (!isDeviceId(deviceId) || !Object.hasOwn(TOPIC_KINDS, kind)) return undefined
  const k = kind as TopicKind
  return { deviceId, kind: k, direction: TOPIC_KINDS[k] }
}

/** The device id a topic is about, if it sits under `devices/{id}/`, valid kind or not. */
export function topicDeviceId(topic: string): string | undefined {
  if (!topic.startsWith(DEVICES_PREFIX)) return undefined
  const slash = topic.indexOf('/', DEVICES_PREFIX.length)
  const id = topic.slice(DEVICES_PREFIX.length, slash < 0 ? undefined : slash)
  return isDeviceId(id) ? id : undefined
}
