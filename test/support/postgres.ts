import { HAVE_POSTGRES } from '../../bench/postgres-cluster.js'

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
