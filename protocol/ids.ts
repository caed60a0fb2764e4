/**
 * The grammars of ids and names on the wire, each written once: as a pattern
 * the JSON schemas (messages.ts) carry, and as a guard built from that pattern,
 * so a schema and the code that checks an id by hand never disagree.
 */

/** The guard of one grammar: a string its pattern matches. */
function matching(pattern: string): (value: unknown) => value is string {
  const re = new RegExp(pattern)
  return (value): value is string => typeof value === 'string' && re.test(value)
}

/**
 * Device ids double as MQTT client ids, usernames and topic levels, so they may
 * hold none of `/ + # $` and only ASCII (Mosquitto's ACL hardening does the
 * same). Observer names follow the same grammar so one check covers both.
 */
export const DEVICE_ID_PATTERN = '^[a-z0-9][a-z0-9_-]{2,63}$'
export const isDeviceId = matching(DEVICE_ID_PATTERN)

export const DEVICE_ID_RULE = '3 to 64 characters: lowercase letters, digits, "-" and "_", starting with a letter or digit'

/** Sensor names: "cpu.load", "temp_1", "env.humidity". */
export const SENSOR_NAME_PATTERN = '^[a-z0-9][a-z0-9._-]{0,63}$'
export const isSensorName = matching(SENSOR_NAME_PATTERN)

/** A sensor's unit ("°C", "%", "hPa"): 1 to 16 characters, none of them control characters (a dashboard prints it). */
export const UNIT_PATTERN = '^[^\\u0000-\\u001f\\u007f]{1,16}$'
export const isUnit = matching(UNIT_PATTERN)

/** MQTT client ids the hub accepts go up to 64 characters, a device id's longest (aedes's 23 is the MQTT 3.1 limit). */
export const MAX_CLIENT_ID_LENGTH = 64

/** Observers connect with username `observer:NAME`, so they can never collide with a device id. */
export const OBSERVER_USER_PREFIX = 'observer:'

/** Job ids: made by the hub, `j` plus lowercase base-32. */
export const JOB_ID_PATTERN = '^j[a-z0-9]{3,31}$'
export const isJobId = matching(JOB_ID_PATTERN)

/** An execution is one job on one device: `{jobId}.{deviceId}`; neither part holds a dot. */
export const EXEC_ID_PATTERN = '^j[a-z0-9]{3,31}\\.[a-z0-9][a-z0-9_-]{2,63}$'

export function execIdOf(jobId: string, deviceId: string): string {
  return `${jobId}.${deviceId}`
}

/** Splits an execution id; undefined when it is not one. */
export function parseExecId(execId: string): { jobId: string; deviceId: string } | undefined {
  const dot = execId.indexOf('.')
  if (dot < 0) return undefined
  const jobId = execId.slice(0, dot)
  const deviceId = execId.slice(dot + 1)
  return isJobId(jobId) && isDeviceId(deviceId) ? { jobId, deviceId } : undefined
}

/** Task (handler) names: "echo", "sensors.sample", "firmware.update". */
export const TASK_NAME_PATTERN = SENSOR_NAME_PATTERN

export function isTaskName(value: unknown): value is string {
  return isSensorName(value)
}

/**
 * A command sent with ifOffline "queue" to a device that is not reachable
 * runs there as a job whose task is this prefix plus the command's name: the
 * hub names the job so, the agent registers every command handler under it.
 */
export const QUEUED_COMMAND_TASK_PREFIX = 'cmd.'

/** Command ids: made by the hub, `c` plus lowercase base-32; unique, so a device can drop a repeat. */
export const COMMAND_ID_PATTERN = '^c[a-z0-9]{3,31}$'
export const isCommandId = matching(COMMAND_ID_PATTERN)
