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

export function createAccountHandover(accounts: DynsecAccounts, logger: Logger) {
  const log = logger.child({ component: 'handover' })
  /** Principal → fingerprint of the token its account was made with. */
  const done = new Map<string, string>()
  const queue = new Map<string, Pending>()
  let running: Promise<void> | undefined
  let closed = false
  let handedOver = 0
  let revoked = 0
  let failed = 0

  async function drain(): Promise<void> {
    while (!closed && queue.size > 0) {
      const [key, item] = queue.entries().next().value as [string, Pending]
      queue.delete(key)
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
        // An account not made is tried again at its next CONNECT; one not removed is said loudly: its old token still works there.
        if (item.token === undefined) log.error({ err, who: key.slice(2) }, 'could not remove the account from the new broker: its old token still works there; remove it on the broker')
        else log.warn({ err, who: key.slice(2) }, 'could not hand the account over to the new broker; tried again at its next connect')
      }
    }
  }

  return {
    /** A CONNECT the embedded broker accepted with `password`: its account goes to the new broker, unless it went with this token already. */
    offer(principal: Principal, password: Buffer): void {
      const key = keyOf(principal)
      if (key === undefined || closed) return
      const fingerprint = createHash('sha256').update(password).digest('hex')
      if (done.get(key) === fingerprint || queue.get(key)?.fingerprint === fingerprint) return
      queue.set(key, { principal, token: password.toString('utf8'), key, fingerprint })
      running ??= drain().finally(() => { running = undefined })
    },
    /** The principal was removed here, or given a new token: its account there goes (made again when it connects with a token that works here). */
    revoke(principal: Principal): void {
      const key = keyOf(principal)
      if (key === undefined || closed) return
      done.delete(key)
      queue.set(key, { principal, token: undefined, key, fingerprint: '' })
      running ??= drain().finally(() => { running = undefined })
    },
    stats: (): HandoverStats => ({ handedOver, revoked, failed, queued: queue.size }),
    async close(): Promise<void> {
      closed = true
      queue.clear()
      await running
    },
  }
}

export type AccountHandover = ReturnType<typeof createAccountHandover>
