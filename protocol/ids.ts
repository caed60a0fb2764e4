/**
 * Device ids double as MQTT client ids, usernames and topic levels, so they may
 * hold none of `/ + # $` and only ASCII (Mosquitto's ACL hardening does the
 * same). Observer names follow the same grammar so one check covers both.
 */
export const DEVICE_ID_PATTERN = '^[a-z0-9][a-z0-9_-]{2,63}$'
const DEVICE_ID_RE = new RegExp(DEVICE_ID_PATTERN)

export function isDeviceId(value: unknown): value is string {
  return typeof value === 'string' && DEVICE_ID_RE.test(value)
}

export const DEVICE_ID_RULE = '3 to 64 characters: lowercase letters, digits, "-" and "_", starting with a letter or digit'

/** Sensor names: "cpu.load", "temp_1", "env.humidity". */
export const SENSOR_NAME_PATTERN = '^[a-z0-9][a-z0-9._-]{0,63}$'
const SENSOR_NAME_RE = new RegExp(SENSOR_NAME_PATTERN)

export function isSensorName(value: unknown): value is string {
  return typeof value === 'string' && SENSOR_NAME_RE.test(value)
}

/** A sensor's unit ("°C", "%", "hPa"): 1 to 16 characters, none of them control characters (a dashboard prints it). */
export const UNIT_PATTERN = '^[^\\u0000-\\u001f\\u007f]{1,16}$'
const UNIT_RE = new RegExp(UNIT_PATTERN)

export function isUnit(value: unknown): value is string {
  return typeof value === 'string' && UNIT_RE.test(value)
}

/** MQTT client ids the hub accepts go up to 64 characters, a device id's longest (aedes's 23 is the MQTT 3.1 limit). */
export const MAX_CLIENT_ID_LENGTH = 64

/** Observers connect with username `observer:NAME`, so they can never collide with a device id. */
export const OBSERVER_USER_PREFIX = 'observer:'

/** Job ids: made by the hub, `j` plus lowercase base-32. */
export const JOB_ID_PATTERN = '^j[a-z0-9]{3,31}$'
const JOB_ID_RE = new RegExp(JOB_ID_PATTERN)

export function isJobId(value: unknown): value is string {
  return typeof value === 'string' && JOB_ID_RE.test(value)
}

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
const COMMAND_ID_RE = new RegExp(COMMAND_ID_PATTERN)

export function isCommandId(value: unknown): value is string {
  return typeof value === 'string' && COMMAND_ID_RE.test(value)
}
