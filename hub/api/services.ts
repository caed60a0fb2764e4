import type { Clock } from '../../common/clock.js'
import type { Registry, DeviceRecord, ObserverRecord } from '../fleet/registry.js'
import type { PresenceStore, PresenceView } from '../presence/store.js'
import type { TelemetryStore } from '../telemetry/store.js'
import type { DeadLetters } from '../mqtt/dead-letters.js'
import type { JobDetail, Jobs } from '../jobs/jobs.js'
import type { Schedules } from '../jobs/schedules.js'
import type { Commands } from '../commands/commands.js'
import type { CommandRecord } from '../commands/store.js'
import type { Rules } from '../rules/rules.js'
import type { FiringChain as RuleFiringChain } from '../rules/trace.js'

/** What the HTTP API (and the CLI through it) can do with a running hub. */
export interface HubServices {
  readonly clock: Clock
  readonly registry: Registry
  readonly presence: PresenceStore
  readonly telemetry: TelemetryStore
  readonly deadLetters: DeadLetters
  readonly jobs: Jobs
  readonly schedules: Schedules
  readonly commands: Commands
  readonly rules: Rules
  /**
   * Registers a device (and gives it its executions of continuous jobs); returns its token once.
   * On an external broker its account there is made first (hub/mqtt/dynsec.ts): a refusal registers nothing.
   */
  addDevice(id: string, group: string | null): Promise<{ device: DeviceRecord; token: string }>
  /** Removes the device and closes its connection at once (on an external broker, its account there first). */
  removeDevice(id: string): Promise<void>
  /** New token; the old one stops working and the device is disconnected. */
  rotateDeviceToken(id: string): Promise<string>
  /** Read-only MQTT credentials; returns the token once. */
  addObserver(name: string): Promise<{ observer: ObserverRecord; token: string }>
  removeObserver(name: string): Promise<void>
  /** A rule firing with, for each action, the command or job it made (their records), for the trace. */
  firingChain(id: string): Promise<FiringChain>
  health(): HealthReport
  stats(): Record<string, unknown>
}

export type FiringChain = RuleFiringChain<CommandRecord, JobDetail>

export interface HealthReport {
  readonly ok: boolean
  readonly version: string
  readonly uptimeMs: number
  /** The plaintext MQTT port, 0 when that listener is off. */
  readonly mqttPort: number
  /** MQTT over TLS, when it is on. */
  readonly mqttTlsPort?: number
  readonly devices: { readonly total: number; readonly online: number; readonly offline: number }
  /** On an external broker: whether the hub is connected to it now (`ok` is false while it is not). */
  readonly broker?: { readonly url: string; readonly connected: boolean }
}

export interface DeviceSummary extends DeviceRecord {
  readonly presence: PresenceView | null
}

export function summarize(services: HubServices, d: DeviceRecord): DeviceSummary {
  return { ...d, presence: services.presence.get(d.id) ?? null }
}
