import { QUEUED_COMMAND_TASK_PREFIX } from '../../protocol/ids.js'
import type { Jobs } from '../jobs/jobs.js'
import type { CommandCause } from './store.js'

/**
 * A command for a device that is not reachable, with `ifOffline: "queue"`,
 * becomes a job: the device runs it (once: one attempt) as the task
 * "cmd.NAME" when it next connects. A command with a cause (a rule's action)
 * queues under a job id made from its own, so it is made once however often
 * the action runs, and a run after a restart can tell it was.
 */
export function createQueuing(jobs: Jobs) {
  const jobIdOf = (commandId: string) => `j${commandId.slice(1)}`
  return {
    async queue(spec: { readonly name: string; readonly args?: unknown }, deviceIds: readonly string[], origin?: { readonly id: string; readonly cause?: CommandCause }): Promise<string> {
      const job = { name: `${QUEUED_COMMAND_TASK_PREFIX}${spec.name}`, payload: spec.args ?? null, target: `device:${deviceIds.join(',')}`, maxAttempts: 1 }
      if (!origin?.cause) return (await jobs.create(job))!.id
      const id = jobIdOf(origin.id)
      await jobs.create(job, { id, ...origin.cause })
      return id
    },
    /** The job a command with this id was queued as, if it was. */
    async queuedAs(commandId: string): Promise<string | undefined> {
      try {
        return (await jobs.get(jobIdOf(commandId), { limit: 1 })).id
      } catch {
        return undefined
      }
    },
  }
}
