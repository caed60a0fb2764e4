import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RollcallError } from '../common/errors.js'
import { VERSION } from '../common/version.js'

/**
 * `rollcall service install agent|hub` and `rollcall service uninstall`: the
 * systemd units shipped in deploy/systemd/, rendered for this machine and put
 * in place. Deciding apart from doing: `installPlan` and `uninstallPlan` are
 * pure (given the facts of the machine, a `Host`), and `runPlan` carries a
 * plan out or, with --dry-run, prints it.
 *
 * Rendering changes only what differs between machines: ExecStart= gets the
 * absolute paths of this node and of this rollcall (symlinks resolved, so an
 * `npm install -g` that moves the `rollcall` link does not matter), the config
 * file, the token file the credential is loaded from, the user. Everything
 * else is the shipped file, so `cp` + `systemctl enable --now` and this
 * command give the same service.
 */

export const SERVICE_KINDS = ['agent', 'hub'] as const
export type ServiceKind = typeof SERVICE_KINDS[number]

export const DEFAULT_UNIT_DIR = '/etc/systemd/system'
export const DEFAULT_USER = 'rollcall'

/**
 * Flags for node itself on the service's command line. The agent runs with
 * V8's JIT compilers off (`--jitless`): a device agent spends its time in
 * SQLite, in the network and asleep, so interpreted JavaScript costs it no
 * measurable CPU (0.15% of a core at 10 samples/s either way, and the same
 * CPU seconds to drain a 100,000-sample backlog), while the compilers cost
 * 5–6 MB of RSS (docs/benchmarks.md, "Idle agent footprint"). It is also what
 * lets the agent's unit set MemoryDenyWriteExecute=yes: without a JIT, V8
 * never needs memory that is both writable and executable. The hub keeps its
 * JIT: it routes thousands of messages a second. `--no-expose-wasm` says
 * what --jitless implies (no WebAssembly), which V8 otherwise prints a
 * warning about at every start.
 *
 * The hub's young generation may grow to 64 MB semi-spaces (V8's default is
 * 16): every message leaves short-lived packets, buffers and objects behind,
 * and with thousands of connections the default young generation filled
 * often enough that garbage collection took 11% of the hub's CPU at 8,000
 * devices. With 64 MB the same fleet held (lag p99 < 1 s) where it did not
 * (docs/benchmarks.md, "Garbage collection"). V8 reads the size only at
 * start, so it is a node flag, not something the hub can set for itself; it
 * costs memory only under load (the space grows as it fills).
 */
export const HUB_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64']
export const NODE_FLAGS: Readonly<Record<ServiceKind, readonly string[]>> = { agent: ['--jitless', '--no-expose-wasm'], hub: HUB_NODE_FLAGS }

/** The data dir is fixed by the unit's StateDirectory= (and the only writable path); not an option. */
export function stateDir(kind: ServiceKind): string {
  return `/var/lib/rollcall/${kind}`
}

export function unitName(kind: ServiceKind): string {
  return `rollcall-${kind}.service`
}

/** The shipped unit: deploy/systemd/ at the package root, two levels up from dist/cli/ (one from cli/ when run from source). */
export function templatePath(kind: ServiceKind): string {
  const candidates = ['../../', '../'].map((up) => fileURLToPath(new URL(`${up}deploy/systemd/${unitName(kind)}`, import.meta.url)))
  return candidates.find((p) => existsSync(p)) ?? candidates[0]!
}

/** What the plan depends on, read from the machine by `currentHost()`, given by tests. */
export interface Host {
  /** Absolute path of node. */
  readonly node: string
  /** Absolute, real path of dist/cli/main.js. */
  readonly cli: string
  readonly isRoot: boolean
  /** /run/systemd/system exists: systemd is PID 1 and systemctl can be used. */
  readonly systemdRunning: boolean
  userExists(name: string): boolean
  /** The unit file's current text, undefined when there is none. */
  readFile(path: string): string | undefined
  fileExists(path: string): boolean
}

