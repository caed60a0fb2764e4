import { describe, expect, it } from 'vitest'
import { canPublish, canSubscribe } from '../broker/acl.js'
import type { Principal } from '../broker/types.js'

const devA: Principal = { kind: 'device', id: 'dev-a' }
const observer: Principal = { kind: 'observer', name: 'ops' }
const anon: Principal = { kind: 'anonymous' }

describe('canPublish', () => {
  it.each<[string, Principal, string, boolean, boolean]>([
    // device: own up-topics
    ['own state, retained (birth / Will)', devA, 'devices/dev-a/state', true, true],
    ['own state, not retained', devA, 'devices/dev-a/state', false, true],
    ['own telemetry', devA, 'devices/dev-a/telemetry', false, true],
    ['own events', devA, 'devices/dev-a/events', false, true],
    ['own cmd/res', devA, 'devices/dev-a/cmd/res', false, true],
    ['own jobs/pull', devA, 'devices/dev-a/jobs/pull', false, true],
    ['own jobs/update', devA, 'devices/dev-a/jobs/update', false, true],
    // device: own prefix, unknown kind passes for the hub to dead-letter
    ['own unknown kind', devA, 'devices/dev-a/nonsense', false, true],
    ['own known kind with extra level', devA, 'devices/dev-a/telemetry/extra', false, true],
    ['own empty kind', devA, 'devices/dev-a/', false, true],
    ['own unknown kind, retained', devA, 'devices/dev-a/nonsense', true, false],
    // device: retain only on state
    ['own telemetry, retained', devA, 'devices/dev-a/telemetry', true, false],
    ['own events, retained', devA, 'devices/dev-a/events', true, false],
    // device: own down-topics would spoof the hub
    ['own telemetry/ack', devA, 'devices/dev-a/telemetry/ack', false, false],
    ['own cmd/req', devA, 'devices/dev-a/cmd/req', false, false],
    ['own jobs/batch', devA, 'devices/dev-a/jobs/batch', false, false],
    // device: anything else
    ['other device telemetry', devA, 'devices/dev-b/telemetry', false, false],
    ['other device state', devA, 'devices/dev-b/state', true, false],
    ['prefix of its own id', devA, 'devices/dev-ab/telemetry', false, false],
    ['own prefix without slash', devA, 'devices/dev-a', false, false],
    ['devices root', devA, 'devices', false, false],
    ['$SYS', devA, '$SYS/broker/heartbeat', false, false],
    ['hub tree', devA, 'hub/anything', false, false],
    ['free topic', devA, 'chat', false, false],
    // observer: read-only
    ['observer on telemetry', observer, 'devices/dev-a/telemetry', false, false],
    ['observer on free topic', observer, 'chat', false, false],
    // anonymous: outside devices/, hub/, $
    ['anonymous free topic', anon, 'chat/room', false, true],
    ['anonymous topic starting with /', anon, '/x', false, true],
    ['anonymous "devicesx" is outside devices/', anon, 'devicesx/a', false, true],
    ['anonymous retained', anon, 'chat/room', true, false],
    ['anonymous devices/', anon, 'devices/dev-a/telemetry', false, false],
    ['anonymous devices root', anon, 'devices', false, false],
    ['anonymous hub/', anon, 'hub/x', false, false],
    ['anonymous $SYS', anon, '$SYS/x', false, false],
  ])('%s', (_name, principal, topic, retain, allowed) => {
    const verdict = canPublish(principal, topic, retain)
    expect(verdict.ok).toBe(allowed)
    if (!verdict.ok) expect(verdict.reason).toMatch(/\w/)
  })
})

describe('canSubscribe', () => {
  it.each<[string, Principal, string, boolean]>([
    // device: exactly its own down-topics
    ['own telemetry/ack', devA, 'devices/dev-a/telemetry/ack', true],
    ['own cmd/req', devA, 'devices/dev-a/cmd/req', true],
    ['own jobs/notify', devA, 'devices/dev-a/jobs/notify', true],
    ['own jobs/batch', devA, 'devices/dev-a/jobs/batch', true],
    ['own jobs/ack', devA, 'devices/dev-a/jobs/ack', true],
    ['own up-topic', devA, 'devices/dev-a/telemetry', false],
    ['own unknown kind', devA, 'devices/dev-a/nonsense', false],
    ['other device cmd/req', devA, 'devices/dev-b/cmd/req', false],
    ['own prefix wildcard', devA, 'devices/dev-a/#', false],
    ['single-level wildcard on own kind', devA, 'devices/dev-a/+', false],
    ['wildcard device', devA, 'devices/+/cmd/req', false],
    ['everything', devA, '#', false],
    ['$SYS', devA, '$SYS/#', false],
    ['free topic', devA, 'chat', false],
    // observer: devices/{+|id}/{telemetry|state|events}
    ['observer all telemetry', observer, 'devices/+/telemetry', true],
    ['observer all state', observer, 'devices/+/state', true],
    ['observer all events', observer, 'devices/+/events', true],
    ['observer one device telemetry', observer, 'devices/dev-a/telemetry', true],
    ['observer cmd/req', observer, 'devices/+/cmd/req', false],
    ['observer cmd/res', observer, 'devices/dev-a/cmd/res', false],
    ['observer jobs/update', observer, 'devices/+/jobs/update', false],
    ['observer device subtree', observer, 'devices/dev-a/#', false],
    ['observer all devices', observer, 'devices/#', false],
    ['observer # as kind', observer, 'devices/+/#', false],
    ['observer invalid id', observer, 'devices/DEV/telemetry', false],
    ['observer everything', observer, '#', false],
    ['observer $SYS', observer, '$SYS/#', false],
    ['observer free topic', observer, 'chat', false],
    // observer: what rules publish, hub/rules/{+|rule}/events
    ['observer all rule events', observer, 'hub/rules/+/events', true],
    ['observer one rule\'s events', observer, 'hub/rules/pump.vibration/events', true],
    ['observer rules subtree', observer, 'hub/rules/#', false],
    ['observer rule events of a bad name', observer, 'hub/rules/Pump!/events', false],
    ['observer other hub topics', observer, 'hub/+/events', false],
    // anonymous: filters that cannot match devices/, hub/ or $
    ['anonymous free filter', anon, 'chat/#', true],
    ['anonymous free filter with inner +', anon, 'chat/+/x', true],
    ['anonymous exact', anon, 'chat', true],
    ['anonymous #', anon, '#', false],
    ['anonymous +', anon, '+', false],
    ['anonymous +/telemetry', anon, '+/dev-a/telemetry', false],
    ['anonymous devices/#', anon, 'devices/#', false],
    ['anonymous devices exact', anon, 'devices/dev-a/telemetry', false],
    ['anonymous hub/#', anon, 'hub/#', false],
    ['anonymous $SYS/#', anon, '$SYS/#', false],
  ])('%s', (_name, principal, filter, allowed) => {
    const verdict = canSubscribe(principal, filter)
    expect(verdict.ok).toBe(allowed)
    if (!verdict.ok) expect(verdict.reason).toMatch(/\w/)
  })
})
