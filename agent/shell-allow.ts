import { basename } from 'node:path'

/**
 * The `shell` task's allowlist (agent config `shellAllow`), and the pure
 * decision whether one argv may run (#12 section 4). Three forms of entry:
 *
 * - `"/usr/bin/uptime"`: this command with ANY arguments. Kept for
 *   compatibility; it is only as narrow as the command itself, so
 *   `"/usr/bin/env"`, `find`, `awk` or `python3` allow running anything.
 * - `["/usr/bin/systemctl", "restart", "pump"]`: exactly this argv, no more
 *   and no fewer arguments.
 * - `{"cmd": "/usr/bin/systemctl", "args": ["restart", {"pattern": "pump|fan"}]}`:
 *   exactly this many arguments, each equal to its string or matching its
 *   pattern, a regular expression that must match the whole argument
 *   (anchored as `^(?:pattern)$`, so `pump|fan` cannot match `pump;x`).
 *
 * The command is always compared exactly (no PATH lookup: the argv goes to
 * spawn without a shell, job-handlers.ts).
 */

export interface ArgPattern { readonly pattern: string }
export type ShellAllowArg = string | ArgPattern
export type ShellAllowEntry = string | readonly string[] | { readonly cmd: string; readonly args: readonly ShellAllowArg[] }

type ArgRule = { readonly exact: string } | { readonly pattern: string; readonly re: RegExp }

/** One compiled entry: `args` undefined means any arguments (the plain form). */
export interface ShellAllowRule {
  readonly cmd: string
  readonly args: readonly ArgRule[] | undefined
  /** The entry as written in the config, for messages. */
  readonly label: string
}

export type ShellVerdict =
  | { readonly allowed: true; readonly rule: ShellAllowRule }
  | { readonly allowed: false; readonly near: ReadonlyArray<{ readonly entry: string; readonly why: string }>; readonly all: readonly string[] }

/**
 * Commands that run other commands or code given in their arguments: a plain
 * entry for one of these allows anything the agent's user may do.
 */
const RUNS_OTHER_COMMANDS = /^(?:sh|bash|dash|zsh|ksh|csh|tcsh|fish|busybox|env|nice|nohup|timeout|stdbuf|chroot|setsid|sudo|doas|su|runuser|pkexec|xargs|find|awk|gawk|mawk|nawk|sed|perl\d*(?:\.\d+)*|python\d*(?:\.\d+)*|ruby\d*(?:\.\d+)*|node|nodejs|deno|bun|php\d*(?:\.\d+)*|lua\d*(?:\.\d+)*|tclsh|expect|ssh|systemd-run|watch|time|strace|gdb|docker|podman|kubectl|crontab|at|make|git|vim?|less|more|man|tar|rsync)$/

function isArgv(e: Exclude<ShellAllowEntry, string>): e is readonly string[] {
  return Array.isArray(e)
}

function entryLabel(e: ShellAllowEntry): string {
  return typeof e === 'string' ? e : JSON.stringify(e)
}

/** Compiles the config's entries; returns problems (one per bad entry) instead of throwing. */
export function compileShellAllow(entries: readonly ShellAllowEntry[]): { rules: ShellAllowRule[]; issues: string[] } {
  const rules: ShellAllowRule[] = []
  const issues: string[] = []
  for (const [i, e] of entries.entries()) {
    const label = entryLabel(e)
    if (typeof e === 'string') {
      rules.push({ cmd: e, args: undefined, label })
      continue
    }
    const { cmd, args: rawArgs } = isArgv(e) ? { cmd: e[0], args: e.slice(1) } : e
    if (cmd === undefined || cmd === '') {
      issues.push(`shellAllow.${i}: an exact argv needs the command first, e.g. ["/usr/bin/systemctl", "restart", "pump"]`)
      continue
    }
    const args: ArgRule[] = []
    for (const [j, a] of rawArgs.entries()) {
      if (typeof a === 'string') {
        args.push({ exact: a })
        continue
      }
      try {
        args.push({ pattern: a.pattern, re: new RegExp(`^(?:${a.pattern})$`, 'u') })
      } catch (err) {
        issues.push(`shellAllow.${i}.args.${j}: ${JSON.stringify(a.pattern)} is not a regular expression (${(err as Error).message})`)
      }
    }
    rules.push({ cmd, args, label })
  }
  return { rules, issues }
}

