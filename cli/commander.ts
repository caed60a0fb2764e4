import type * as C from 'commander'
import { requireCjs } from '../common/cjs.js'

/** commander, loaded with require() (see common/cjs.ts); every CLI module takes it from here. */
const commander = requireCjs('commander') as typeof C

export const Command = commander.Command
export type Command = C.Command
export const Option = commander.Option
export type Option = C.Option
export const InvalidArgumentError = commander.InvalidArgumentError
export const CommanderError = commander.CommanderError
