import { createRequire } from 'node:module'
import type { TSchema } from 'typebox'
import type { TLocalizedValidationError } from 'typebox/error'

/**
 * A validator generated ahead of time from a TypeBox schema by
 * scripts/generate-validators.ts. `Check` is plain JavaScript that needs only
 * `typebox/guard` at run time, so a process that validates with it (the agent)
 * never loads TypeBox's builder or compiler: about 25 MB of RSS on a device.
 */
export interface Validator<T> {
  readonly Check: (value: unknown) => value is T
  /** The schema as JSON, for explaining a failed check. */
  readonly schema: TSchema
}

export type ValidationError = TLocalizedValidationError

type ValueModule = typeof import('typebox/value')

// Explaining a failure is rare (a bad payload, a bad config file), so TypeBox's
// error walker is loaded on the first failure, not at start. It is loaded
// synchronously because decode() and config loading are synchronous;
// require() of an ES module is unflagged from Node 20.19 (our engines floor).
const requireSync = createRequire(import.meta.url)
let value: ValueModule | undefined

/** Why `input` fails `validator`, JSON-schema style (`instancePath`, `keyword`, `message`); empty when it passes. */
export function validationErrors(validator: Validator<unknown>, input: unknown): ValidationError[] {
  if (validator.Check(input)) return []
  value ??= requireSync('typebox/value') as ValueModule
  return value.Errors(validator.schema, input)
}
