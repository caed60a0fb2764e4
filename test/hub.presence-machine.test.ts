import { describe, expect, it } from 'vitest'
import { initialPresence, isReachable, nextPresence, type PresenceEvent, type PresenceState } from '../hub/presence/machine.js'

/** Runs events from a fresh state; returns the final state and the history of status changes. */
function run(events: PresenceEvent[]): { state: PresenceState; history: string[] } {
  let state = initialPresence(0)
  const history: string[] = []
  for (const e of events) {
    const t = nextPresence(state, e)
    state = t.state
    if (t.change) history.push(`${t.change.status}:${t.change.reason}`)
  }
  return { state, history }
}

const c = (connId: number, at = 1): PresenceEvent => ({ type: 'connected', connId, at })
const b = (epoch: number, at = 2, storeId = 'store-a'): PresenceEvent => ({ type: 'birth', epoch, storeId, at })
const d = (epoch: number, at = 3, storeId?: string): PresenceEvent => ({ type: 'death', epoch, storeId, at })
const x = (connId: number, reason = 'connection-lost', at = 4): PresenceEvent => ({ type: 'disconnected', connId, reason, at })
/** A birth and a death as ingress makes them on an external broker. */
const eb = (connId: number, epoch: number): PresenceEvent => ({ type: 'birth', epoch, storeId: 'store-a', at: 2, connId })
const ed = (epoch: number): PresenceEvent => ({ type: 'death', epoch, storeId: 'store-a', at: 3, reason: 'death' })

describe('presence state machine', () => {
  it.each<[string, PresenceEvent[], string[], boolean]>([
    ['connect alone is not online', [c(1)], [], false],
    ['connect + birth is online and reachable', [c(1), b(1)], ['online:birth'], true],
    ['clean shutdown: death while connected, then disconnect', [c(1), b(1), d(1), x(1, 'client-disconnect')], ['online:birth', 'offline:shutdown'], false],
    ['crash: disconnect then the Will', [c(1), b(1), x(1), d(1)], ['online:birth', 'offline:connection-lost'], false],
    ['keepalive timeout', [c(1), b(1), x(1, 'keepalive-timeout')], ['online:birth', 'offline:keepalive-timeout'], false],
    ['takeover: old disconnect, new connect, late Will of the old epoch is ignored',
      [c(1), b(1), x(1, 'taken-over'), c(2), b(2), d(1)], ['online:birth', 'offline:taken-over', 'online:birth'], true],
    ['takeover seen out of order: the old connection\'s disconnect arrives after the new birth',
      [c(1), b(1), c(2), b(2), x(1, 'taken-over')], ['online:birth', 'offline:reconnected', 'online:birth'], true],
    ['a stale birth of an older epoch is ignored', [c(1), b(5), x(1), c(2), b(4)], ['online:birth', 'offline:connection-lost'], false],
    ['birth without a connection is ignored', [b(1)], [], false],
    ['a re-flashed device (new store) starts again at epoch 1 and is accepted',
      [c(1), b(57), x(1), c(2), b(1, 5, 'store-b')], ['online:birth', 'offline:connection-lost', 'online:birth'], true],
    ['after a re-flash, a late Will of the old store (higher epoch) is ignored',
      [c(1), b(57), x(1), c(2), b(1, 5, 'store-b'), d(57, 6, 'store-a')], ['online:birth', 'offline:connection-lost', 'online:birth'], true],
    ['a death of the current store and epoch takes it offline', [c(1), b(3), d(3, 4, 'store-a')], ['online:birth', 'offline:shutdown'], false],
    ['after a re-flash, epochs of the new store are compared among themselves',
      [c(1), b(57), x(1), c(2), b(3, 5, 'store-b'), x(2), c(3), b(2, 6, 'store-b')], ['online:birth', 'offline:connection-lost', 'online:birth', 'offline:connection-lost'], false],
    ['a death of a newer epoch than the birth takes the device offline', [c(1), b(1), d(2)], ['online:birth', 'offline:shutdown'], false],
    ['hub restart marks offline', [c(1), b(1), { type: 'hubStart', at: 9 }], ['online:birth', 'offline:hub-restart'], false],
    // On an external broker (issue #18) a birth brings its connection with it and a death carries its reason.
    ['external broker: a birth alone is online and reachable', [eb(1, 1)], ['online:birth'], true],
    ['external broker: a death ends the connection with its reason', [eb(1, 1), ed(1)], ['online:birth', 'offline:death'], false],
    ['external broker: after the hub restarts, the retained birth brings the device back', [eb(1, 1), { type: 'hubStart', at: 9 }, eb(2, 1)], ['online:birth', 'offline:hub-restart', 'online:birth'], true],
    ['external broker: a late Will of an older epoch cannot take a live device offline', [eb(1, 1), eb(2, 2), ed(1)], ['online:birth'], true],
    ['external broker: a stale birth of an older epoch changes nothing', [eb(1, 5), ed(5), eb(2, 4)], ['online:birth', 'offline:death'], false],
    ['external broker: a new birth after a death is online again', [eb(1, 1), ed(1), eb(2, 2)], ['online:birth', 'offline:death', 'online:birth'], true],
  ])('%s', (_name, events, history, reachable) => {
    const r = run(events)
    expect(r.history).toEqual(history)
    expect(isReachable(r.state)).toBe(reachable)
  })

  it('records the time of each change', () => {
    const t = nextPresence(nextPresence(initialPresence(0), c(7, 100)).state, b(1, 150))
    expect(t.change).toEqual({ status: 'online', reason: 'birth', at: 150, epoch: 1 })
    expect(t.state.since).toBe(150)
  })
})
