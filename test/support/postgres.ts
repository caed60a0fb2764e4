import { afterAll, afterEach, beforeAll } from 'vitest'
import { HAVE_POSTGRES, startPostgres, type PostgresCluster } from '../../bench/postgres-cluster.js'
import { tempDir } from './hub.js'

export { startPostgres, type PostgresCluster } from '../../bench/postgres-cluster.js'

/**
 * The tests of the hub on PostgreSQL (issue #18) run a private cluster made
 * in a temp dir. CI installs PostgreSQL (.ci/run), and there a missing one is
 * a failure; on a developer's machine without it those tests are skipped with
 * this reason.
 */
export const SKIP_WITHOUT_POSTGRES = !HAVE_POSTGRES && process.env.CI !== 'true'
if (SKIP_WITHOUT_POSTGRES) {
  process.stderr.write('PostgreSQL (initdb, postgres) not found: the PostgreSQL tests are skipped (install it: apt-get install postgresql)\n')
}

/**
 * One private cluster for a test file: started before its tests (unless
 * PostgreSQL is missing and they are skipped), stopped after them.
 * `freshDatabase` makes a new database on it for a test; what a test opens
 * goes on `closers`, ended after it, the last opened first.
 */
export function privatePostgres(name: string): { freshDatabase: () => Promise<string>; closers: Array<() => Promise<void>> } {
  const dir = tempDir(name)
  let cluster: PostgresCluster | undefined
  let databases = 0
  const closers: Array<() => Promise<void>> = []
  beforeAll(async () => {
    if (!SKIP_WITHOUT_POSTGRES) cluster = await startPostgres(dir.dir)
  }, 60_000)
  afterEach(async () => {
    while (closers.length) await closers.pop()!()
  })
  afterAll(async () => {
    await cluster?.stop()
    dir.remove()
  })
  return {
    closers,
    freshDatabase: () => {
      if (!cluster) throw new Error('the private PostgreSQL cluster is not running (skipped, or it did not start)')
      return cluster.database(`db${++databases}`)
    },
  }
}