export function currentHost(): Host {
  return {
    node: process.execPath,
    cli: realpathSync(fileURLToPath(new URL('./main.js', import.meta.url))),
    isRoot: process.getuid?.() === 0,
    systemdRunning: existsSync('/run/systemd/system'),
    userExists: (name) => spawnSync('getent', ['passwd', name], { stdio: 'ignore' }).status === 0,
    readFile: (path) => (existsSync(path) ? readFileSync(path, 'utf8') : undefined),
    fileExists: (path) => existsSync(path),
  }
}

export interface InstallOptions {
  readonly kind: ServiceKind
  /** Default /etc/rollcall/<kind>.json. */
  readonly config?: string
  /** Agent only: the file LoadCredential= reads the token from; default /etc/rollcall/agent.token. */
  readonly tokenFile?: string
  /** Write the unit here and do nothing else (packagers, tests); default /etc/systemd/system. */
  readonly unitDir?: string
  readonly user?: string
  readonly force?: boolean
}

/** One thing a plan does: write a file, remove one, or run a command. */
export type Step =
  | { readonly type: 'write'; readonly path: string; readonly content: string }
  | { readonly type: 'remove'; readonly path: string }
  | { readonly type: 'run'; readonly argv: readonly string[] }

export interface Plan {
  readonly steps: readonly Step[]
  /** Commands left to the operator (printed, not run): with --unit-dir, without systemd, or not as root. */
  readonly todo: readonly string[]
  /** Things to know: a missing config file, a kept data dir. */
  readonly notes: readonly string[]
}

/**
 * An argument as systemd reads it on an Exec line: `%` starts a specifier and
 * `$` a variable, so both are doubled; whitespace, quotes or backslashes need
 * double quotes (systemd.service(5), "Command lines").
 */
