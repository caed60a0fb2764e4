import { randomBytes } from 'node:crypto'
import type { Clock, ClockTimer } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import { RollcallError } from '../../common/errors.js'
import { DEVICES_PREFIX, TOPIC_KINDS, deviceTopic, type TopicKind } from '../../protocol/topics.js'
import type { Broker } from '../../broker/types.js'

/**
 * Device and observer accounts on an external Mosquitto 2, kept by its
 * dynamic-security plugin (issue #18): the hub adds, re-keys and removes them
 * through `$CONTROL/dynamic-security/v1` as the registry changes, so the broker
 * enforces the embedded broker's default-deny ACL (broker/acl.ts) itself.
 *
 * - Each device has a client (username and client id = its id, password = its
 *   token) and a role of its own: publish on its up-topics, subscribe to
 *   exactly its down-topics. Mosquitto 2.0's dynamic security has no `%c`
 *   patterns, so the topics are spelled out per device.
 * - Observers (`observer:NAME`) share one role: subscribe to the fleet's
 *   telemetry, state and events and to the rules' events; publish nothing.
 * - The hub's own account gets the `rollcall-hub` role: everything under
 *   `devices/` and `hub/`, shared or not.
 * - Changing or deleting a client makes Mosquitto close its connections: that
 *   is how a rotated or removed device is cut off.
 *
 * What dynamic security cannot say: "retain only on the device's own state
 * topic" (the embedded broker refuses other retained publishes). A device
 * can retain its own telemetry here; the hub reads it as any other batch.
 */

export const CONTROL_TOPIC = '$CONTROL/dynamic-security/v1'
export const RESPONSE_TOPIC = `${CONTROL_TOPIC}/response`
export const HUB_ROLE = 'rollcall-hub'
export const OBSERVER_ROLE = 'rollcall-observer'
export const deviceRole = (id: string): string => `rollcall-device-${id}`
export const observerUsername = (name: string): string => `observer:${name}`

/** What an external broker must do when the registry changes; the embedded broker reads the registry itself. */
export interface BrokerAccounts {
  deviceAdded(id: string, token: string): Promise<void>
  deviceTokenRotated(id: string, token: string): Promise<void>
  deviceRemoved(id: string): Promise<void>
  observerAdded(name: string, token: string): Promise<void>
  observerRemoved(name: string): Promise<void>
}

interface Acl { readonly acltype: string; readonly topic: string; readonly allow: boolean; readonly priority?: number }
type Command = Record<string, unknown> & { readonly command: string }
interface Reply { readonly command: string; readonly error?: string; readonly data?: unknown }

const kinds = (direction: 'up' | 'down') => (Object.keys(TOPIC_KINDS) as TopicKind[]).filter((k) => TOPIC_KINDS[k] === direction)

export function deviceAcls(id: string): Acl[] {
  return [
    ...kinds('up').map((k) => ({ acltype: 'publishClientSend', topic: deviceTopic(id, k), allow: true })),
    ...kinds('down').map((k) => ({ acltype: 'subscribeLiteral', topic: deviceTopic(id, k), allow: true })),
    // What it may subscribe to is what it receives: one allowance for all of it keeps the plugin's file (rewritten per change) small.
    { acltype: 'publishClientReceive', topic: `${DEVICES_PREFIX}${id}/#`, allow: true },
    ...DENY_REST,
  ]
}

/** Below the allowances (dynamic security checks higher priorities first): whatever the broker's default access, the rest is refused. */
const DENY_REST: Acl[] = ['publishClientSend', 'publishClientReceive', 'subscribePattern'].map((acltype) => ({ acltype, topic: '#', allow: false, priority: -1 }))

const OBSERVED = ['devices/+/telemetry', 'devices/+/state', 'devices/+/events', 'hub/rules/+/events']
const OBSERVER_ACLS: Acl[] = [
  ...OBSERVED.flatMap((topic) => [
    { acltype: 'subscribePattern', topic, allow: true },
    { acltype: 'publishClientReceive', topic, allow: true },
  ]),
  ...DENY_REST,
]

function hubAcls(shareGroup: string): Acl[] {
  return ['devices/#', 'hub/#'].flatMap((topic) => [
    { acltype: 'publishClientSend', topic, allow: true },
    { acltype: 'publishClientReceive', topic, allow: true },
    { acltype: 'subscribePattern', topic, allow: true },
    { acltype: 'subscribePattern', topic: `$share/${shareGroup}/${topic}`, allow: true },
  ])
}

/** The `textname` of every account the hub makes: it changes and deletes only those. */
export const OWNED_MARK = 'rollcall'

