/**
 * `npm run generate`: writes the validator modules the agent uses instead of
 * compiling TypeBox schemas at start-up. Each schema stays single-source
 * (protocol/messages.ts, agent/config-schema.ts); this turns it into a module
 * of plain check functions with TypeBox's own code generator (the same code
 * `Compile()` would evaluate at run time), plus the schema as JSON for
 * explaining failures. The generated modules import only `typebox/guard`, so
 * the agent process never loads TypeBox's builder or compiler (~25 MB RSS).
 *
 * test/protocol.validators.test.ts regenerates in memory and fails when a
 * committed module is stale; nobody edits them by hand.
 */
import { writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { TSchema } from 'typebox'
import { Build } from 'typebox/schema'
import { AgentConfigFile } from '../agent/config-schema.js'
import { CommandRequest, CommandResponse, EventBatch, JobsAck, JobsBatch, JobsNotify, JobsPull, JobsUpdate, StateMessage, TelemetryAck, TelemetryBatch } from '../protocol/messages.js'

interface ValidatorSpec {
  /** The schema's name; the module exports `${name}Validator`. */
  readonly name: string
  /** The static type it checks, exported by the module's `typeFrom`. */
  readonly type: string
  readonly schema: TSchema
}

interface ModuleSpec {
  /** Relative to the repository root. */
  readonly path: string
  /** Where the schemas and their static types live, relative to the module. */
  readonly typeFrom: string
  readonly source: string
  readonly validators: readonly ValidatorSpec[]
}

export const GENERATED_MODULES: readonly ModuleSpec[] = [
  {
    path: 'protocol/validators.generated.ts',
    typeFrom: './messages.js',
    source: 'protocol/messages.ts',
    validators: [
      { name: 'StateMessage', type: 'StateMessage', schema: StateMessage },
      { name: 'TelemetryBatch', type: 'TelemetryBatch', schema: TelemetryBatch },
      { name: 'EventBatch', type: 'EventBatch', schema: EventBatch },
      { name: 'TelemetryAck', type: 'TelemetryAck', schema: TelemetryAck },
      { name: 'JobsNotify', type: 'JobsNotify', schema: JobsNotify },
      { name: 'JobsPull', type: 'JobsPull', schema: JobsPull },
      { name: 'JobsBatch', type: 'JobsBatch', schema: JobsBatch },
      { name: 'JobsUpdate', type: 'JobsUpdate', schema: JobsUpdate },
      { name: 'JobsAck', type: 'JobsAck', schema: JobsAck },
      { name: 'CommandRequest', type: 'CommandRequest', schema: CommandRequest },
      { name: 'CommandResponse', type: 'CommandResponse', schema: CommandResponse },
    ],
  },
  {
    path: 'agent/config-validator.generated.ts',
    typeFrom: './config-schema.js',
    source: 'agent/config-schema.ts',
    validators: [{ name: 'AgentConfigFile', type: 'AgentConfigInput', schema: AgentConfigFile }],
  },
]

/** The runtime modules a generated check may use; anything else would defeat the purpose. */
const RUNTIME_IMPORTS = {
  Guard: `import { Guard } from 'typebox/guard'`,
} as const

function externalLiteral(variable: unknown, where: string): string {
  // Build() externalises what cannot be inlined; for our schemas that is the
  // RegExp of each `pattern`, whose literal form round-trips exactly.
  if (variable instanceof RegExp) return String(variable)
  throw new Error(`${where}: cannot serialise an external of type ${typeof variable}; extend scripts/generate-validators.ts`)
}

/** `{ Check, schema }` for one schema, as a TypeScript expression (the check is TypeBox's generated code). */
function validatorSource(v: ValidatorSpec, used: Set<keyof typeof RUNTIME_IMPORTS>): string {
  const build = Build(v.schema)
  if (build.UseUnevaluated()) throw new Error(`${v.name}: unevaluated* keywords need typebox/schema at run time; not supported here`)
  const functions = build.Functions()
  const body = functions.join('\n')
  if (/\bHashing\b|\bCheckContext\b/.test(body)) throw new Error(`${v.name}: the generated check needs more of TypeBox than typebox/guard`)
  if (/\bGuard\./.test(body)) used.add('Guard')
  const { identifier, variables } = build.External()
  const externals = variables.map((x, i) => externalLiteral(x, `${v.name} external ${i}`))
  const schemaJson = JSON.stringify(v.schema, null, 2)
  if (JSON.stringify(JSON.parse(schemaJson)) !== JSON.stringify(v.schema)) throw new Error(`${v.name}: the schema does not survive JSON`)
  return [
    `export const ${v.name}Validator: Validator<${v.type}> = {`,
    `  Check: (() => {`,
    `    const ${identifier} = [${externals.join(', ')}]`,
    ...functions.map((f) => `    ${f};`),
    `    return (value) => ${build.Entry()}`,
    `  })(),`,
    `  schema: ${schemaJson.replaceAll('\n', '\n  ')},`,
    `}`,
  ].join('\n')
}

/** The text of one generated module. */
export function generateModule(spec: ModuleSpec): string {
  const used = new Set<keyof typeof RUNTIME_IMPORTS>()
  const validators = spec.validators.map((v) => validatorSource(v, used))
  const typeNames = [...new Set(spec.validators.map((v) => v.type))].join(', ')
  return [
    `/* eslint-disable */`,
    `// @ts-nocheck -- generated code; its exports are typed by the annotations below.`,
    `// Generated by scripts/generate-validators.ts from ${spec.source}. Do not edit:`,
    `// change the schema and run \`npm run generate\`. A test fails when this file is stale.`,
    ...[...used].sort().map((name) => RUNTIME_IMPORTS[name]),
    `import type { Validator } from '${spec.path.includes('/') ? '../' : './'}common/validator.js'`,
    `import type { ${typeNames} } from '${spec.typeFrom}'`,
    '',
    validators.join('\n\n'),
    '',
  ].join('\n')
}

export function generateAll(): Array<{ path: string; text: string }> {
  return GENERATED_MODULES.map((m) => ({ path: m.path, text: generateModule(m) }))
}

// npm runs scripts from the package root, so paths are relative to the working directory.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  for (const { path, text } of generateAll()) {
    writeFileSync(resolve(path), text)
    process.stdout.write(`wrote ${path}\n`)
  }
}
