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

/** `find` answers undefined, or fails with a not-found error, for a command or job the action never made. */
export async function firingChain<C, J>(firing: FiringView, find: { command(id: string): Promise<C | undefined> | C | undefined; job(id: string): Promise<J | undefined> | J | undefined }): Promise<FiringChain<C, J>> {
  const found = async <T>(get: () => Promise<T | undefined> | T | undefined): Promise<T | undefined> => {
    try {
      return await get()
    } catch {
      return undefined
    }
  }
  return {
    ...firing,
    actions: await Promise.all(firing.actions.map(async (a) => {
      if (a.kind === 'command') {
        const command = await found(() => find.command(actionObjectId('c', firing.id, a.idx)))
        return command === undefined ? a : { ...a, command }
      }
      if (a.kind === 'job') {
        const job = await found(() => find.job(actionObjectId('j', firing.id, a.idx)))
        return job === undefined ? a : { ...a, job }
      }
      return a
    })),
  }
}
