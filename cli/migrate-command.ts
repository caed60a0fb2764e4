import { resolve } from 'node:path'
import { createLogger } from '../common/logger.js'
import { ConfigError, readDatabasePassword } from '../hub/config.js'
import { InvalidArgumentError } from './commander.js'
import { out, printJson, table } from './output.js'

export interface MigrateFlags {
  readonly from?: string
  readonly to?: string
  readonly toPasswordFile?: string
  readonly withoutRules?: boolean
  readonly json?: boolean
}

/** `rollcall migrate --from DATA --to postgres://...` (hub/storage/migrate.ts). */
export async function runMigrate(flags: MigrateFlags): Promise<void> {
  if (flags.from === undefined) throw new InvalidArgumentError('--from is the data dir of the hub to move (the one it runs with --data)')
  if (flags.to === undefined) throw new InvalidArgumentError('--to is the PostgreSQL database to move it to: postgres://USER@HOST:5432/DB (new and empty)')
  if (!/^postgres(ql)?:\/\/\S*$/.test(flags.to)) throw new InvalidArgumentError(`--to must be a URL starting with postgres://, e.g. postgres://USER@HOST:5432/DB; got "${flags.to}"`)
  let password: string | undefined
  try {
    password = readDatabasePassword(flags.toPasswordFile === undefined ? undefined : resolve(flags.toPasswordFile))
  } catch (err) {
    if (err instanceof ConfigError) throw new InvalidArgumentError(err.message.replace('databasePasswordFile', '--to-password-file'))
    throw err
  }
  const { migrateToPostgres } = await import('../hub/storage/migrate.js')
  const report = await migrateToPostgres({
    dataDir: resolve(flags.from), url: flags.to, password, withoutRules: flags.withoutRules === true,
    logger: createLogger({ level: 'warn', destination: 2 }),
  })
  if (flags.json === true) {
    printJson(report)
    return
  }
  const total = report.tables.reduce((n, t) => n + t.rows, 0)
  out(`moved ${total.toLocaleString('en-US')} rows from ${resolve(flags.from)} in ${(report.ms / 1000).toFixed(1)} s, in one transaction, each table counted on both sides:`)
  out(table([['TABLE', 'ROWS'], ...report.tables.map((t) => [t.table, t.rows.toLocaleString('en-US')])]))
  if (report.rulesLeft > 0) out(`${report.rulesLeft} rule${report.rulesLeft === 1 ? '' : 's'} left in the file: rules do not run on PostgreSQL yet`)
  out(`next: start the hub with --database ${flags.to}${flags.toPasswordFile ? ` --database-password-file ${flags.toPasswordFile}` : ''} (docs/scale-out.md, "Moving over"); the file in ${resolve(flags.from)} is unchanged`)
}
