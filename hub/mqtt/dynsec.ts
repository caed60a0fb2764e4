import { randomBytes } from 'node:crypto'
import type { Logger } from '../../common/logger.js'
import { RollcallError } from '../../common/errors.js'
import { TOPIC_KINDS, deviceTopic, type TopicKind } from '../../protocol/topics.js'
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

interface Acl { readonly acltype: string; readonly topic: string; readonly allow: boolean }
type Command = Record<string, unknown> & { readonly command: string }
interface Reply { readonly command: string; readonly error?: string; readonly data?: unknown }

const kinds = (direction: 'up' | 'down') => (Object.keys(TOPIC_KINDS) as TopicKind[]).filter((k) => TOPIC_KINDS[k] === direction)

export function deviceAcls(id: string): Acl[] {
  return [
    ...kinds('up').map((k) => ({ acltype: 'publishClientSend', topic: deviceTopic(id, k), allow: true })),
    ...kinds('down').flatMap((k) => [
      { acltype: 'subscribeLiteral', topic: deviceTopic(id, k), allow: true },
      { acltype: 'publishClientReceive', topic: deviceTopic(id, k), allow: true },
    ]),
  ]
}

const OBSERVED = ['devices/+/telemetry', 'devices/+/state', 'devices/+/events', 'hub/rules/+/events']
const OBSERVER_ACLS: Acl[] = OBSERVED.flatMap((topic) => [
  { acltype: 'subscribePattern', topic, allow: true },
  { acltype: 'publishClientReceive', topic, allow: true },
])

function hubAcls(shareGroup: string): Acl[] {
  return ['devices/#', 'hub/#'].flatMap((topic) => [
    { acltype: 'publishClientSend', topic, allow: true },
    { acltype: 'publishClientReceive', topic, allow: true },
    { acltype: 'subscribePattern', topic, allow: true },
    { acltype: 'subscribePattern', topic: `$share/${shareGroup}/${topic}`, allow: true },
  ])
}

export interface DynsecOptions {
  /** The hub's own username on the broker: it is given the rollcall-hub role. */
  readonly hubUsername: string | undefined
  readonly shareGroup: string
  /** How long a command may wait for the plugin's answer. */
  readonly timeoutMs: number
  readonly logger: Logger
}

/** Errors that mean "already as asked": the hub repeats its set-up at every start. */
const ALREADY = new Set(['Role already exists', 'ACL with this topic already exists', 'Client not found', 'Role not found'])

