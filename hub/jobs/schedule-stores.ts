import type pg from 'pg'
import type { Db } from '../../common/sqlite.js'

/**
 * Where the schedules are kept (schedules.ts runs them): the hub's SQLite
 * file, or a PostgreSQL shared by several hubs. Ids are never reused on
 * either, because a job names the schedule and tick that made it and a new
 * schedule must not inherit a removed one's ticks.
 */

export interface ScheduleRow { readonly id: number; readonly name: string; readonly cron: string; readonly timezone: string | null; readonly template: string; readonly created_at: number }

export interface ScheduleStore {
  /** Other hubs change these rows too: the schedules are read again now and then. */
  readonly shared: boolean
  /** The new row; undefined when a schedule of that name exists. */
  insert(row: Omit<ScheduleRow, 'id'>): Promise<ScheduleRow | undefined>
  /** By name. */
  all(): Promise<ScheduleRow[]>
  byName(name: string): Promise<ScheduleRow | undefined>
  byId(id: number): Promise<ScheduleRow | undefined>
  remove(id: number): Promise<void>
}

export function sqliteScheduleStore(db: Db): ScheduleStore {
  const s = {
    insert: db.prepare<[string, string, string | null, string, number], ScheduleRow>(
      'INSERT INTO schedules (name, cron, timezone, template, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING *'),
    all: db.prepare<[], ScheduleRow>('SELECT * FROM schedules ORDER BY name'),
    byName: db.prepare<[string], ScheduleRow>('SELECT * FROM schedules WHERE name = ?'),
    byId: db.prepare<[number], ScheduleRow>('SELECT * FROM schedules WHERE id = ?'),
    remove: db.prepare<[number]>('DELETE FROM schedules WHERE id = ?'),
  }
  return {
    shared: false,
    insert: (r) => Promise.resolve(s.insert.get(r.name, r.cron, r.timezone, r.template, r.created_at)),
    all: () => Promise.resolve(s.all.all()),
    byName: (name) => Promise.resolve(s.byName.get(name)),
    byId: (id) => Promise.resolve(s.byId.get(id)),
    remove: (id) => { s.remove.run(id); return Promise.resolve() },
  }
}

const COLS = 'id, name, cron, timezone, template, created_at'

export function postgresScheduleStore(pool: pg.Pool): ScheduleStore {
  const one = async (sql: string, params: unknown[]) => (await pool.query<ScheduleRow>(sql, params)).rows[0]
  return {
    shared: true,
    insert: (r) => one(`INSERT INTO schedules (name, cron, timezone, template, created_at) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (name) DO NOTHING RETURNING ${COLS}`, [r.name, r.cron, r.timezone, r.template, r.created_at]),
    all: async () => (await pool.query<ScheduleRow>(`SELECT ${COLS} FROM schedules ORDER BY name`)).rows,
    byName: (name) => one(`SELECT ${COLS} FROM schedules WHERE name = $1`, [name]),
    byId: (id) => one(`SELECT ${COLS} FROM schedules WHERE id = $1`, [id]),
    remove: async (id) => { await pool.query('DELETE FROM schedules WHERE id = $1', [id]) },
  }
}
