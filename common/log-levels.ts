import type { Logger } from './logger.js'

/**
 * Changing a running process's log level (issue #13: `systemctl reload`).
 * A pino child takes its parent's level when it is made and keeps it: setting
 * the root's level later changes no component logger. So this follows the
 * root's children as they are made (pino's `onChild`, inherited by every
 * descendant) and sets the level on each one still alive. Children are held
 * weakly: per-job and per-command loggers come and go.
 *
 * Call it right after the root is made, before any child exists.
 */
export function followLogLevel(root: Logger): (level: string) => void {
  const children = new Set<WeakRef<Logger>>()
  // Drops the entry of a collected child, so months of per-job loggers leave nothing behind.
  const gone = new FinalizationRegistry<WeakRef<Logger>>((ref) => { children.delete(ref) })
  const previous = root.onChild
  root.onChild = (child) => {
    const ref = new WeakRef(child)
    children.add(ref)
    gone.register(child, ref)
    previous(child)
  }
  return (level) => {
    root.level = level
    for (const ref of children) {
      const child = ref.deref()
      if (child === undefined) children.delete(ref)
      else child.level = level
    }
  }
}
