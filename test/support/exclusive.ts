import { openSync, closeSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isAlive } from './procs.js'

/**
 * Runs `fn` while holding a lock shared by every vitest worker on this
 * machine. The tests that start a fleet of 2,000 agents take it: two such
 * fleets at once on two cores make each miss its timing promise, and the
 * failure says nothing about the code. The lock is a file made with O_EXCL;
 * one left by a process that died is taken over.
 */
export async function exclusive<T>(name: string, fn: () => Promise<T>, waitMs = 600_000): Promise<T> {
  const path = join(tmpdir(), `rollcall-test-${name}.lock`)
  const deadline = Date.now() + waitMs
  for (;;) {
    try {
      const fd = openSync(path, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      if (!holderAlive(path)) {
        rmSync(path, { force: true })
        continue
      }
      if (Date.now() > deadline) throw new Error(`waited ${waitMs} ms for the test lock ${path}`)
      await new Promise((r) => setTimeout(r, 250))
    }
  }
  try {
    return await fn()
  } finally {
    rmSync(path, { force: true })
  }
}

function holderAlive(path: string): boolean {
  let pid: number
  try {
    pid = Number(readFileSync(path, 'utf8'))
  } catch {
    return true // being written right now
  }
  return !Number.isInteger(pid) || pid <= 0 || isAlive(pid)
}
