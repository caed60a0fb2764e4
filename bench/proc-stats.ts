import { readdirSync, readFileSync } from 'node:fs'

/** Resident set size of a process, from /proc (Linux). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : 0
}

/** The anonymous part of a process's RSS (heap, stacks; not file pages the kernel can drop), from /proc (Linux). */
export function rssAnonBytes(pid: number): number {
  const m = /RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : 0
}

/** /proc/PID/stat's fields from the third on (after the command name, which may hold spaces). */
function statFields(pid: number): string[] {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
}

/** CPU time (user + system) a process has used, in milliseconds. */
export function cpuMs(pid: number): number {
  const fields = statFields(pid)
  // utime and stime are fields 14 and 15 of stat; here indexed from field 3.
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1000) / 100
}

/** CPU time of a process's children that ended and were waited for (cutime + cstime, fields 16 and 17), in milliseconds. */
export function reapedChildrenCpuMs(pid: number): number {
  const fields = statFields(pid)
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100
}

/** A process and its children now (a PostgreSQL server's backends are the postmaster's). */
export function withChildren(pid: number): number[] {
  const out = [pid]
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // ppid is field 4.
      if (Number(statFields(Number(entry))[1]) === pid) out.push(Number(entry))
    } catch {
      // Gone meanwhile.
    }
  }
  return out
}

export const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`