export interface DynsecOptions {
  /** The hub's own username on the broker: it is given the rollcall-hub role. */
  readonly hubUsername: string | undefined
  /** The hub's client id there: no device may take it (its session would be the device's). */
  readonly hubClientId: string
  readonly shareGroup: string
  /** How long a command may wait for the plugin's answer. */
  readonly timeoutMs: number
  readonly clock: Clock
  readonly logger: Logger
}

export interface DynsecAccounts extends BrokerAccounts {
  /**
   * Makes the shared roles and gives the hub's account its own, at every
   * start; fails when the hub's account cannot be given its role (the hub
   * could not publish its acks).
   */
  prepare(): Promise<void>
}

interface ClientData { readonly textname?: string; readonly roles?: ReadonlyArray<{ readonly rolename?: string }> }

export async function createDynsecAccounts(broker: Broker, options: DynsecOptions): Promise<DynsecAccounts> {
  const { clock } = options
  const log = options.logger.child({ component: 'dynsec' })
  const prefix = randomBytes(6).toString('hex')
  let next = 0
  const waiting = new Map<string, (reply: Reply) => void>()

  await broker.subscribe(RESPONSE_TOPIC, (m) => {
    let body: unknown
    try {
      body = JSON.parse(m.payload.toString('utf8'))
    } catch {
      return
    }
    const responses = (body as { responses?: unknown }).responses
    if (!Array.isArray(responses)) return
    for (const r of responses as Array<Reply & { correlationData?: string }>) {
      if (typeof r.correlationData !== 'string') continue
      const done = waiting.get(r.correlationData)
      if (done === undefined) continue
      waiting.delete(r.correlationData)
      done(r)
    }
  })

  /**
   * Sends the commands in one message (the plugin runs them in order) and
   * waits for each reply, at most `timeoutMs` from now: a broker the hub has
   * lost fails the call then, whatever MQTT.js does with the publish.
   */
  async function run(commands: readonly Command[], timeoutMs = options.timeoutMs): Promise<Reply[]> {
    const ids = commands.map(() => `${prefix}-${++next}`)
    const replies = ids.map((id) => new Promise<Reply>((resolve) => { waiting.set(id, resolve) }))
    let timer: ClockTimer | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = clock.setTimeout(() => {
        reject(new RollcallError('UNAVAILABLE', `the broker did not answer ${commands.map((c) => c.command).join(', ')} within ${timeoutMs} ms: is it reachable, is the dynamic-security plugin loaded, and may the hub's account use ${CONTROL_TOPIC} (docs/scale-out.md)?`))
      }, timeoutMs)
    })
    const payload = Buffer.from(JSON.stringify({ commands: commands.map((c, i) => ({ ...c, correlationData: ids[i] })) }))
    const sent = broker.publish(CONTROL_TOPIC, payload, { qos: 1 }).catch((err: unknown) => {
      throw new RollcallError('UNAVAILABLE', `could not send ${commands.map((c) => c.command).join(', ')} to the broker: ${(err as Error).message}`)
    })
    try {
      return await Promise.race([sent.then(() => Promise.all(replies)), timeout])
    } finally {
      clock.clearTimer(timer)
      for (const id of ids) waiting.delete(id)
    }
  }

  /** Runs one command; its error fails the call with the plugin's words, unless it is one of `tolerated` ("already so"). */
  async function one(what: string, command: Command, tolerated: readonly string[] = []): Promise<Reply> {
    const [reply] = await run([command])
    if (reply === undefined) throw new RollcallError('UNAVAILABLE', `the broker did not answer ${command.command}`)
    if (reply.error !== undefined && !tolerated.includes(reply.error)) throw new RollcallError('UNAVAILABLE', `the broker refused to ${what}: ${command.command}: ${reply.error}`)
    return reply
  }

  async function getClient(username: string, timeoutMs?: number): Promise<ClientData | undefined> {
    const [reply] = await run([{ command: 'getClient', username }], timeoutMs)
    if (reply?.error !== undefined) return undefined
    return (reply?.data as { client?: ClientData } | undefined)?.client
  }

  /** An account of the same name the hub did not make is not the hub's to change or delete. */
  function refuseForeign(what: string, username: string, client: ClientData | undefined): void {
    if (client !== undefined && client.textname !== OWNED_MARK) {
      throw new RollcallError('UNAVAILABLE', `cannot ${what}: the broker has an account "${username}" that rollcall did not make; rename or remove it on the broker first`)
    }
  }

  /**
   * A role with its ACLs is one command: Mosquitto 2.0 rewrites its whole
   * config file after every command, so a device costs two writes (role and
   * client), not one per ACL.
   */
  const createRole = (rolename: string, acls: readonly Acl[]): Command => ({ command: 'createRole', rolename, textname: OWNED_MARK, acls })

  /** A role that exists already (an earlier run) has its ACLs set to these. */
  async function ensureRole(what: string, rolename: string, acls: readonly Acl[], created?: Reply): Promise<void> {
    const reply = created ?? await one(what, createRole(rolename, acls), ['Role already exists'])
    if (reply.error === undefined) return
    if (reply.error !== 'Role already exists') throw new RollcallError('UNAVAILABLE', `the broker refused to ${what}: createRole: ${reply.error}`)
    await one(what, { command: 'modifyRole', rolename, acls })
  }

  /**
   * Makes the account (with its role, when `role` is given: both in one message,
   * one round trip for a new device), or sets an existing one of the hub's anew
   * (a new token closes its connections).
   */
  async function ensureClient(what: string, username: string, password: string, clientid: string | undefined, rolename: string, role?: readonly Acl[]): Promise<void> {
    if (username === options.hubUsername || clientid === options.hubClientId) throw new RollcallError('UNAVAILABLE', `cannot ${what}: "${username}" is the hub's own account or client id on the broker`)
    const fields = { username, password, textname: OWNED_MARK, ...(clientid !== undefined ? { clientid } : {}), roles: [{ rolename }] }
    const replies = await run([...(role !== undefined ? [createRole(rolename, role)] : []), { command: 'createClient', ...fields }])
    if (role !== undefined) await ensureRole(what, rolename, role, replies[0])
    const created = replies.at(-1)
    if (created === undefined) throw new RollcallError('UNAVAILABLE', 'the broker did not answer createClient')
    if (created.error === undefined) return
    if (created.error !== 'Client already exists') throw new RollcallError('UNAVAILABLE', `the broker refused to ${what}: createClient: ${created.error}`)
    refuseForeign(what, username, await getClient(username))
    await one(what, { command: 'modifyClient', ...fields })
  }

  async function removeClient(what: string, username: string): Promise<void> {
    const client = await getClient(username)
    if (client === undefined) return
    refuseForeign(what, username, client)
    await one(what, { command: 'deleteClient', username }, ['Client not found'])
  }

  async function hubHasRole(username: string, timeoutMs?: number): Promise<boolean> {
    return (await getClient(username, timeoutMs))?.roles?.some((r) => r.rolename === HUB_ROLE) === true
  }

  async function deviceAdded(id: string, token: string): Promise<void> {
    await ensureClient(`add device ${id}`, id, token, id, deviceRole(id), deviceAcls(id))
  }

  return {
    async prepare(): Promise<void> {
      await ensureRole('set up rollcall\'s roles', HUB_ROLE, hubAcls(options.shareGroup))
      await ensureRole('set up rollcall\'s roles', OBSERVER_ROLE, OBSERVER_ACLS)
      const username = options.hubUsername
      if (username === undefined) return
      const hub = await getClient(username)
      if (hub === undefined) {
        log.warn({ username }, `the hub's broker account is not a dynamic-security client: it needs the rights of the ${HUB_ROLE} role, given by hand (docs/scale-out.md)`)
        return
      }
      if (hub.roles?.some((r) => r.rolename === HUB_ROLE) === true) return
      // Mosquitto closes the connections of a client whose roles change, the hub's own
      // included, and its reply may go out after that: the hub reconnects and checks again.
      await broker.publish(CONTROL_TOPIC, Buffer.from(JSON.stringify({ commands: [{ command: 'addClientRole', username, rolename: HUB_ROLE }] })), { qos: 1 })
        .catch(() => undefined)
      const deadline = clock.now() + options.timeoutMs
      while (clock.now() < deadline) {
        if (await hubHasRole(username, 2000).catch(() => false)) {
          log.info({ username, role: HUB_ROLE }, 'gave the hub\'s broker account its role')
          return
        }
        await new Promise<void>((resolve) => { clock.setTimeout(resolve, 200) })
      }
      throw new RollcallError('UNAVAILABLE', `could not give the hub's broker account "${username}" the ${HUB_ROLE} role within ${options.timeoutMs} ms; give it by hand (docs/scale-out.md)`)
    },
    deviceAdded,
    // Also makes an account missing on the broker (a device registered before the hub moved to it).
    deviceTokenRotated: deviceAdded,
    async deviceRemoved(id) {
      await removeClient(`remove device ${id}`, id)
      await one(`remove device ${id}`, { command: 'deleteRole', rolename: deviceRole(id) }, ['Role not found'])
    },
    async observerAdded(name, token) {
      await ensureClient(`add observer ${name}`, observerUsername(name), token, undefined, OBSERVER_ROLE)
    },
    async observerRemoved(name) {
      await removeClient(`remove observer ${name}`, observerUsername(name))
    },
  }
}
