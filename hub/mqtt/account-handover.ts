import { createHash } from 'node:crypto'
import type { Principal } from '../../broker/types.js'
import type { Logger } from '../../common/logger.js'
import type { DynsecAccounts } from './dynsec.js'

/**
 * Moving a fleet from a hub with its own broker onto an external Mosquitto
 * (docs/scale-out.md, "Moving over"): the hub keeps only a SHA-256 of each
 * token, and Mosquitto's dynamic-security plugin takes passwords in clear,
 * so the accounts there can only be made from the tokens themselves. A hub
 * started with `handoverBroker` makes them as its devices and observers
 * connect: each CONNECT the embedded broker accepts gives the token that
 * just proved right, and the account (with the same ACL the hub gives any
 * device there) is made or updated on the new broker with it. Nothing is
 * kept: the token leaves memory once the account is made.
 *
 * One account at a time (Mosquitto 2.0 rewrites its whole file for each
 * change); a principal is handed over once per token, and again after a
 * failure or a new token. A device or observer removed here, or given a new
 * token, loses its account there at once (`revoke`): an old token must not
 * keep working on the new broker. The broker's own checks are untouched: the
 * CONNECT goes on whatever the handover does.
 */

/** An account to make with `token`, or (token undefined) to delete: the principal was removed, or its token replaced, here. */
interface Pending { readonly principal: Principal; readonly token: string | undefined; readonly key: string; readonly fingerprint: string }

export interface HandoverStats {
  /** Accounts made or updated on the new broker by this process. */
  readonly handedOver: number
  /** Accounts removed there because their principal was removed, or given a new token, here. */
  readonly revoked: number
  readonly failed: number
  readonly queued: number
}

const keyOf = (p: Principal): string | undefined => (p.kind === 'device' ? `d:${p.id}` : p.kind === 'observer' ? `o:${p.name}` : undefined)

/** How long a failed account write waits before it is tried again (the new broker away, a timeout). */
const RETRY_MS = 5000

/**
 * `connect` reaches the new broker; until it has (it is tried again every
 * RETRY_MS: the fleet's hub must not depend on its next broker being up),
 * what CONNECTs offer waits in the queue.
 */
export function createAccountHandover(connect: () => Promise<DynsecAccounts>, logger: Logger) {
  const log = logger.child({ component: 'handover' })
  /** Principal → fingerprint of the token its account was made with. */
  const done = new Map<string, string>()
  const queue = new Map<string, Pending>()
  let inFlight: Pending | undefined
  let accounts: DynsecAccounts | undefined
  let running: Promise<void> | undefined
  const retries = new Set<NodeJS.Timeout>()
  let closed = false
  let handedOver = 0
  let revoked = 0
  let failed = 0

  function later(fn: () => void): void {
    const t = setTimeout(() => { retries.delete(t); if (!closed) fn() }, RETRY_MS)
    t.unref()
    retries.add(t)
  }

  const kick = () => { running ??= drain().finally(() => { running = undefined }) }

  async function drain(): Promise<void> {
    if (accounts === undefined) {
      try {
        accounts = await connect()
        log.info('connected to the new broker: handing accounts over as devices and observers connect')
      } catch (err) {
        log.warn({ err }, 'cannot reach the new broker to hand accounts over; trying again')
        later(kick)
        return
      }
    }
    while (!closed && queue.size > 0) {
      const [key, item] = queue.entries().next().value as [string, Pending]
      queue.delete(key)
      inFlight = item
      try {
        if (item.token === undefined) {
          if (item.principal.kind === 'device') await accounts.deviceRemoved(item.principal.id)
          else if (item.principal.kind === 'observer') await accounts.observerRemoved(item.principal.name)
          revoked++
          log.info({ who: key.slice(2), kind: item.principal.kind }, 'account removed from the new broker (removed or given a new token here)')
          continue
        }
        if (item.principal.kind === 'device') await accounts.deviceAdded(item.principal.id, item.token)
        else if (item.principal.kind === 'observer') await accounts.observerAdded(item.principal.name, item.token)
        done.set(key, item.fingerprint)
        handedOver++
        log.info({ who: key.slice(2), kind: item.principal.kind }, 'account handed over to the new broker')
      } catch (err) {
        failed++
        // A name the broker has for someone else (the hubs' own account, an account rollcall did not make): never ours to change.
        if (/hub's own account|rollcall did not make/.test((err as Error).message)) {
          done.set(key, item.fingerprint)
          log.error({ err, who: key.slice(2) }, 'the new broker has an account of this name that is not rollcall\'s: not handed over; rename one of them')
          continue
        }
        // Tried again shortly, unless something newer for the principal came meanwhile. A removal not done yet is said loudly: the old token still works there.
        if (item.token === undefined) log.error({ err, who: key.slice(2) }, 'could not remove the account from the new broker yet: its old token still works there; trying again')
        else log.warn({ err, who: key.slice(2) }, 'could not hand the account over to the new broker; trying again')
        later(() => {
          if (queue.has(key)) return
          queue.set(key, item)
          kick()
        })
      } finally {
        inFlight = undefined
      }
    }
  }

  return {
    /** A CONNECT the embedded broker accepted with `password`: its account goes to the new broker, unless it went with this token already. */
    offer(principal: Principal, password: Buffer): void {
      const key = keyOf(principal)
      if (key === undefined || closed) return
      const fingerprint = createHash('sha256').update(password).digest('hex')
      if (done.get(key) === fingerprint || queue.get(key)?.fingerprint === fingerprint || (inFlight?.key === key && inFlight.fingerprint === fingerprint)) return
      queue.set(key, { principal, token: password.toString('utf8'), key, fingerprint })
      kick()
    },
    /** The principal was removed here, or given a new token: its account there goes (made again when it connects with a token that works here). */
    revoke(principal: Principal): void {
      const key = keyOf(principal)
      if (key === undefined || closed) return
      done.delete(key)
      queue.set(key, { principal, token: undefined, key, fingerprint: '' })
      kick()
    },
    stats: (): HandoverStats => ({ handedOver, revoked, failed, queued: queue.size }),
    /** Connects to the new broker now, rather than at the first CONNECT. */
    start: kick,
    async close(): Promise<void> {
      closed = true
      queue.clear()
      for (const t of retries) clearTimeout(t)
      retries.clear()
      await running
    },
  }
}

export type AccountHandover = ReturnType<typeof createAccountHandover>
