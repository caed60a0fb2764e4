import { createRequire } from 'node:module'

/**
 * require() for the CommonJS packages the agent and hub load at start (pino,
 * better-sqlite3, commander, MQTT.js). An ESM `import` of a CommonJS module
 * makes Node read and lex its source, and that of every module it
 * re-exports, to find named exports, and keeps what that allocated: measured
 * in an idle agent process, 0.4–0.9 MB of RSS per package (and ~6 MB for
 * MQTT.js, whose entry re-exports its whole tree). require() loads the same
 * module without the lexing. Types still come from `import type`.
 */
export const requireCjs = createRequire(import.meta.url)