export async function createDynsecAccounts(broker: Broker, options: DynsecOptions): Promise<BrokerAccounts & { prepare(): Promise<void> }> {
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

  /** Sends the commands in one message (the plugin runs them in order) and waits for each reply. */
  async function run(commands: readonly Command[], timeoutMs = options.timeoutMs): Promise<Reply[]> {
    const ids = commands.map(() => `${prefix}-${++next}`)
    const replies = ids.map((id) => new Promise<Reply>((resolve) => { waiting.set(id, resolve) }))
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        for (const id of ids) waiting.delete(id)
        reject(new RollcallError('UNAVAILABLE', `the broker did not answer ${commands.map((c) => c.command).join(', ')} within ${timeoutMs} ms: is the dynamic-security plugin loaded, and may the hub's account use ${CONTROL_TOPIC} (docs/scale-out.md)?`))
      }, timeoutMs)
    })
    try {
      await broker.publish(CONTROL_TOPIC, Buffer.from(JSON.stringify({ commands: commands.map((c, i) => ({ ...c, correlationData: ids[i] })) })), { qos: 1 })
      return await Promise.race([Promise.all(replies), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Runs the commands; an error other than "already so" fails with the plugin's words. */
  async function apply(what: string, commands: readonly Command[]): Promise<Reply[]> {
    const replies = await run(commands)
    const failed = replies.find((r) => r.error !== undefined && !ALREADY.has(r.error))
    if (failed !== undefined) throw new RollcallError('UNAVAILABLE', `the broker refused to ${what}: ${failed.command}: ${failed.error}`)
    return replies
  }

  const roleCommands = (rolename: string, acls: readonly Acl[]): Command[] => [
    { command: 'createRole', rolename },
    ...acls.map((a) => ({ command: 'addRoleACL', rolename, ...a })),
  ]

  async function ensureClient(what: string, username: string, password: string, clientid: string | undefined, rolename: string): Promise<void> {
    const [created] = await run([{ command: 'createClient', username, password, ...(clientid !== undefined ? { clientid } : {}), roles: [{ rolename }] }])
    if (created?.error === undefined) return
    if (created.error !== 'Client already exists') throw new RollcallError('UNAVAILABLE', `the broker refused to ${what}: createClient: ${created.error}`)
    // A rotated token, or an account left from an earlier run: set all of it anew (its connections are closed).
    await apply(what, [{ command: 'modifyClient', username, password, ...(clientid !== undefined ? { clientid } : {}), roles: [{ rolename }] }])
  }

  /** Whether the hub's account has its role; undefined when the broker does not know the account (not a dynamic-security client). */
  async function hasHubRole(username: string): Promise<boolean> {
    const [reply] = await run([{ command: 'getClient', username }], Math.min(2000, options.timeoutMs))
    if (reply?.error !== undefined) {
      log.warn({ username, error: reply.error }, `the hub's broker account is not a dynamic-security client: give it the ${HUB_ROLE} role's rights by hand (docs/scale-out.md)`)
      return true
    }
    const roles = (reply?.data as { client?: { roles?: Array<{ rolename?: string }> } } | undefined)?.client?.roles ?? []
    return roles.some((r) => r.rolename === HUB_ROLE)
  }

  async function deviceAdded(id: string, token: string): Promise<void> {
    await apply(`add device ${id}`, roleCommands(deviceRole(id), deviceAcls(id)))
    await ensureClient(`add device ${id}`, id, token, id, deviceRole(id))
  }

  return {
    /** Makes the shared roles and gives the hub its own; repeated at every start. */
    async prepare(): Promise<void> {
      await apply('set up rollcall\'s roles', [...roleCommands(HUB_ROLE, hubAcls(options.shareGroup)), ...roleCommands(OBSERVER_ROLE, OBSERVER_ACLS)])
      const username = options.hubUsername
      if (username === undefined) return
      if (await hasHubRole(username)) return
      // Mosquitto closes the connections of a client whose roles change, the hub's own included, and
      // its reply may go out after that: the hub reconnects (its session waits) and checks again.
      await broker.publish(CONTROL_TOPIC, Buffer.from(JSON.stringify({ commands: [{ command: 'addClientRole', username, rolename: HUB_ROLE }] })), { qos: 1 })
      const deadline = Date.now() + options.timeoutMs
      while (Date.now() < deadline) {
        if (await hasHubRole(username).catch(() => false)) {
          log.info({ username, role: HUB_ROLE }, 'gave the hub\'s broker account its role')
          return
        }
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      log.warn({ username }, `could not give the hub's account the ${HUB_ROLE} role; give it by hand (docs/scale-out.md)`)
    },
    deviceAdded,
    // Also makes an account missing on the broker (a device registered before the hub moved to it).
    deviceTokenRotated: deviceAdded,
    async deviceRemoved(id) {
      await apply(`remove device ${id}`, [{ command: 'deleteClient', username: id }, { command: 'deleteRole', rolename: deviceRole(id) }])
    },
    async observerAdded(name, token) {
      await ensureClient(`add observer ${name}`, observerUsername(name), token, undefined, OBSERVER_ROLE)
    },
    async observerRemoved(name) {
      await apply(`remove observer ${name}`, [{ command: 'deleteClient', username: observerUsername(name) }])
    },
  }
}
