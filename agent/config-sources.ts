import { existsSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { configError, resolveWithWarnings, schemaIssues, type AgentConfig, type AgentConfigInput } from './config.js'

/**
 * Where the agent's config comes from. Sources, later wins: defaults < JSON
 * config file < environment (ROLLCALL_TOKEN, ROLLCALL_TOKEN_FILE) < CLI
 * flags; config.ts checks and freezes the merged input. This is the only
 * agent module that looks at the environment, and it only sees the `env`
 * object it is handed.
 *
 * The token (issue #13) comes from the first level that gives one: flags
 * (--token, --token-file), environment (ROLLCALL_TOKEN, ROLLCALL_TOKEN_FILE),
 * config file (token, tokenFile); two at the same level are refused. With
 * none at all, systemd's credential $CREDENTIALS_DIRECTORY/token
 * (LoadCredential=token:FILE) is read when it exists (agent/token-file.ts
 * reads the file).
 */

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** The agent subcommand's flags, as the CLI parser hands them over. */
export interface AgentFlags {
  readonly hub?: string
  /** --ca: the caFile. */
  readonly ca?: string
  readonly id?: string
  readonly token?: string
  /** --token-file: a file holding the token. */
  readonly tokenFile?: string
  readonly data?: string
  readonly config?: string
  /** Checked like the file's logLevel. */
  readonly logLevel?: string
}

export interface LoadAgentConfigInput {
  readonly flags?: AgentFlags
  /** The process environment (pass `process.env`); only ROLLCALL_TOKEN, ROLLCALL_TOKEN_FILE and CREDENTIALS_DIRECTORY are read. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Parsed config file content; when absent and flags.config is set, that file is read. */
  readonly file?: unknown
}

/** What a start (and --check-config) learns from loading the config, beyond the config itself. */
export interface AgentSetup {
  readonly config: AgentConfig
  /** The config file read, absolute; undefined without --config. */
  readonly configFile: string | undefined
  /** Where the token came from, e.g. `file /etc/rollcall/agent.token (--token-file)`; never the token. */
  readonly tokenSource: string
  /** Worth a log line, not a refusal (a token file other users can read). */
  readonly warnings: readonly string[]
}

/** Builds the agent config from CLI flags, environment and config file. */
export function loadAgentConfig(input: LoadAgentConfigInput): AgentConfig {
  return loadAgentSetup(input).config
}

type TokenPick = { readonly token: string; readonly source: string } | { readonly tokenFile: string; readonly source: string; readonly label: string }

/**
 * The token's source, by precedence: flags, environment, config file (two at
 * one level are refused), then systemd's credential when none was given.
 */
function pickToken(flags: AgentFlags, env: Readonly<Record<string, string | undefined>>, file: AgentConfigInput, issues: string[]): TokenPick | undefined {
  const nonEmpty = (v: string | undefined) => (v === '' ? undefined : v)
  const levels = [
    { value: flags.token, path: flags.tokenFile, valueName: '--token', pathName: '--token-file' },
    { value: nonEmpty(env.ROLLCALL_TOKEN), path: nonEmpty(env.ROLLCALL_TOKEN_FILE), valueName: 'ROLLCALL_TOKEN', pathName: 'ROLLCALL_TOKEN_FILE' },
    { value: file.token, path: file.tokenFile, valueName: '"token" in the config file', pathName: '"tokenFile" in the config file' },
  ]
  for (const l of levels) {
    if (l.value !== undefined && l.path !== undefined) {
      issues.push(`token: both ${l.valueName} and ${l.pathName} are given; keep one (the file keeps the token out of sight)`)
      return undefined
    }
    if (l.value !== undefined) return { token: l.value, source: l.valueName }
    if (l.path !== undefined) return { tokenFile: resolve(l.path), source: `file ${resolve(l.path)} (${l.pathName})`, label: l.pathName }
  }
  const credentials = nonEmpty(env.CREDENTIALS_DIRECTORY)
  if (credentials !== undefined && existsSync(join(credentials, 'token'))) {
    const path = join(credentials, 'token')
    return { tokenFile: path, source: `file ${path} (systemd credential "token")`, label: 'the systemd credential "token"' }
  }
  return undefined
}

/** loadAgentConfig, also returning where the token came from and what deserves a warning. */
export function loadAgentSetup({ flags = {}, env = {}, file }: LoadAgentConfigInput): AgentSetup {
  let fileValue: unknown = file
  let source = 'flags'
  if (fileValue === undefined && flags.config !== undefined) {
    source = flags.config
    try {
      fileValue = JSON.parse(readFileSync(flags.config, 'utf8'))
    } catch (err) {
      throw configError([`config file ${flags.config}: ${(err as Error).message}`], source)
    }
  } else if (fileValue !== undefined) {
    source = 'config file'
  }
  if (fileValue !== undefined && (typeof fileValue !== 'object' || fileValue === null || Array.isArray(fileValue))) {
    throw configError(['the config file must hold a JSON object'], source)
  }
  let fromFile = (fileValue ?? {}) as Record<string, unknown>
  const issues = schemaIssues(fromFile)
  if (issues.length > 0) throw configError(issues, source)
  // A relative path in a config file is relative to that file (not to the
  // directory the agent happens to start in: systemd starts it in /).
  for (const key of ['handlersModule', 'caFile', 'certFile', 'keyFile', 'tokenFile', 'dataDir'] as const) {
    const path = fromFile[key]
    if (typeof path === 'string' && flags.config !== undefined && !isAbsolute(path)) {
      fromFile = { ...fromFile, [key]: resolve(dirname(flags.config), path) }
    }
  }
  const { token: _token, tokenFile: _tokenFile, ...rest } = fromFile as AgentConfigInput
  const pickIssues: string[] = []
  const pick = pickToken(flags, env, fromFile, pickIssues)
  const input: AgentConfigInput = {
    ...rest,
    ...(pick === undefined ? {} : 'token' in pick ? { token: pick.token } : { tokenFile: pick.tokenFile }),
    ...stripUndefined({ hub: flags.hub, caFile: flags.ca, id: flags.id, dataDir: flags.data, logLevel: flags.logLevel as AgentConfigInput['logLevel'] }),
  }
  const { config, warnings } = resolveWithWarnings(input, source, pickIssues, pick !== undefined && 'label' in pick ? pick.label : undefined)
  return Object.freeze({
    config,
    configFile: flags.config === undefined ? undefined : resolve(flags.config),
    tokenSource: pick?.source ?? 'none',
    warnings: Object.freeze(warnings),
  })
}
