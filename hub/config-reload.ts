import type { HubConfig } from './config.js'

/**
 * What a reload of the hub's config file (SIGHUP, `systemctl reload
 * rollcall-hub`) changes in a running hub (issue #13). The log level is
 * applied at once; the TLS files are read again on every SIGHUP anyway (the
 * same paths: new paths need a restart). Every other key is wired into the
 * broker, the stores and the schedules at start, and needs a restart; a
 * reload names each one that differs, every time, until the hub restarts.
 */

export const HUB_LIVE_KEYS = ['logLevel'] as const satisfies readonly (keyof HubConfig)[]

export interface HubReloadPlan {
  readonly live: readonly (keyof HubConfig)[]
  readonly restart: readonly (keyof HubConfig)[]
  /** The running config with the live keys taken from the new one. */
  readonly effective: HubConfig
}

export function planHubReload(running: HubConfig, next: HubConfig): HubReloadPlan {
  const live: (keyof HubConfig)[] = []
  const restart: (keyof HubConfig)[] = []
  const keys = new Set([...Object.keys(running), ...Object.keys(next)] as (keyof HubConfig)[])
  for (const key of keys) {
    if (JSON.stringify(running[key]) === JSON.stringify(next[key])) continue
    if ((HUB_LIVE_KEYS as readonly string[]).includes(key)) live.push(key)
    else restart.push(key)
  }
  const effective: Record<string, unknown> = { ...running }
  for (const key of live) effective[key] = next[key]
  return { live, restart, effective: Object.freeze(effective) as unknown as HubConfig }
}
