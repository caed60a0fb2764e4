import { readFileSync } from 'node:fs'

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

/** CPU time (user + system) a process has used, in milliseconds. */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  // utime and stime are fields 14 and 15 of stat; here indexed from field 3.
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1000) / 100
}

export const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`
