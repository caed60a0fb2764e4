import { actionObjectId } from './actions.js'
import type { FiringView } from './rules.js'

/**
 * A firing's whole chain for `GET /api/firings/:id`: the firing (its trigger
 * sample or event), each action with its outcome and timings, and the record
 * of the command or job the action made, found by the id the action gave it.
 */
export type FiringChain<C, J> = FiringView & {
  readonly actions: ReadonlyArray<FiringView['actions'][number] & { readonly command?: C; readonly job?: J }>
}

/** `find` returns undefined, or throws a not-found error, for a command or job the action never made. */
export function firingChain<C, J>(firing: FiringView, find: { command(id: string): C | undefined; job(id: string): J | undefined }): FiringChain<C, J> {
  const found = <T>(get: () => T | undefined): T | undefined => {
    try {
      return get()
    } catch {
      return undefined
    }
  }
  return {
    ...firing,
    actions: firing.actions.map((a) => {
      if (a.kind === 'command') {
        const command = found(() => find.command(actionObjectId('c', firing.id, a.idx)))
        return command === undefined ? a : { ...a, command }
      }
      if (a.kind === 'job') {
        const job = found(() => find.job(actionObjectId('j', firing.id, a.idx)))
        return job === undefined ? a : { ...a, job }
      }
      return a
    }),
  }
}
