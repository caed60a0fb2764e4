import { readFileSync } from 'node:fs'

/**
 * Just enough of systemd's unit file syntax (systemd.syntax(7),
 * systemd.service(5) "Command lines") for tests that start a process as its
 * unit would: sections of `Key=value` lines, a key set more than once keeps
 * every value, `#` and `;` start comments, and an Exec line splits into argv
 * with double quotes, `%%` and `$$`. Anything this does not model (a `%`
 * specifier, a `$VAR` substitution, a line continuation, an Exec prefix such
 * as `-` or `+`) throws, so a test never runs something other than what
 * systemd would.
 */

export type Unit = ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>

export function parseUnit(text: string): Unit {
  const sections = new Map<string, Map<string, string[]>>()
  let current: Map<string, string[]> | undefined
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    if (line.endsWith('\\')) throw new Error(`line ${i + 1}: continuation lines are not modelled`)
    const section = /^\[(.+)\]$/.exec(line)
    if (section) {
      current = new Map()
      sections.set(section[1]!, current)
      continue
    }
    const eq = line.indexOf('=')
    if (eq <= 0 || current === undefined) throw new Error(`line ${i + 1}: not a Key=value line in a section: ${line}`)
    const key = line.slice(0, eq).trim()
    const value = line.slice(eq + 1).trim()
    current.set(key, [...(current.get(key) ?? []), value])
  }
  return sections
}

export function readUnit(path: string): Unit {
  return parseUnit(readFileSync(path, 'utf8'))
}

/** Every value of `section.key`, in order. */
export function values(unit: Unit, section: string, key: string): readonly string[] {
  return unit.get(section)?.get(key) ?? []
}

/** The one value of `section.key`; throws if it is missing or set twice. */
export function value(unit: Unit, section: string, key: string): string {
  const v = values(unit, section, key)
  if (v.length !== 1) throw new Error(`[${section}] ${key}= is set ${v.length} times`)
  return v[0]!
}

/** An Exec line's argv, as systemd splits and unescapes it. */
export function execArgv(line: string): string[] {
  if (/^[-@:+!]/.test(line)) throw new Error(`Exec prefixes are not modelled: ${line}`)
  const args: string[] = []
  let i = 0
  while (i < line.length) {
    while (line[i] === ' ' || line[i] === '\t') i++
    if (i >= line.length) break
    let arg = ''
    const quoted = line[i] === '"'
    if (quoted) i++
    for (; i < line.length; i++) {
      const c = line[i]!
      if (quoted && c === '"') { i++; break }
      if (!quoted && (c === ' ' || c === '\t')) break
      if (c === '\\') { arg += line[++i] ?? ''; continue }
      if (c === '%') {
        if (line[i + 1] !== '%') throw new Error(`specifier %${line[i + 1]} is not modelled: ${line}`)
        arg += '%'
        i++
        continue
      }
      if (c === '$') {
        if (line[i + 1] !== '$') throw new Error(`variable substitution is not modelled: ${line}`)
        arg += '$'
        i++
        continue
      }
      arg += c
    }
    args.push(arg)
  }
  return args
}

/** Environment= values as a record: each value is one or more space-separated, optionally double-quoted, VAR=value words. */
export function unitEnvironment(unit: Unit): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of values(unit, 'Service', 'Environment')) {
    for (const word of line.match(/"[^"]*"|\S+/g) ?? []) {
      const w = word.startsWith('"') ? word.slice(1, -1) : word
      const eq = w.indexOf('=')
      if (eq <= 0) throw new Error(`Environment=: ${word} is not VAR=value`)
      env[w.slice(0, eq)] = w.slice(eq + 1)
    }
  }
  return env
}