/** Start-up warnings: plain entries whose command can run other commands. */
export function shellAllowWarnings(rules: readonly ShellAllowRule[]): string[] {
  return rules
    .filter((r) => r.args === undefined && RUNS_OTHER_COMMANDS.test(basename(r.cmd)))
    .map((r) => `shellAllow entry ${JSON.stringify(r.cmd)} allows it with any arguments, and ${basename(r.cmd)} can run other commands or code: ` +
      `this allows anything the agent's user may do. Pin the arguments: ["${r.cmd}", "arg", ...] or {"cmd": "${r.cmd}", "args": ["arg", {"pattern": "..."}]}`)
}

/** Why `args` does not fit `rule` (same command), or undefined when it fits. */
function argsMismatch(rule: ShellAllowRule, args: readonly string[]): string | undefined {
  const want = rule.args
  if (want === undefined) return undefined
  if (want.length !== args.length) return `it allows exactly ${want.length} argument${want.length === 1 ? '' : 's'}, the job gave ${args.length}`
  for (const [i, w] of want.entries()) {
    const a = args[i]!
    const shown = JSON.stringify(a).slice(0, 100)
    if ('exact' in w) {
      if (a !== w.exact) return `argument ${i + 1} is ${shown}, it allows only ${JSON.stringify(w.exact)}`
    } else if (!matchesWhole(w.re, a)) {
      return `argument ${i + 1} is ${shown}, it must match the whole of /${w.pattern}/`
    }
  }
  return undefined
}

/**
 * Pure: may `cmd args` run? When not, `near` lists the entries for the same
 * command (or the same command name at another path) and why each did not fit.
 */
export function matchShellAllow(rules: readonly ShellAllowRule[], cmd: string, args: readonly string[]): ShellVerdict {
  const near: Array<{ entry: string; why: string }> = []
  for (const rule of rules) {
    if (rule.cmd !== cmd) continue
    const why = argsMismatch(rule, args)
    if (why === undefined) return { allowed: true, rule }
    near.push({ entry: rule.label, why })
  }
  if (near.length === 0) {
    for (const rule of rules) {
      if (basename(rule.cmd) === basename(cmd)) near.push({ entry: rule.label, why: `it names ${JSON.stringify(rule.cmd)}; commands are matched exactly, with no PATH lookup` })
    }
  }
  return { allowed: false, near, all: rules.map((r) => r.label) }
}

/** The refusal's message: what was asked, what was close and why not, and what to change. */
export function refusalMessage(cmd: string, args: readonly string[], verdict: Extract<ShellVerdict, { allowed: false }>): string {
  const asked = JSON.stringify(cmd).slice(0, 200)
  const withArgs = args.length > 0 ? ` with arguments ${JSON.stringify(args).slice(0, 300)}` : ''
  const fix = 'change "shellAllow" in the agent config and restart the agent'
  if (verdict.near.length > 0) {
    const near = verdict.near.slice(0, 5).map((n) => `${n.entry}: ${n.why}`).join('; ')
    return `${asked}${withArgs} is not in this device's shellAllow list; closest entries: ${near}; ${fix}`
  }
  const allowed = verdict.all.length > 0 ? `allowed: ${verdict.all.slice(0, 20).join(', ')}` : 'nothing is allowed yet'
  return `${asked} is not in this device's shellAllow list (${allowed}); add the exact command, preferably as an absolute path, to "shellAllow" in the agent config (best with its arguments pinned) and restart the agent`
}

/**
 * The anchors around a pattern do not hold on their own: `a)|(b` makes
 * `^(?:a)|(b)$`, which matches anything that starts with `a`. So the match
 * itself must span the argument.
 */
function matchesWhole(re: RegExp, arg: string): boolean {
  const m = re.exec(arg)
  return m !== null && m.index === 0 && m[0].length === arg.length
}
