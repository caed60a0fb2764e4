import type * as P from 'pino'
import { requireCjs } from './cjs.js'

/** pino, loaded with require() (see common/cjs.ts). */
export const pino = (requireCjs('pino') as typeof P).pino
