import { readFileSync } from 'node:fs'
import { InvalidArgumentError } from './commander.js'
import { resolveAdminTarget } from './admin-config.js'
import { call } from './http.js'
import { hint } from './invocation.js'
import { clip, localTime, localTimeMs, out, printJson, table } from './output.js'
import { intFlag } from './parse.js'
import type { RuleTestReport } from '../hub/api/rules.js'
import type { FiringChain } from '../hub/api/services.js'
import type { RuleDetail, RuleView } from '../hub/rules/rules.js'
import type { AdminOpts } from './main.js'

/**
 * `rollcall rule ...` (issue #17, docs/rules.md), over the hub's HTTP API. A
 * rule is JSON (a file, or - for stdin): it has nested conditions and a list
 * of actions, which flags would spell worse. The hub checks it and says
 * what to fix.
 */

const enc = encodeURIComponent

function readSpec(file: string): unknown {
  let text: string
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8')
  } catch (err) {
    throw new InvalidArgumentError(`cannot read the rule from ${file === '-' ? 'stdin' : file}: ${(err as Error).message}`)
  }
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    throw new InvalidArgumentError(`the rule in ${file === '-' ? 'stdin' : file} is not JSON: ${(err as Error).message}`)
  }
}

function when(r: RuleView): string {
  if ('telemetry' in r.when) {
    const t = r.when.telemetry
    const hold = t.forMs !== undefined ? ` for ${t.forMs} ms` : t.samples !== undefined ? ` for ${t.samples} samples` : ''
    const clear = t.clear ? `, clears ${t.clear.op} ${t.clear.value}` : ''
    return `${t.sensor} ${t.op} ${t.value}${hold}${clear}`
  }
  if ('presence' in r.when) {
    const p = r.when.presence
    const went = p.status === 'offline' ? 'went offline' : 'came back'
    return p.forMs !== undefined ? `${p.status} for ${p.forMs} ms` : went
  }
  if ('job' in r.when) {
    const j = r.when.job
    return `job ${j.name ?? '(any)'} ${j.outcome ?? 'failed or timed_out'}`
  }
  return `event ${r.when.event.kind}${r.when.event.level ? ` (${r.when.event.level})` : ''}`
}

/** A firing's trigger in a line; `long` adds what the chain view shows. */
function trigger(t: FiringChain['trigger'], long = false): string {
  switch (t.kind) {
    case 'sample': return long ? `${t.sensor} = ${t.value}, seq ${t.seq}, taken ${localTimeMs(t.ts)}` : `${t.sensor} = ${t.value} (seq ${t.seq})`
    case 'event': return long ? `event ${t.event} (${t.level}) "${t.message}", seq ${t.seq}` : `event ${t.event}: ${clip(t.message, 40)}`
    case 'presence': return `${t.status} (${t.reason}) since ${localTimeMs(t.since)}`
    case 'job': return `job ${t.name} ${t.outcome} (attempt ${t.attempt}${t.error ? `: ${long ? t.error : clip(t.error, 30)}` : ''})${long ? `, job ${t.jobId}` : ''}`
    default: {
      const never: never = t
      return never
    }
  }
}

