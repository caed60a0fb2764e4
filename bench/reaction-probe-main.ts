import { probeReactions, type ReactionProbeSpec } from './reaction-probe.js'

/** `node reaction-probe-main.js SPEC_JSON`: runs one reaction probe (reaction-probe.ts) and prints its figures as one JSON line. */
async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as ReactionProbeSpec
  const figures = await probeReactions(spec)
  process.stdout.write(`${JSON.stringify(figures)}\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`reaction-probe: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
