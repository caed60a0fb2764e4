import { RollcallError } from '../../common/errors.js'
import type { Registry } from './registry.js'
import { DEVICE_ID_RULE, isDeviceId } from '../../protocol/ids.js'

/**
 * Who a job is for, written as text in the CLI, the API and schedules:
 *
 *   device:ID            one device
 *   device:A,B,C         a list of devices
 *   group:G              every device in group G (when the job is created;
 *                        a continuous job also reaches devices that join later)
 *   all                  every registered device (likewise)
 */
export type JobTarget =
  | { readonly kind: 'devices'; readonly ids: readonly string[] }
  | { readonly kind: 'group'; readonly group: string }
  | { readonly kind: 'all' }

export const TARGET_SYNTAX = 'device:ID, device:ID1,ID2,..., group:NAME or all'
const GROUP_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/
const MAX_LISTED = 10_000

export function parseTarget(text: string): JobTarget {
  const t = text.trim()
  if (t === 'all') return { kind: 'all' }
  if (t.startsWith('group:')) {
    const group = t.slice('group:'.length)
    if (!GROUP_RE.test(group)) throw new RollcallError('BAD_REQUEST', `target "${text}": a group name is 1 to 64 lowercase letters, digits, "-" and "_"`)
    return { kind: 'group', group }
  }
  if (t.startsWith('device:') || t.startsWith('devices:')) {
    const ids = t.slice(t.indexOf(':') + 1).split(',').map((s) => s.trim()).filter((s) => s !== '')
    if (ids.length === 0) throw new RollcallError('BAD_REQUEST', `target "${text}" names no device; write ${TARGET_SYNTAX}`)
    if (ids.length > MAX_LISTED) throw new RollcallError('BAD_REQUEST', `target lists ${ids.length} devices; at most ${MAX_LISTED} (use a group)`)
    const bad = ids.find((id) => !isDeviceId(id))
    if (bad !== undefined) throw new RollcallError('INVALID_DEVICE_ID', `target "${text}": ${JSON.stringify(bad)} is not a device id (${DEVICE_ID_RULE})`)
    return { kind: 'devices', ids: [...new Set(ids)] }
  }
  throw new RollcallError('BAD_REQUEST', `target "${text}" is not understood; write ${TARGET_SYNTAX}`)
}

export function formatTarget(target: JobTarget): string {
  switch (target.kind) {
    case 'all': return 'all'
    case 'group': return `group:${target.group}`
    case 'devices': return `device:${target.ids.join(',')}`
    default: {
      const never: never = target
      return never
    }
  }
}

/** Whether a device (of this group) is one a continuous job with this target reaches. */
export function targetIncludes(target: JobTarget, deviceId: string, group: string | null): boolean {
  switch (target.kind) {
    case 'all': return true
    case 'group': return group === target.group
    case 'devices': return target.ids.includes(deviceId)
    default: {
      const never: never = target
      return never
    }
  }
}

/** The registered devices a target names now; a listed device that is not registered is an error. */
export function resolveTarget(target: JobTarget, registry: Pick<Registry, 'listDevices' | 'getDevice'>): string[] {
  switch (target.kind) {
    case 'all': return registry.listDevices().map((d) => d.id)
    case 'group': return registry.listDevices().filter((d) => d.group === target.group).map((d) => d.id)
    case 'devices': {
      const missing = target.ids.filter((id) => registry.getDevice(id) === undefined)
      if (missing.length > 0) {
        const named = missing.slice(0, 5).map((m) => `"${m}"`).join(', ')
        throw new RollcallError('DEVICE_NOT_FOUND', `no device ${named}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}; register it first (rollcall device add)`)
      }
      return [...target.ids]
    }
    default: {
      const never: never = target
      return never
    }
  }
}