function then(r: RuleView): string {
  return r.then.map((a) => {
    if ('command' in a) return `command ${a.command.name}`
    if ('job' in a) return `job ${a.job.name}`
    if ('webhook' in a) return `webhook ${new URL(a.webhook.url).host}`
    return `event ${a.event.level}`
  }).join(', ')
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`

/** "2 firings would have acted, 1 suppressed (cooldown); 412 samples evaluated" */
export function testSummary(r: RuleTestReport): string {
  const reasons = Object.entries(r.suppressed).filter(([, n]) => n > 0)
  const suppressed = reasons.reduce((a, [, n]) => a + n, 0)
  const why = reasons.length === 1 ? ` (${reasons[0]![0]})` : reasons.length > 1 ? ` (${reasons.map(([k, n]) => `${n} ${k}`).join(', ')})` : ''
  const items = { samples: 'sample', events: 'event', presence: 'presence change', jobs: 'job failure' }[r.source.from]
  return `${plural(r.acted, 'firing')} would have acted, ${suppressed === 0 ? 'none' : suppressed} suppressed${why}; ${plural(r.evaluated, items)} evaluated`
}

/** What a dry run's transition was triggered by, in a cell. */
function replayedItem(t: RuleTestReport['transitions'][number]['trigger']): string {
  switch (t.type) {
    case 'sample': return String(t.value)
    case 'event': return `${t.level}: ${clip(t.message, 50)}`
    case 'presence': return `${t.status} (${t.reason})`
    case 'job': return `${t.name} ${t.outcome}, attempt ${t.attempt}${t.error ? `: ${clip(t.error, 30)}` : ''}`
    default: {
      const never: never = t
      return never
    }
  }
}

export const ruleCommands = {
  async add(file: string, opts: AdminOpts) {
    const r = await call<RuleView>(resolveAdminTarget(opts), 'POST', '/api/rules', readSpec(file))
    if (opts.json) return printJson(r)
    out(`rule ${r.name} added${r.enabled ? '' : ' (disabled)'}: when ${when(r)} on ${r.for}, then ${then(r)}`)
  },

  async list(opts: AdminOpts) {
    const r = await call<{ rules: RuleView[] }>(resolveAdminTarget(opts), 'GET', '/api/rules')
    if (opts.json) return printJson(r)
    if (r.rules.length === 0) return out(`no rules; add one with: ${hint(opts, 'rule', 'add', 'rule.json')} (docs/rules.md)`)
    out(table([['NAME', 'ON', 'WHEN', 'THEN', 'ENABLED', 'FIRED', 'SUPPRESSED', 'FAILED', 'LAST FIRED'], ...r.rules.map((x) => [
      x.name, clip(x.for, 24), clip(when(x), 40), clip(then(x), 30), x.paused ? 'paused' : x.enabled ? 'yes' : 'no', String(x.counters.fired),
      String(x.counters.suppressedStale + x.counters.suppressedCooldown + x.counters.suppressedRate + x.counters.suppressedPaused), String(x.counters.actionsFailed),
      localTime(x.counters.lastFiredAt),
    ])]))
  },

  async show(name: string, opts: AdminOpts) {
    const r = await call<RuleDetail>(resolveAdminTarget(opts), 'GET', `/api/rules/${enc(name)}`)
    if (opts.json) return printJson(r)
    const c = r.counters
    out(`rule ${r.name} (${r.enabled ? 'enabled' : 'disabled'}) on ${r.for}${r.paused ? `; PAUSED: ${r.paused.reason} (rollcall rule enable ${r.name} resumes it now)` : ''}`)
    out(`  when ${when(r)}; then ${then(r)}`)
    out(`  fired ${c.fired}; suppressed: ${c.suppressedStale} stale, ${c.suppressedCooldown} cooldown, ${c.suppressedRate} rate, ${c.suppressedPaused} paused; actions failed ${c.actionsFailed}`)
    if (r.devices.length > 0) {
      out('')
      out(table([['DEVICE', 'STATE', 'SINCE', 'LAST FIRED'], ...r.devices.map((d) => [d.deviceId, d.state.phase, d.state.phase === 'idle' ? '-' : localTimeMs(d.state.since), localTime(d.lastFiredAt)])]))
    }
    if (r.recentFirings.length > 0) {
      out('')
      out(table([['FIRING', 'DEVICE', 'AT', 'TRIGGER'], ...r.recentFirings.map((f) => [
        f.id, f.deviceId, localTimeMs(f.at), trigger(f.trigger),
      ])]))
      out(`the chain of one: ${hint(opts, 'rule', 'firing', r.recentFirings[0]!.id)}`)
    }
  },

  async setEnabled(name: string, enabled: boolean, opts: AdminOpts) {
    const r = await call<RuleView>(resolveAdminTarget(opts), 'POST', `/api/rules/${enc(name)}/${enabled ? 'enable' : 'disable'}`)
    if (opts.json) return printJson(r)
    out(`rule ${r.name} ${enabled ? 'enabled' : 'disabled'}`)
  },

  async remove(name: string, opts: AdminOpts) {
    await call(resolveAdminTarget(opts), 'DELETE', `/api/rules/${enc(name)}`)
    if (opts.json) return printJson({ removed: name })
    out(`rule ${name} removed; its firings stay for their trace`)
  },

  /** A dry run on what the device stored: acts on nothing, writes nothing (POST /api/rules/test). */
  async test(file: string, opts: AdminOpts & { device: string; since: string; until?: string; limit?: string }) {
    const spec = readSpec(file)
    const limit = intFlag('limit', opts.limit, 1, 100_000)
    const body = { rule: spec, deviceId: opts.device, since: opts.since, ...(opts.until !== undefined ? { until: opts.until } : {}), ...(limit !== undefined ? { limit } : {}) }
    const r = await call<RuleTestReport>(resolveAdminTarget(opts), 'POST', '/api/rules/test', body)
    if (opts.json) return printJson(r)
    const samples = r.source.from === 'samples'
    const src = r.source
    const what = src.from === 'samples' ? `"${src.sensor}" samples` : src.from === 'events' ? `"${src.kind}" events${src.level ? ` (${src.level})` : ''}` : src.from === 'presence' ? 'presence changes' : 'job failures'
    out(`rule ${r.rule} on ${r.deviceId}'s ${what}, ${localTime(r.sinceMs)} to ${localTime(r.untilMs)}:`)
    if (r.transitions.length > 0) {
      out(table([['TIME', 'FIRE/CLEAR', samples ? 'VALUE' : src.from === 'events' ? 'EVENT' : src.from === 'presence' ? 'STATUS' : 'JOB', 'VERDICT'], ...r.transitions.map((t) => [
        localTimeMs(t.ts), t.kind, replayedItem(t.trigger),
        t.kind === 'clear' ? '' : t.verdict === 'acts' ? 'would act' : `suppressed: ${t.verdict}`,
      ])]))
    } else {
      out(r.evaluated === 0 ? '  nothing to evaluate' : `  no firing: the condition never ${samples ? 'held' : 'matched'}`)
    }
    out(testSummary(r))
    if (r.finalState.phase === 'active') out('the condition is still active at the end: it would not fire again until it clears')
    for (const n of r.notes) out(`note: ${n}`)
  },

  async firing(id: string, opts: AdminOpts) {
    const f = await call<FiringChain>(resolveAdminTarget(opts), 'GET', `/api/firings/${enc(id)}`)
    if (opts.json) return printJson(f)
    const t = f.trigger
    out(`firing ${f.id} of rule ${f.rule} on ${f.deviceId} at ${localTimeMs(f.at)}`)
    out(`  trigger: ${trigger(t, true)}`)
    for (const a of f.actions) {
      const took = a.startedAt !== null && a.endedAt !== null ? ` in ${a.endedAt - a.startedAt} ms` : ''
      const made = a.command ? `: command ${a.command.id} ${a.command.status}` : a.job ? `: job ${a.job.id} ${a.job.status}` : ''
      out(`  action ${a.idx} ${a.kind}: ${a.status}${took}${made}`)
    }
  },
}
