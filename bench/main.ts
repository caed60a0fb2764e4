/**
 * `npm run bench -- <name> [options]`. Each benchmark prints its figures side
 * by side with a baseline measured in the same run, because this machine is
 * small and noisy; see docs/benchmarks.md for results and how to read them.
 */
import { parseArgs } from 'node:util'
import { runCommandsBench } from './commands.js'
import { runFlashWritesBench } from './flash-writes.js'
import { runIdleAgentBench } from './idle-agent.js'
import { runIngestBench } from './ingest.js'
import { runClusterIngestBench } from './ingest-cluster.js'
import { runJobsBench } from './jobs.js'
import { runCommitSyncBench } from './commit-sync.js'
import { runStoresBench } from './telemetry-stores.js'
import { runRulesBench } from './rules.js'
import { runFleetCapacityBench } from './fleet-capacity.js'
import { runAccountsBench } from './accounts.js'
import { runStormBench } from './storm.js'
import { runLiveBench } from './live.js'
import { runOnlineBench } from './online.js'
import { runSoakAgentBench } from './soak-agent.js'
import { runSoakHubBench } from './soak-hub.js'
import { parseDurationMs } from '../common/duration.js'
import { HUB_DEFAULTS } from '../hub/config.js'

const USAGE = `usage: npm run bench -- ingest [--devices 200] [--sensors 100] [--interval-ms 200] [--warmup 5] [--seconds 20] [--idle-agent-seconds 60] [--rules 100]
       npm run bench -- ingest --cluster [--devices 200] [--sensors 100] [--interval-ms 200] [--warmup 5] [--seconds 20] [--thin: one sample per message, --interval-ms 1000 by default]
       npm run bench -- idle-agent [--agents 3] [--seconds 60] [--warmup 15] [--interval-ms 10000] [--extra-sensors 0] [--tls]
       npm run bench -- flash-writes [--seconds 600] [--warmup 40] [--offline-seconds 120] [--scenarios default,3x3s,1x1s]
       npm run bench -- jobs [--jobs 200000] [--batch 500] [--agents 1000] [--rounds 3]
       npm run bench -- commands [--agents 1000] [--commands 2000] [--warmup 200] [--rounds 3]
       npm run bench -- rules [--rules 100] [--devices 100] [--samples 100] [--warmup 3] [--seconds 10] [--rounds 4] [--reactions 200] [--flush-delay-ms 20]
       npm run bench -- commit-sync [--devices 8000] [--rate 8000] [--seconds 15] [--rounds 2] [--flush-delay-ms 20]
       npm run bench -- stores [--devices 2000] [--batch 5] [--in-flight 4] [--warmup 3] [--seconds 10] [--rounds 2]
       npm run bench -- fleet [--steps 1000,2000,...,8000] [--warmup 5] [--seconds 15] [--per-process 2500] [--lag-limit-ms 1000] [--thin [--hub embedded,mosquitto] [--baseline mosquitto,aedes|none] [--overload 2]] [--all-steps] [--hub-cpu-prof DIR]
       npm run bench -- storm [--devices 10000] [--interval-ms 2000] [--seconds 20] [--outage 5s] [--per-process 2500] [--connect-rate N] [--hub-cpu-prof DIR]
       npm run bench -- live [--steps 1000,5000,20000] [--clients 10] [--rounds 20]
       npm run bench -- online [--devices 2000]
       npm run bench -- accounts [--steps 100,200,400,300]
       npm run bench -- soak-agent [--minutes 30] [--outage-every 3m] [--outage 60s] [--csv FILE]
       npm run bench -- soak-hub [--agents 500] [--minutes 30] [--outage-every 3m] [--outage 60s] [--csv FILE]`

/** `--baseline`: which baselines run after rollcall; with --thin, Mosquitto's and bare aedes's by default. */
function baselines(value: string | undefined, thin: boolean): Array<'mosquitto' | 'aedes'> {
  if (value === 'none') return []
  if (value === undefined) return thin ? ['mosquitto', 'aedes'] : []
  return value.split(',').map((x) => {
    if (x !== 'mosquitto' && x !== 'aedes') throw new Error(`--baseline is a list of mosquitto and aedes, or none; got "${x}"\n${USAGE}`)
    return x
  })
}

/** `--hub`: which of rollcall's set-ups the fleet bench runs: the embedded broker (default), and/or the hub on Mosquitto. */
function hubKinds(value: string | undefined): Array<'embedded' | 'mosquitto'> {
  if (value === undefined) return ['embedded']
  return value.split(',').map((x) => {
    if (x !== 'embedded' && x !== 'mosquitto') throw new Error(`--hub is a list of embedded and mosquitto; got "${x}"\n${USAGE}`)
    return x
  })
}