export function execArg(arg: string): string {
  const escaped = arg.replaceAll('%', '%%').replaceAll('$', '$$$$')
  return /[\s"'\\;]/.test(escaped) || escaped === '' ? `"${escaped.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"` : escaped
}

/** Replaces the value of the first `Key=` line (the shipped units set each key once). */
function setKey(unit: string, key: string, value: string): string {
  const re = new RegExp(`^${key}=.*$`, 'm')
  if (!re.test(unit)) throw new Error(`the unit template has no ${key}= line`)
  return unit.replace(re, () => `${key}=${value}`)
}

/** Where the service user would not reach node or rollcall with ProtectHome=yes. */
function underHome(path: string): boolean {
  return /^\/(home|root|run\/user)\//.test(path)
}

export interface RenderInput {
  readonly kind: ServiceKind
  readonly node: string
  readonly cli: string
  readonly config: string
  readonly tokenFile: string
  readonly user: string
}

/** The shipped unit, for this machine. */
export function renderUnit(template: string, r: RenderInput): string {
  const exec = [r.node, ...NODE_FLAGS[r.kind], r.cli, r.kind, '--config', r.config, '--data', stateDir(r.kind)].map(execArg).join(' ')
  let unit = setKey(template, 'ExecStart', exec)
  unit = setKey(unit, 'User', r.user)
  unit = setKey(unit, 'Group', r.user)
  if (r.kind === 'agent') unit = setKey(unit, 'LoadCredential', `token:${r.tokenFile}`)
  if (underHome(r.node) || underHome(r.cli)) {
    // node from nvm, or rollcall installed into a home directory: ProtectHome=yes would hide them from the service.
    unit = setKey(unit, 'ProtectHome', 'read-only')
  }
  const header = `# Written by \`rollcall service install ${r.kind}\` (rollcall ${VERSION}) from deploy/systemd/${unitName(r.kind)}.\n`
  return header + unit
}

export function installPlan(o: InstallOptions, host: Host, template: string): Plan {
  const kind = o.kind
  const unitDir = resolve(o.unitDir ?? DEFAULT_UNIT_DIR)
  const packaging = o.unitDir !== undefined
  const user = o.user ?? DEFAULT_USER
  const config = resolve(o.config ?? `/etc/rollcall/${kind}.json`)
  const tokenFile = resolve(o.tokenFile ?? '/etc/rollcall/agent.token')
  if (!packaging && !host.isRoot) {
    throw new RollcallError('FORBIDDEN', `installing into ${unitDir} needs root: run it with sudo, or pass --unit-dir DIR to only write the unit file, or --dry-run to see what it would do`)
  }
  if (underHome(host.cli) && /^\/root\//.test(host.cli)) {
    throw new RollcallError('BAD_REQUEST', `rollcall is installed under /root (${host.cli}), where the ${user} user cannot read it; install it system-wide (sudo npm install -g rollcall) and run this again`)
  }
  const unit = renderUnit(template, { kind, node: host.node, cli: host.cli, config, tokenFile, user })
  const unitPath = join(unitDir, unitName(kind))
  const existing = host.readFile(unitPath)
  if (existing !== undefined && existing !== unit && o.force !== true) {
    throw new RollcallError('UNIT_EXISTS', `${unitPath} exists and differs from the unit this would write; pass --force to replace it (see the difference with --dry-run)`)
  }

  const steps: Step[] = []
  const todo: string[] = []
  const notes: string[] = []
  if (existing !== unit) steps.push({ type: 'write', path: unitPath, content: unit })
  else notes.push(`${unitPath} is already this unit`)
  for (const path of [host.node, host.cli].filter(underHome)) {
    notes.push(`${path} is in a home directory: the unit sets ProtectHome=read-only so the service can reach it, but the ${user} user also needs read access to every directory on the way (home directories are often 0700); node and rollcall installed system-wide (apt or NodeSource, sudo npm install -g) avoid both`)
  }

  const useradd = ['useradd', '--system', '--user-group', '--no-create-home', '--home-dir', '/var/lib/rollcall', '--shell', '/usr/sbin/nologin', user]
  if (!packaging && !host.userExists(user)) steps.push({ type: 'run', argv: useradd })
  else if (packaging) todo.push(`getent passwd ${user} >/dev/null || ${useradd.join(' ')}`)

  const missing = [config, ...(kind === 'agent' ? [tokenFile] : [])].filter((f) => !host.fileExists(f))
  for (const f of missing) {
    notes.push(f === config
      ? `${config} does not exist yet: write it before the first start (docs/services.md shows one${kind === 'hub' ? '; {} gives the defaults' : ''})`
      : `${tokenFile} does not exist yet: put the device token in it (one line), owned by root, mode 0600 (docs/services.md)`)
  }
  // Not started while its files are missing: it would only fail, restart and give up.
  const enable = ['systemctl', 'enable', ...(missing.length === 0 ? ['--now'] : []), unitName(kind)]
  const reload = ['systemctl', 'daemon-reload']
  if (!packaging && host.systemdRunning) {
    steps.push({ type: 'run', argv: reload }, { type: 'run', argv: enable })
    if (existing !== undefined && existing !== unit && missing.length === 0) steps.push({ type: 'run', argv: ['systemctl', 'try-restart', unitName(kind)] })
  } else {
    if (!packaging) notes.push('systemd is not running here (no /run/systemd/system): the service is set up but not enabled')
    todo.push(reload.join(' '), enable.join(' '))
  }
  if (missing.length > 0) todo.push(`systemctl start ${unitName(kind)}   # once the files above are in place`)
  return { steps, todo, notes }
}

export interface UninstallOptions {
  readonly kind: ServiceKind
  readonly unitDir?: string
}

export function uninstallPlan(o: UninstallOptions, host: Host): Plan {
  const unitDir = resolve(o.unitDir ?? DEFAULT_UNIT_DIR)
  const packaging = o.unitDir !== undefined
  const unitPath = join(unitDir, unitName(o.kind))
  if (!packaging && !host.isRoot) {
    throw new RollcallError('FORBIDDEN', `removing ${unitPath} needs root: run it with sudo (or pass --unit-dir DIR, or --dry-run)`)
  }
  if (!host.fileExists(unitPath)) throw new RollcallError('NOT_FOUND', `there is no ${unitPath} to remove`)
  const steps: Step[] = []
  const todo: string[] = []
  const live = !packaging && host.systemdRunning
  // Stopped and disabled while systemd still knows the unit; with --unit-dir that was the operator's part, before.
  if (live) steps.push({ type: 'run', argv: ['systemctl', 'disable', '--now', unitName(o.kind)] })
  steps.push({ type: 'remove', path: unitPath })
  if (live) steps.push({ type: 'run', argv: ['systemctl', 'daemon-reload'] })
  else todo.push('systemctl daemon-reload')
  const notes = [
    ...(live ? [] : [`systemd did not stop the service here; if it still runs: systemctl stop ${unitName(o.kind)}`]),
    `kept: the data in ${stateDir(o.kind)} (${o.kind === 'agent' ? 'the ledger: unsent telemetry and jobs' : 'the database, the admin token, tls/'}), /etc/rollcall and the user ${DEFAULT_USER}`,
    `to remove them too: rm -r ${stateDir(o.kind)}; and once no rollcall service is left: rm -r /etc/rollcall; userdel ${DEFAULT_USER}`,
  ]
  return { steps, todo, notes }
}

function describe(step: Step): string {
  switch (step.type) {
    case 'write': return `write ${step.path}`
    case 'remove': return `remove ${step.path}`
    case 'run': return step.argv.join(' ')
  }
}

/**
 * Carries a plan out, step by step, printing each; stops at the first step
 * that fails. With `dryRun`, prints the unit and the steps and changes nothing.
 */
export function runPlan(plan: Plan, dryRun: boolean, out: (line: string) => void): void {
  for (const step of plan.steps) {
    if (dryRun) {
      if (step.type === 'write') out(`--- ${step.path}\n${step.content}---`)
      out(`would: ${describe(step)}`)
      continue
    }
    switch (step.type) {
      case 'write':
        mkdirSync(dirname(step.path), { recursive: true })
        writeFileSync(step.path, step.content, { mode: 0o644 })
        break
      case 'remove':
        rmSync(step.path)
        break
      case 'run': {
        const [command, ...args] = step.argv
        const r = spawnSync(command!, args, { stdio: ['ignore', 'inherit', 'inherit'] })
        if (r.error !== undefined || r.status !== 0) {
          throw new Error(`${describe(step)} failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`)
        }
        break
      }
    }
    out(`done: ${describe(step)}`)
  }
  for (const n of plan.notes) out(`note: ${n}`)
  if (plan.todo.length > 0) {
    out('then run, as root:')
    for (const t of plan.todo) out(`  ${t}`)
  }
}

export interface ServiceFlags {
  readonly config?: string
  readonly tokenFile?: string
  readonly unitDir?: string
  readonly user?: string
  readonly force?: boolean
  readonly dryRun?: boolean
}

export function serviceInstall(kind: ServiceKind, flags: ServiceFlags): void {
  const host = currentHost()
  // --dry-run shows the plan as root would carry it out, whoever asks.
  const asked = flags.dryRun === true ? { ...host, isRoot: true } : host
  const plan = installPlan({ kind, ...flags }, asked, readFileSync(templatePath(kind), 'utf8'))
  runPlan(plan, flags.dryRun === true, (line) => process.stdout.write(`${line}\n`))
}

export function serviceUninstall(kind: ServiceKind, flags: ServiceFlags): void {
  const host = currentHost()
  const plan = uninstallPlan({ kind, ...(flags.unitDir !== undefined ? { unitDir: flags.unitDir } : {}) }, flags.dryRun === true ? { ...host, isRoot: true } : host)
  runPlan(plan, flags.dryRun === true, (line) => process.stdout.write(`${line}\n`))
}
