import { RollcallError } from '../../common/errors.js'
import type { Rules, RulesStats } from './rules.js'

/**
 * The rules of a hub whose state is in PostgreSQL, until they run there
 * (issue #18): the rules keep their conditions' states, firings and pending
 * actions in the hub's SQLite file and react inside its transactions. Every
 * call that would add, change or show a rule is refused with NOT_SUPPORTED
 * and says so; the lists are empty, so the dashboard and /metrics work.
 */
export function rulesNotSupported(why: string): Rules {
  const refuse = (): never => { throw new RollcallError('NOT_SUPPORTED', why) }
  const stats: RulesStats = {
    rules: 0, enabled: 0, evaluations: 0, fired: 0, errors: 0,
    suppressed: { stale: 0, cooldown: 0, rate: 0, paused: 0 },
    actions: { pending: 0, running: 0, done: 0, failed: 0 },
  }
  return {
    start: () => undefined,
    resume: () => Promise.resolve(),
    stop: () => undefined,
    watching: () => false,
    onSamples: () => undefined,
    onPresence: () => undefined,
    onJobsEnded: () => undefined,
    onEvents: () => undefined,
    add: () => Promise.reject(new RollcallError('NOT_SUPPORTED', why)),
    list: () => [],
    get: refuse,
    setEnabled: () => Promise.reject(new RollcallError('NOT_SUPPORTED', why)),
    remove: () => Promise.reject(new RollcallError('NOT_SUPPORTED', why)),
    firing: refuse,
    firingsOfDevice: () => [],
    stats: () => stats,
    deviceRemoved: () => undefined,
    prune: () => Promise.resolve(0),
    idle: () => Promise.resolve(),
    settled: () => Promise.resolve(),
  }
}