/** `--steps`: a list of fleet sizes, each a whole number above 0; `example` goes in the error. */
function fleetSizes(value: string, example: string): number[] {
  return value.split(',').map((x) => {
    const n = Number(x)
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--steps is a list of fleet sizes, e.g. ${example}; got "${x}"`)
    return n
  })
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      'devices': { type: 'string' },
      'sensors': { type: 'string', default: '100' },
      'interval-ms': { type: 'string' },
      'warmup': { type: 'string' },
      'commands': { type: 'string', default: '2000' },
      'rules': { type: 'string' },
      'reactions': { type: 'string' },
      'flush-delay-ms': { type: 'string' },
      'samples': { type: 'string', default: '100' },
      'seconds': { type: 'string' },
      'agents': { type: 'string' },
      'idle-agent-seconds': { type: 'string', default: '60' },
      'jobs': { type: 'string', default: '200000' },
      'batch': { type: 'string' },
      'rounds': { type: 'string' },
      'steps': { type: 'string' },
      'per-process': { type: 'string' },
      'lag-limit-ms': { type: 'string' },
      'thin': { type: 'boolean' },
      'hub': { type: 'string' },
      'hub-cpu-prof': { type: 'string' },
      'baseline': { type: 'string' },
      'all-steps': { type: 'boolean' },
      'overload': { type: 'string' },
      'clients': { type: 'string', default: '10' },
      'offline-seconds': { type: 'string' },
      'extra-sensors': { type: 'string' },
      'tls': { type: 'boolean' },
      'scenarios': { type: 'string' },
      'minutes': { type: 'string' },
      'outage-every': { type: 'string' },
      'outage': { type: 'string' },
      'csv': { type: 'string' },
      'connect-rate': { type: 'string' },
      'rate': { type: 'string' },
      'in-flight': { type: 'string' },
      'cluster': { type: 'boolean' },
    },
  })
  const num = (name: keyof typeof values, fallback?: string): number => {
    const n = Number(values[name] ?? fallback)
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got "${values[name]}"\n${USAGE}`)
    return n
  }
  const duration = (name: 'outage-every' | 'outage', fallback: string): number => {
    const ms = parseDurationMs(values[name] ?? fallback)
    if (ms === undefined || ms <= 0) throw new Error(`--${name} is a duration such as 60s or 3m, got "${values[name]}"\n${USAGE}`)
    return ms
  }
  const overloadFactor = (text: string, thin: boolean): number => {
    const f = Number(text)
    if (!Number.isInteger(f) || f < 2 || f > 10) throw new Error(`--overload is how many times the sample rate to offer, an integer from 2 to 10; got "${text}"\n${USAGE}`)
    if (!thin) throw new Error(`--overload runs with --thin: its devices switch rate on a signal\n${USAGE}`)
    return f
  }
  /** Whole numbers from 0 (none) up: how many reaction crossings to time; the window in ms. */
  const count = (name: 'reactions' | 'flush-delay-ms', fallback: string, max: number): number => {
    const n = Number(values[name] ?? fallback)
    if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`--${name} must be a whole number from 0 to ${max}, got "${values[name]}"\n${USAGE}`)
    return n
  }
  const rulesOptions = () => ({
    rules: num('rules', '100'), devices: num('devices', '100'), samplesPerMessage: num('samples'), warmupS: num('warmup', '3'), measureS: num('seconds', '10'), rounds: num('rounds', '4'),
    reactions: count('reactions', '200', 10_000), flushDelayMs: count('flush-delay-ms', String(HUB_DEFAULTS.flushDelayMs), 1000),
  })
  switch (positionals[0]) {
    case 'ingest':
      if (values.cluster === true) {
        // The embedded hub, then 1 and 2 hubs on Mosquitto + PostgreSQL, with the same fleet (issue #18).
        await runClusterIngestBench({
          devices: num('devices', '200'), sensors: values.thin === true ? 1 : num('sensors'), intervalMs: num('interval-ms', values.thin === true ? '1000' : '200'),
          warmupS: num('warmup', '5'), measureS: num('seconds', '20'), thin: values.thin === true,
        })
        return
      }
      await runIngestBench({
        devices: num('devices', '200'), sensors: num('sensors'), intervalMs: num('interval-ms', '200'),
        warmupS: num('warmup', '5'), measureS: num('seconds', '20'), idleAgentS: num('idle-agent-seconds'),
      })
      // With --rules N, the same run goes on with the rules comparison (issue #17: "ingest with 100 rules
      // stores at least 90% of what it stores with none"): its own hub and its 100 MQTT.js devices, as
      // `bench -- rules` (--devices counts the agents above); --warmup and --seconds apply to both.
      if (values.rules !== undefined) {
        process.stdout.write('\n')
        await runRulesBench({ ...rulesOptions(), devices: 100 })
      }
      return
    case 'fleet':
      await runFleetCapacityBench({
        steps: fleetSizes(values.steps ?? '1000,2000,3000,4000,5000,6000,7000,8000', '1000,2000,5000'),
        warmupS: num('warmup', '5'), measureS: num('seconds', '15'), perProcess: num('per-process', '2500'), lagLimitMs: num('lag-limit-ms', '1000'), thin: values.thin === true,
        ...(values['hub-cpu-prof'] === undefined ? {} : { hubCpuProfDir: values['hub-cpu-prof'] }),
        baselines: baselines(values.baseline, values.thin === true),
        hubs: hubKinds(values.hub),
        allSteps: values['all-steps'] === true,
        ...(values.overload === undefined ? {} : { overload: overloadFactor(values.overload, values.thin === true) }),
      })
      return
    case 'storm':
      await runStormBench({
        devices: num('devices', '10000'), intervalMs: num('interval-ms', '2000'), steadyS: num('seconds', '20'), downS: duration('outage', '5s') / 1000,
        perProcess: num('per-process', '2500'), timeoutS: 180,
        ...(values['connect-rate'] === undefined ? {} : { connectRatePerSec: num('connect-rate') }),
        ...(values['hub-cpu-prof'] === undefined ? {} : { hubCpuProfDir: values['hub-cpu-prof'] }),
      })
      return
    case 'jobs':
      await runJobsBench({ jobs: num('jobs'), batch: num('batch', '500'), agents: num('agents', '1000'), rounds: num('rounds', '3') })
      return
    case 'commands':
      await runCommandsBench({ agents: num('agents', '1000'), commands: num('commands'), warmup: num('warmup', '200'), rounds: num('rounds', '3') })
      return
    case 'rules':
      await runRulesBench(rulesOptions())
      return
    case 'commit-sync':
      await runCommitSyncBench({
        devices: num('devices', '8000'), rate: num('rate', '8000'), seconds: num('seconds', '15'),
        rounds: num('rounds', '2'), flushDelayMs: num('flush-delay-ms', '20'),
      })
      return
    case 'stores':
      await runStoresBench({ devices: num('devices', '2000'), batch: num('batch', '5'), inFlight: num('in-flight', '4'), warmup: num('warmup', '3'), seconds: num('seconds', '10'), rounds: num('rounds', '2') })
      return
    case 'online':
      await runOnlineBench({ devices: num('devices', '2000') })
      return
    case 'accounts':
      await runAccountsBench({ steps: fleetSizes(values.steps ?? '100,200,400,300', '100,200,400') })
      return
    case 'live':
      await runLiveBench({
        devices: fleetSizes(values.steps ?? '1000,5000,20000', '1000,5000'),
        clients: num('clients'), rounds: num('rounds', '20'),
      })
      return
    case 'idle-agent':
      await runIdleAgentBench({
        agents: num('agents', '3'), seconds: num('seconds', '60'), warmupS: num('warmup', '15'),
        intervalMs: values['interval-ms'] === undefined ? undefined : num('interval-ms'),
        extraSensors: values['extra-sensors'] === undefined ? undefined : Number(values['extra-sensors']),
        tls: values.tls === true,
      })
      return
    case 'flash-writes':
      await runFlashWritesBench({
        seconds: num('seconds', '600'), warmupS: num('warmup', '40'),
        offlineS: values['offline-seconds'] === '0' ? 0 : num('offline-seconds', '120'),
        scenarios: values.scenarios?.split(','),
      })
      return
    case 'soak-agent':
      await runSoakAgentBench({
        minutes: num('minutes', '30'), outageEveryMs: duration('outage-every', '3m'), outageMs: duration('outage', '60s'),
        sensors: 3, sampleIntervalMs: 1000, csvPath: values.csv,
      })
      return
    case 'soak-hub':
      await runSoakHubBench({ agents: num('agents', '500'), minutes: num('minutes', '30'), outageEveryMs: duration('outage-every', '3m'), outageMs: duration('outage', '60s'), csvPath: values.csv })
      return
    default:
      throw new Error(`unknown benchmark "${positionals[0] ?? ''}"\n${USAGE}`)
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
