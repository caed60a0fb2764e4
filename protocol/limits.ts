/**
 * The plain values of the wire contract — size limits and closed sets — apart
 * from the TypeBox schemas in messages.ts, so the agent can use them without
 * loading TypeBox (it validates with the generated checks in
 * validators.generated.ts instead).
 *
 * Limits are part of the contract: they bound what one message can cost the
 * hub to decode and store.
 */
export const LIMITS = {
  /** Default cap on a PUBLISH payload, enforced by the broker before buffering. */
  maxPayloadBytes: 64 * 1024,
  maxSamplesPerBatch: 2000,
  maxEventsPerBatch: 500,
  maxEventMessageChars: 1024,
  maxCapabilities: 64,
  /** Sensors a birth may declare a unit for, and the length of one unit ("°C", "hPa", "ratio"). */
  maxSensorUnits: 256,
  maxUnitChars: 16,
  /** Executions in one jobs/batch, updates in one jobs/update, and the most one pull may ask for. */
  maxJobsPerBatch: 500,
  /** A job's payload as JSON; a batch holds at least one execution under the payload cap. */
  maxJobPayloadBytes: 32 * 1024,
  /** A result as JSON; a bigger one is replaced by a note saying so. */
  maxJobResultBytes: 16 * 1024,
  maxJobErrorChars: 1024,
  /** 7 days: no attempt may hold a lease longer. */
  maxJobTimeoutMs: 7 * 86_400_000,
  /** A command's args as JSON. */
  maxCommandArgsBytes: 16 * 1024,
  /** A command's result as JSON; a bigger one is replaced by a note saying so. */
  maxCommandResultBytes: 16 * 1024,
  /** Push is for now: no command waits longer than 5 minutes. */
  maxCommandTimeoutMs: 300_000,
  /** An event's `data` as JSON (the agent keeps a whole event under this). */
  maxEventDataBytes: 16 * 1024,
  /**
   * How deep any free-form value (event data, job payloads and results,
   * command args and results) may nest arrays and objects: `{}` is 1 deep,
   * `{"a":[1]}` 2. JSON.parse reads any depth, but JSON.stringify and every
   * recursive walk after it overflow the stack a few thousand levels down
   * (M19b, H05); 32 is more than any real payload needs.
   */
  maxJsonDepth: 32,
} as const

export const EVENT_LEVELS = ['debug', 'info', 'warn', 'error'] as const
