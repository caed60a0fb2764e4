import { resolve } from 'node:path'
import { createLogger } from '../common/logger.js'
import { checkDatabaseUrl, ConfigError, readDatabasePassword } from '../hub/config.js'
import { InvalidArgumentError } from './commander.js'
import { out, printJson, table } from './output.js'

export interface MigrateFlags {
  readonly from?: string
  readonly to?: string
  readonly toPasswordFile?: string
  readonly withoutRules?: boolean
  readonly json?: boolean
}

/** `rollcall migrate --from DATA --to postgres://...` (hub/migrate.ts). */
export async function runMigrate(flags: MigrateFlags): Promise<void> {
  if (flags.from === undefined) throw new InvalidArgumentError('--from is the data dir of the hub to move (the one it runs with --data)')
  if (flags.to === undefined) throw new InvalidArgumentError('--to is the PostgreSQL database to move it to: postgres://USER@HOST:5432/DB (new and empty)')
  let password: string | undefined
  try {
    checkDatabaseUrl(flags.to, { option: '--to', passwordFile: '--to-password-file' })
    password = readDatabasePassword(flags.toPasswordFile === undefined ? undefined : resolve(flags.toPasswordFile))
  } catch (err) {
    if (err instanceof ConfigError) throw new InvalidArgumentError(err.message.replace('databasePasswordFile', '--to-password-file'))
    throw err
  }
  const { migrateToPostgres } = await import('../hub/migrate.js')
  const report = await migrateToPostgres({
    dataDir: resolve(flags.from), url: flags.to, password, withoutRules: flags.withoutRules === true,
    logger: createLogger({ level: 'warn', destination: 2 }),
  }).catch((err: unknown) => {
    // A refused connection tried every address of the host: say each, not Node's empty summary.
    if (err instanceof AggregateError) throw new Error(`cannot reach the database: ${err.errors.map((e) => (e as Error).message).join('; ')}`)
    throw err
  })
  if (flags.json === true) {
    printJson(report)
    return
  }
  const total = report.tables.reduce((n, t) => n + t.rows, 0)
  out(`moved ${total.toLocaleString('en-US')} rows from ${resolve(flags.from)} in ${(report.ms / 1000).toFixed(1)} s, in one transaction, each table counted on both sides:`)
  out(table([['TABLE', 'ROWS'], ...report.tables.map((t) => [t.table, t.rows.toLocaleString('en-US')])]))
  if (report.commandsSettled > 0) out(`${report.commandsSettled} command${report.commandsSettled === 1 ? '' : 's'} the hub left in flight recorded as ended by its restart (HUB_RESTART), as its next start would have`)
  if (report.rulesLeft > 0) out(`${report.rulesLeft} rule${report.rulesLeft === 1 ? '' : 's'} left in the file: rules do not run on PostgreSQL yet`)
  if (report.firingsLeft > 0) out(`${report.firingsLeft} rule firing${report.firingsLeft === 1 ? '' : 's'} left in the file (their commands and jobs moved, naming their rule)`)
  out(`next: start the hub with --database ${flags.to}${flags.toPasswordFile ? ` --database-password-file ${flags.toPasswordFile}` : ''} (docs/scale-out.md, "Moving over"); the file in ${resolve(flags.from)} is unchanged`)
}
