import { EVENT_LEVELS, LIMITS } from '../protocol/limits.js'
import { nestsDeeperThan } from '../protocol/json-bounds.js'
import { eventBody, type OutboxRecord } from './outbox.js'
import type { LocalOutcome } from './job-outcome.js'

/**
 * Device events as outbox records: what the agent's own events (emitEvent,
 * a local job's end) look like on the wire, shaped so that they always fit a
 * batch and the hub never refuses them.
 */

export type EventLevel = (typeof EVENT_LEVELS)[number]

/** An event's JSON may not exceed this, so it always fits one batch under the payload cap. */
export const MAX_EVENT_BYTES = 16 * 1024

/**
 * A device event as an outbox record. Data the hub would refuse is replaced by
 * a note, so the event still fits a batch: oversize data, or data nested past
 * LIMITS.maxJsonDepth (the hub dead-letters that, M19b, and a refused batch
 * would block the outbox behind it).
 */
export function eventRecord(ts: number, kind: string, level: EventLevel, message: string, data?: Record<string, unknown>, unsyncedSuffix = ''): OutboxRecord {
  const text = message.length > LIMITS.maxEventMessageChars ? message.slice(0, LIMITS.maxEventMessageChars) : message
  if (data !== undefined && nestsDeeperThan(data, LIMITS.maxJsonDepth)) data = { truncated: true, deeperThan: LIMITS.maxJsonDepth }
  let body = eventBody(ts, kind, level, text, data)
  if (Buffer.byteLength(body) > MAX_EVENT_BYTES) {
    // Keep the event, lose the detail: an oversize payload would be refused by the broker and block the outbox.
    body = eventBody(ts, kind, level, text, { truncated: true, dataBytes: Buffer.byteLength(body) })
  }
  // The HubClock's note for a record taken before the hub's time was known; stripped before it is sent.
  if (unsyncedSuffix !== '') body = body.slice(0, -1) + unsyncedSuffix + '}'
  return { kind: 'event', ts, body }
}

/** The `job.local` event that reports a local job's end (its result is cut before the whole event is). */
export function localOutcomeRecord(o: LocalOutcome, unsyncedSuffix: string): OutboxRecord {
  const level: EventLevel = o.outcome === 'succeeded' ? 'info' : 'error'
  const message = `local schedule ${o.schedule}: ${o.task} ${o.outcome}`
  const data: Record<string, unknown> = { schedule: o.schedule, task: o.task, outcome: o.outcome }
  if (o.error !== undefined) data.error = o.error
  else if (o.result !== undefined) data.result = o.result
  if (o.startedAt !== undefined) data.startedAt = o.startedAt
  data.finishedAt = o.finishedAt
  if (data.result !== undefined && Buffer.byteLength(JSON.stringify(data)) > MAX_EVENT_BYTES - 1024) {
    data.result = { truncated: true, bytes: Buffer.byteLength(JSON.stringify(data.result)) }
  }
  return eventRecord(o.finishedAt, 'job.local', level, message, data, unsyncedSuffix)
}
