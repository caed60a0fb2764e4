#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from './commander.js'
import { VERSION } from '../common/version.js'
import type { CmdFlags } from './cmd-command.js'
import type { JobFlags } from './job-commands.js'
import type { ServiceFlags } from './service-install.js'
import type { MigrateFlags } from './migrate-command.js'
import type { SimFlags } from './sim-command.js'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

function logFormatOption(): Option {
  return new Option('--log-format <format>', 'pretty: one readable line per entry; json: one JSON object per line; journal: one line with a syslog priority prefix, for the systemd journal (default: journal under systemd, pretty on a terminal, else json)')
    .choices(['pretty', 'json', 'journal'])
}

/**
 * The `rollcall` command. Each subcommand imports its implementation lazily,
 * so `rollcall agent` on a device never loads aedes, fastify or the hub.
 */
const program = new Command()
  .name('rollcall')
  .description('Lightweight edge/IoT orchestration: hub with embedded MQTT broker, device agent, admin CLI')
  .version(VERSION)
  .showHelpAfterError('(run with --help for usage)')
  // Errors come back to the catch at the bottom, which picks the exit code (cli/failure.ts);
  // subcommands inherit this, so it comes before them.
  .exitOverride()
  // `rollcall cmd TARGET NAME` has subcommands of its own (show, list) that take
  // the same flags: each command's flags must go to the command they follow.
  .enablePositionalOptions()

program.command('hub')
  .description('run the hub: embedded MQTT broker, telemetry store, presence, HTTP API')
  .option('--data <dir>', 'data directory: database, admin token (default ./rollcall-data or ROLLCALL_DATA)')
  .option('--host <host>', 'address to bind the listeners (default 127.0.0.1); any other address, such as 0.0.0.0 for a real fleet, needs TLS (--tls-cert/--tls-key) or --allow-plaintext')
  .option('--mqtt-port <port>', 'plaintext MQTT port, 0 = any free port (default 1883); with TLS on it is served only with --allow-plaintext')
  .option('--mqtt-tls-port <port>', 'MQTT over TLS port when TLS is on, 0 = any free port (default 8883)')
  .option('--http-port <port>', 'HTTP API and dashboard port, HTTPS when TLS is on, 0 = any free port (default 8080)')
  .option('--tls-cert <file>', 'PEM certificate of the hub (`rollcall tls init` makes one); turns on MQTT over TLS and HTTPS. Replaced files are picked up without a restart (or on SIGHUP)')
  .option('--tls-key <file>', 'PEM private key of --tls-cert')
  .option('--tls-ca <file>', 'PEM intermediate certificates sent after --tls-cert (a public CA\'s chain, when --tls-cert holds only the leaf)')
  .option('--allow-plaintext', 'serve plaintext MQTT and HTTP on a non-loopback --host without TLS, or plaintext MQTT on --mqtt-port beside TLS; tokens then cross the network in clear text', false)
  .option('--allow-anonymous', 'let clients without credentials use topics outside devices/# and hub/#', false)
  .option('--broker <url>', 'use this MQTT broker (mqtt://HOST:1883 or mqtts://HOST:8883; Mosquitto 2 with dynamic security) instead of the embedded one: see docs/scale-out.md (or ROLLCALL_BROKER)')
  .option('--broker-username <name>', 'the hub\'s account on --broker (or ROLLCALL_BROKER_USERNAME)')
  .option('--broker-password-file <file>', 'a file holding that account\'s password (or ROLLCALL_BROKER_PASSWORD_FILE)')
  .option('--database <url>', 'keep the hub\'s state in this PostgreSQL (postgres://USER@HOST:5432/DB), shared with the other hubs of a cluster, instead of the SQLite file in --data: see docs/scale-out.md (or ROLLCALL_DATABASE)')
  .option('--database-password-file <file>', 'a file holding the database account\'s password (or ROLLCALL_DATABASE_PASSWORD_FILE; PGPASSWORD and ~/.pgpass work too)')
  .option('--retention-days <days>', 'keep raw samples this many days (default 30)')
  .option('--max-payload <bytes>', 'largest MQTT payload accepted (default 65536)')
  .addOption(new Option('--log-level <level>', 'log level (default info)').choices(LOG_LEVELS))
  .addOption(logFormatOption())
  .option('--config <file>', 'JSON file with any hub option (see docs/configuration.md); flags win over it')
  .option('--ready-file <path>', 'write {mqttPort, mqttTlsPort, httpPort, https, pid} as JSON here once listening (mqttPort 0: no plaintext MQTT; mqttTlsPort null: no TLS)')
  .option('--check-config', 'check the configuration (flags, environment, --config file, TLS files) as a start would, print what the hub would do, and exit: 0 valid, 2 invalid', false)
  .option('--json', 'with --check-config: print the result as JSON', false)
  .addHelpText('after', `
SIGHUP (systemctl reload rollcall-hub) reads the TLS files and the --config file again: logLevel is applied at once, other changed keys are logged as needing a restart.`)
  .action(async (opts: Record<string, string | boolean | undefined>) => {
    const { runHub } = await import('./hub-command.js')
    await runHub(opts)
  })

const tls = program.command('tls').description('TLS without a public CA: a private CA and the hub\'s certificate')
tls.command('init')
  .description('make a private CA and a hub certificate in DATA/tls (ca.pem, ca.key, hub.pem, hub.key)')
  .option('--data <dir>', 'hub data directory; the files go in its tls/ (default ./rollcall-data or ROLLCALL_DATA)')
  .requiredOption('--host <name...>', 'a name or IP address devices use to reach the hub; repeat for more (--host hub.lan --host 192.168.1.10). localhost and 127.0.0.1 are always added')
  .option('--force', 'replace existing files: a new CA, so every device needs the new ca.pem', false)
  .action(async (opts: { data?: string; host: string[]; force: boolean }) => {
    const { tlsInit, tlsInitReport } = await import('./tls-init.js')
    const data = (await import('./admin-config.js')).hubDataDir(opts.data)
    process.stdout.write(tlsInitReport(tlsInit({ dataDir: data, hosts: opts.host, force: opts.force }), data, false))
  })
tls.command('renew')
  .description('issue a new hub certificate (new key) from the CA in DATA/tls; devices keep their ca.pem, a running hub picks it up')
  .option('--data <dir>', 'hub data directory (default ./rollcall-data or ROLLCALL_DATA)')
  .option('--host <name...>', 'the names and addresses for the new certificate (default: those of the current one); localhost and 127.0.0.1 are always added')
  .action(async (opts: { data?: string; host?: string[] }) => {
    const { tlsRenew, tlsInitReport } = await import('./tls-init.js')
    const data = (await import('./admin-config.js')).hubDataDir(opts.data)
    process.stdout.write(tlsInitReport(tlsRenew({ dataDir: data, ...(opts.host ? { hosts: opts.host } : {}) }), data, true))
  })

program.command('agent')
  .description('run the device agent: sensors, SQLite ledger, MQTT link to the hub')
  .option('--hub <url>', 'hub MQTT URL: mqtts://HOST:8883 for TLS, mqtt://HOST:1883 in clear (or "hub" in the config file)')
  .option('--ca <file>', 'with mqtts://: the CA certificate (PEM) the hub\'s certificate must chain to, e.g. the hub\'s ca.pem from `rollcall tls init` (or "caFile"; default: the system\'s CAs)')
  .option('--id <id>', 'this device\'s id, as registered with `rollcall device add` (or "id" in the config file)')
  .addOption(new Option('--token-file <file>', 'a file holding the device token (or ROLLCALL_TOKEN_FILE, or "tokenFile"; under systemd, LoadCredential=token:FILE is read when no token is given)').conflicts('token'))
  .option('--token <token>', 'device token (or set ROLLCALL_TOKEN); prefer --token-file: a flag shows in ps')
  .option('--data <dir>', 'ledger directory (or "dataDir"; default ./rollcall-data/agents/<id>)')
  .option('--config <file>', 'JSON config file with any agent option: hub, id, tokenFile, caFile, dataDir, sensors, shellAllow, schedules... (see docs/configuration.md); flags win over it')
  .addOption(new Option('--log-level <level>', 'log level (or "logLevel"; default info)').choices(LOG_LEVELS))
  .addOption(logFormatOption())
  .option('--check-config', 'check the configuration as a start would, print what the agent would do (token redacted), and exit: 0 valid, 2 invalid', false)
  .option('--json', 'with --check-config: print the result as JSON', false)
  .addHelpText('after', `
SIGHUP (systemctl reload rollcall-agent) reads the config file again: sensors, sampleIntervalMs, shellAllow,
shellMaxOutputBytes, schedules, jobConcurrency, commandConcurrency and logLevel are applied at once; other
changed keys are logged as needing a restart.`)
  .action(async (opts: Record<string, string | boolean | undefined>) => {
    const { runAgent } = await import('./agent-command.js')
    await runAgent(opts)
  })

const service = program.command('service').description('run the agent or the hub as a systemd service (docs/services.md)')
service.command('install')
  .description('install the systemd unit for this machine: write it to /etc/systemd/system, create the rollcall user, enable and start it')
  .argument('<kind>', 'agent or hub')
  .option('--config <file>', 'the config file the service runs with (default /etc/rollcall/agent.json or /etc/rollcall/hub.json)')
  .option('--token-file <file>', 'agent: the file holding the device token, passed to the agent as a systemd credential (default /etc/rollcall/agent.token)')
  .option('--unit-dir <dir>', 'only write the unit file into this directory (packagers, tests): no user, no systemctl; the commands left to run are printed')
  .option('--user <name>', 'the system user the service runs as (default rollcall)')
  .option('--force', 'replace a unit file that differs', false)
  .option('--dry-run', 'print the unit and the steps, change nothing', false)
  .action(async (kind: string, opts: ServiceFlags) => {
    const { serviceInstall } = await import('./service-install.js')
    serviceInstall(serviceKind(kind), opts)
  })
service.command('uninstall')
  .description('stop and disable the service and remove its unit file; its data, config and user are kept')
  .argument('<kind>', 'agent or hub')
  .option('--unit-dir <dir>', 'the directory the unit was written to with --unit-dir')
  .option('--dry-run', 'print the steps, change nothing', false)
  .action(async (kind: string, opts: ServiceFlags) => {
    const { serviceUninstall } = await import('./service-install.js')
    serviceUninstall(serviceKind(kind), opts)
  })

function serviceKind(kind: string): 'agent' | 'hub' {
  if (kind !== 'agent' && kind !== 'hub') throw new InvalidArgumentError(`the service is "agent" or "hub", not ${JSON.stringify(kind)}`)
  return kind
}

function adminOptions(cmd: Command): Command {
  return cmd
    .option('--api <url>', 'hub HTTP API (or ROLLCALL_API; default http://127.0.0.1:8080); https://... for a hub with TLS')
    .option('--ca <file>', 'with an https:// API: the CA certificate (PEM) its certificate must chain to, e.g. the hub\'s ca.pem from `rollcall tls init` (or ROLLCALL_CA; default: DATA/tls/ca.pem if it exists, else the system\'s CAs)')
    .option('--admin-token <token>', 'admin token (or ROLLCALL_ADMIN_TOKEN; default: read from the hub data dir)')
    .option('--data <dir>', 'hub data dir to read the admin token from (or ROLLCALL_DATA; default ./rollcall-data)')
    .option('--json', 'print JSON on stdout; a failure too, as {"error":{"code","message"}}', false)
}

const device = program.command('device').description('register, list, inspect and remove devices')
adminOptions(device.command('add').argument('<id>', 'device id: 3-64 of a-z 0-9 - _').option('--group <group>', 'group name'))
  .description('register a device and print its token (shown once)')
  .action(async (id: string, opts: AdminOpts & { group?: string }) => (await admin()).deviceAdd(id, opts))
adminOptions(device.command('list').option('--group <group>', 'only this group'))
  .description('list devices with presence')
  .action(async (opts: AdminOpts & { group?: string }) => (await admin()).deviceList(opts))
adminOptions(device.command('show').argument('<id>'))
  .description('show a device: presence, last seen, agent, streams, recent presence history')
  .action(async (id: string, opts: AdminOpts) => (await admin()).deviceShow(id, opts))
adminOptions(device.command('remove').argument('<id>'))
  .description('remove a device; it is disconnected at once and its token stops working')
  .action(async (id: string, opts: AdminOpts) => (await admin()).deviceRemove(id, opts))
adminOptions(device.command('token').argument('<id>'))
  .description('issue a new token for a device; the old one stops working and the device is disconnected')
  .action(async (id: string, opts: AdminOpts) => (await admin()).deviceToken(id, opts))

const observer = program.command('observer').description('read-only MQTT credentials for applications')
adminOptions(observer.command('add').argument('<name>'))
  .description('create an observer and print its credentials (shown once)')
  .action(async (name: string, opts: AdminOpts) => (await admin()).observerAdd(name, opts))
adminOptions(observer.command('list')).description('list observers')
  .action(async (opts: AdminOpts) => (await admin()).observerList(opts))
adminOptions(observer.command('remove').argument('<name>')).description('remove an observer and disconnect it')
  .action(async (name: string, opts: AdminOpts) => (await admin()).observerRemove(name, opts))

adminOptions(program.command('telemetry').argument('<id>', 'device id'))
  .description('print a device\'s telemetry')
  .option('--sensor <name>', 'only this sensor')
  .option('--since <time>', 'start: a duration ago (10m, 2h), ISO date or epoch ms', '10m')
  .option('--until <time>', 'end (default: now)')
  .option('--bucket <duration>', 'downsample into buckets (1m, 1h): avg/min/max per bucket')
  .option('--limit <n>', 'at most this many rows', '1000')
  .action(async (id: string, opts: AdminOpts & TelemetryOpts) => (await admin()).telemetry(id, opts))

adminOptions(program.command('events').argument('<id>', 'device id'))
  .description('print a device\'s events (logs it reported through its outbox), newest first')
  .option('--since <time>', 'start: a duration ago (10m, 2h), ISO date or epoch ms', '1d')
  .option('--limit <n>', 'at most this many', '100')
  .action(async (id: string, opts: AdminOpts & { since: string; limit: string }) => (await admin()).events(id, opts))

adminOptions(program.command('dead-letters'))
  .description('payloads the hub refused, newest first, with the reason')
  .option('--device <id>', 'only this device')
  .option('--limit <n>', 'at most this many', '50')
  .action(async (opts: AdminOpts & { device?: string; limit: string }) => (await admin()).deadLetters(opts))

/** Flags for a job, shared by `job create` and `schedule add`; a schedule's expiry counts from each tick, so it has no --expires-at. */
function jobFlags(cmd: Command, absoluteExpiry: boolean): Command {
  cmd
    .requiredOption('--target <target>', 'who runs it: device:ID, device:ID1,ID2, group:NAME or all')
    .option('--payload <json>', 'the job\'s input, as JSON (quote it for the shell)')
    .option('--priority <n>', 'higher runs first on a device: -1000 to 1000 (default 0)')
    .option('--max-attempts <n>', 'attempts per device, 1 to 100, counting the first (default: the hub\'s)')
    .option('--timeout <duration>', 'how long one attempt may run, e.g. 30s, 10m (default: the hub\'s)')
    .option('--expires-in <duration>', `not started within this long (e.g. 1h)${absoluteExpiry ? '' : ' of a tick'}, an execution expires`)
  if (absoluteExpiry) cmd.addOption(new Option('--expires-at <time>', 'not started by this time (ISO date or epoch ms), an execution expires').conflicts('expiresIn'))
  return cmd
    .option('--backoff <duration>', 'wait before a retry, doubling each attempt, e.g. 10s (default: the hub\'s)')
    .option('--backoff-max <duration>', 'longest wait before a retry, e.g. 10m')
    .option('--rate <rate>', 'rollout pace, new devices per time: 60/min, 5/s, 100/h, or a number per minute')
    .option('--abort-after <n>', 'with --abort-at: judge the failure rate once this many executions finished')
    .option('--abort-at <percent>', 'with --abort-after: abort (cancel what is queued) at this failure rate, e.g. 20%')
    .option('--continuous', 'group and all targets: devices added later get the job too', false)
}

const job = program.command('job').description('jobs: work that devices pull, run and report on')
adminOptions(jobFlags(job.command('create').argument('<name>', 'task name, e.g. echo or firmware.update'), true))
  .description('create a job: one execution per targeted device; prints its id and how many were queued')
  .action(async (name: string, opts: AdminOpts & JobFlags) => (await jobs()).jobCreate(name, opts))
adminOptions(job.command('list'))
  .description('list jobs, newest first, with how their executions stand')
  .option('--status <status>', 'only jobs in this status: active, completed, canceled or aborted')
  .option('--limit <n>', 'at most this many (1 to 1000)', '50')
  .action(async (opts: AdminOpts & { status?: string; limit: string }) => (await jobs()).jobList(opts))
adminOptions(job.command('show').argument('<id>', 'job id'))
  .description('show a job: its fields, counts per state, and its executions')
  .option('--state <state>', 'only executions in this state: queued, in_progress, succeeded, failed, timed_out, rejected, canceled, expired')
  .option('--limit <n>', 'at most this many executions (1 to 10000)', '1000')
  .action(async (id: string, opts: AdminOpts & { state?: string; limit: string }) => (await jobs()).jobShow(id, opts))
adminOptions(job.command('cancel').argument('<id>', 'job id'))
  .description('cancel a job: queued executions are canceled, devices running one are told to stop')
  .option('--reason <text>', 'why, kept with the job and its executions')
  .action(async (id: string, opts: AdminOpts & { reason?: string }) => (await jobs()).jobCancel(id, opts))
adminOptions(job.command('execution').argument('<execId>', 'execution id: JOBID.DEVICEID'))
  .description('show one execution (one job on one device) and its history')
  .action(async (execId: string, opts: AdminOpts) => (await jobs()).jobExecution(execId, opts))

const rule = program.command('rule').description('reactions: rules on telemetry and events that send commands, make jobs and publish events (docs/rules.md)')
adminOptions(rule.command('add').argument('<file>', 'the rule as JSON (docs/rules.md), or - to read it from stdin'))
  .description('add a rule').action(async (file: string, opts: AdminOpts) => (await rules()).add(file, opts))
adminOptions(rule.command('list')).description('list rules with their counters').action(async (opts: AdminOpts) => (await rules()).list(opts))
adminOptions(rule.command('show').argument('<name>')).description('show a rule: its devices\' states and recent firings')
  .action(async (name: string, opts: AdminOpts) => (await rules()).show(name, opts))
adminOptions(rule.command('enable').argument('<name>')).description('enable a rule').action(async (name: string, opts: AdminOpts) => (await rules()).setEnabled(name, true, opts))
adminOptions(rule.command('disable').argument('<name>')).description('disable a rule; its states are kept').action(async (name: string, opts: AdminOpts) => (await rules()).setEnabled(name, false, opts))
adminOptions(rule.command('remove').argument('<name>')).description('remove a rule; its firings stay for their trace').action(async (name: string, opts: AdminOpts) => (await rules()).remove(name, opts))
adminOptions(rule.command('test').argument('<file>', 'the rule as JSON, as for rule add, or - to read it from stdin'))
  .description('try a rule on what a device already stored: what it would have fired and cleared, and which firings its limits would have held back; acts on nothing')
  .requiredOption('--device <id>', 'the device whose stored samples or events to run it on')
  .option('--since <time>', 'start: a duration ago (10m, 2h), ISO date or epoch ms', '1h')
  .option('--until <time>', 'end (default: now)')
  .option('--limit <n>', 'at most this many samples or events from --since on (1 to 100000; default 10000)')
  .action(async (file: string, opts: AdminOpts & { device: string; since: string; until?: string; limit?: string }) => (await rules()).test(file, opts))
adminOptions(rule.command('firing').argument('<id>', 'a firing id, from rule show')).description('show a firing\'s chain: its trigger, each action, the command or job it made')
  .action(async (id: string, opts: AdminOpts) => (await rules()).firing(id, opts))

const schedule = program.command('schedule').description('cron schedules that create jobs')
adminOptions(jobFlags(schedule.command('add').argument('<name>', 'schedule name: 3-64 of a-z 0-9 - _'), false))
  .description('add a schedule: at every cron tick the hub creates the job')
  .requiredOption('--cron <expr>', 'when: five fields (minute hour day month weekday), e.g. "0 3 * * *"; six with seconds first')
  .option('--timezone <tz>', 'IANA time zone for the cron expression, e.g. Europe/Berlin (default: the hub\'s)')
  .requiredOption('--job <task>', 'the task name of the job it creates, e.g. nightly.report')
  .action(async (name: string, opts: AdminOpts & JobFlags & { cron: string; timezone?: string; job: string }) => (await jobs()).scheduleAdd(name, opts))
adminOptions(schedule.command('list')).description('list schedules with their next run')
  .action(async (opts: AdminOpts) => (await jobs()).scheduleList(opts))
adminOptions(schedule.command('remove').argument('<name>')).description('remove a schedule; the jobs it made are not touched')
  .action(async (name: string, opts: AdminOpts) => (await jobs()).scheduleRemove(name, opts))

const cmd = program.command('cmd')
  .description('send a command to a device, or to several, and wait for the answer; show and list the command record')
  .usage('TARGET NAME [options]\n       rollcall cmd show ID\n       rollcall cmd list DEVICE [--limit N]')
  .argument('<target>', 'a device id, or device:ID1,ID2, group:NAME or all (a device named "show" or "list": write device:show)')
  .argument('<name>', 'the command, e.g. ping, sys.info, sensors.sample, config.get, jobs.pull')
  .option('--args <json>', 'the command\'s arguments, as JSON (quote it for the shell)')
  .option('--timeout <duration>', 'how long to wait for the answer, up to 5m, e.g. 5s (default: the hub\'s, 10s)')
  .option('--if-offline <what>', 'fail: an offline device is an error (default); queue: it becomes a job that runs when the device is back')
  .addHelpText('after', `
Exit status:
  0  it ran and succeeded: the device answered ok, or, for a group, every
     member was reachable and every one answered ok
  1  it did not: the device's error (its code on stderr, e.g.
     "rollcall: DISK_FULL: ..."), DEVICE_OFFLINE, COMMAND_TIMEOUT,
     DEVICE_DISCONNECTED, a group member that failed or was skipped as
     offline
  2  a usage error: a bad flag or value, nothing was sent
  3  nothing failed but it has not run yet: with --if-offline queue the
     device, or some group members, were offline and it became a job

Examples:
  rollcall cmd greenhouse-01 ping
  rollcall cmd greenhouse-01 sensors.sample --timeout 3s
  rollcall cmd group:greenhouse sys.info --json
  rollcall cmd greenhouse-03 sensors.sample --if-offline queue`)
adminOptions(cmd)
  .action(async (target: string, name: string, opts: AdminOpts & CmdFlags) => (await cmds()).send(target, name, opts))
adminOptions(cmd.command('show').argument('<id>', 'a command id, or a group command\'s id'))
  .description('show a command: its record and timeline (for a group command, each member\'s)')
  .action(async (id: string, opts: AdminOpts) => (await cmds()).show(id, opts))
adminOptions(cmd.command('list').argument('<device>', 'device id'))
  .description('list a device\'s commands, newest first')
  .option('--limit <n>', 'at most this many (1 to 1000)', '50')
  .action(async (device: string, opts: AdminOpts & { limit: string }) => (await cmds()).list(device, opts))

program.command('migrate')
  .description('move a hub\'s state from its data dir (SQLite) into a new PostgreSQL database, for hubs started with --database (docs/scale-out.md)')
  .option('--from <dir>', 'the hub\'s data dir (stop the hub first)')
  .option('--to <url>', 'the PostgreSQL database, new and empty: postgres://USER@HOST:5432/DB')
  .option('--to-password-file <file>', 'a file holding the database account\'s password (else PGPASSWORD or ~/.pgpass)')
  .option('--without-rules', 'move a hub that has rules without them (rules do not run on PostgreSQL yet)', false)
  .option('--json', 'print what was moved as JSON', false)
  .addHelpText('after', `
Everything is copied in one transaction and counted table by table: it all
lands or nothing does. Device and observer tokens keep working; each device's
stream resumes where it was acknowledged. The data dir is left as it was.

Example:
  rollcall migrate --from /var/lib/rollcall --to postgres://rollcall@db:5432/rollcall --to-password-file /etc/rollcall/db-password`)
  .action(async (opts: MigrateFlags) => {
    const { runMigrate } = await import('./migrate-command.js')
    await runMigrate(opts)
  })

program.command('sim')
  .description('run a fleet of simulated devices (the real agent code) against a hub, with faults, and account for every sample, job and command')
  .option('--devices <n>', `how many simulated devices, 1 to 20000 (default 10)`)
  .option('--duration <duration>', 'how long the fleet runs before the drain and the accounting, e.g. 60s, 10m (default 60s)')
  .option('--hub <url>', 'a running hub\'s MQTT URL on this machine, e.g. mqtt://127.0.0.1:1883 or mqtts://127.0.0.1:8883 (default: start a hub of its own)')
  .option('--ca <file>', 'with an mqtts:// --hub: the hub\'s CA certificate (PEM, its ca.pem), pinned by every simulated agent and by the API client')
  .option('--api <url>', 'with --hub: the hub\'s HTTP API, e.g. http://127.0.0.1:8080')
  .option('--admin-token <token>', 'with --hub: the admin token (or ROLLCALL_ADMIN_TOKEN)')
  .option('--profile <profile>', 'connectivity: steady, flaky, intermittent or mixed (default mixed)')
  .option('--rate <rate>', 'how often each device reads its four sensors: 1/s, 5/s, 30/min (default 1/s)')
  .option('--seed <n>', 'the run\'s seed: same seed, same sensor values, plans and chaos schedule (default: random, printed)')
  .option('--chaos <spec>', 'faults, e.g. \'partition=20%@10s+15s,hub-kill@30s,agent-crash=5%@40s,reconnect-burst=50%@45s\'')
  .option('--jobs-every <duration>', 'a job to the whole fleet this often, or off (default 15s)')
  .option('--commands-every <duration>', 'a ping to one random device this often, or off (default 500ms)')
  .option('--scenario <name>', 'reactions: add a rule on the hub that answers each vibration burst with a sensors.sample command and a job to the fleet, and report sample -> fired -> command at the device')
  .option('--bursts-every <n>', 'with --scenario reactions: one vibration burst per device per this many readings on average (default 60)')
  .option('--work <dir>', 'keep the hub data and agent ledgers here (a new or empty dir; default: a temp dir, removed)')
  .option('--json', 'print the report as JSON on stdout', false)
  .addHelpText('after', `
Exit status:
  0    nothing was lost or duplicated (samples, job executions)
  1    something was lost or duplicated, or the run failed
  2    a usage error
  130  interrupted (Ctrl-C)

Examples:
  rollcall sim --devices 50 --duration 60s
  rollcall sim --devices 50 --duration 60s --profile mixed --chaos 'partition=30%@10s+15s,hub-kill@25s,agent-crash=10%@35s'
  rollcall sim --devices 200 --duration 5m --profile flaky --seed 7 --json > report.json
  rollcall sim --devices 20 --duration 2m --profile steady --scenario reactions
  rollcall sim --devices 20 --hub mqtt://127.0.0.1:1883 --api http://127.0.0.1:8080 --admin-token "$TOKEN"
  rollcall sim --devices 20 --hub mqtts://127.0.0.1:8883 --api https://127.0.0.1:8080 --ca rollcall-data/tls/ca.pem --admin-token "$TOKEN"

See docs/simulator.md for the profiles, the chaos grammar and every figure of the report.`)
  .action(async (opts: SimFlags) => {
    const { runSimCommand } = await import('./sim-command.js')
    await runSimCommand(opts)
  })

program.command('demo')
  .description('run a hub with a fleet of simulated devices (mixed connectivity, a job every minute), and print where to look')
  .option('--devices <n>', 'how many simulated devices, 1 to 1000', '25')
  .option('--data <dir>', 'data directory', './rollcall-data/demo')
  .option('--mqtt-port <port>', 'MQTT port, 0 = any free port', '1883')
  .option('--http-port <port>', 'HTTP port, 0 = any free port', '8080')
  .addOption(new Option('--log-level <level>', 'log level of the hub and the agents').choices(LOG_LEVELS).default('warn'))
  .addOption(logFormatOption())
  .addHelpText('after', `
Through npm, options go after "--": npm start -- --mqtt-port 0 --http-port 0`)
  .action(async (opts: Record<string, string>) => {
    const { runDemo } = await import('./demo-command.js')
    await runDemo(opts)
  })

export interface AdminOpts { api?: string; adminToken?: string; data?: string; ca?: string; json: boolean }
export interface TelemetryOpts { sensor?: string; since: string; until?: string; bucket?: string; limit: string }

async function admin() {
  return (await import('./admin-commands.js')).adminCommands
}

async function jobs() {
  return (await import('./job-commands.js')).jobCommands
}

async function rules() {
  return (await import('./rule-commands.js')).ruleCommands
}

async function cmds() {
  return (await import('./cmd-command.js')).cmdCommands
}

// `rollcall` alone asks what this is: help, and a success.
if (process.argv.length <= 2) {
  program.outputHelp()
} else {
  program.parseAsync(process.argv).catch(async (err: unknown) => {
    const { describeFailure, failureLine, jsonRequested } = await import('./failure.js')
    const { startedByNpmStart } = await import('./invocation.js')
    const { printedJson } = await import('./output.js')
    const f = describeFailure(err, { startedByNpmStart: startedByNpmStart() })
    process.exitCode = f.exitCode
    if (f.exitCode === 0) return
    if (!f.printed) process.stderr.write(`${failureLine(f)}\n`)
    // A script asked for JSON: give it the error as JSON, unless the command printed its answer already.
    if (jsonRequested(process.argv.slice(2)) && !printedJson()) {
      process.stdout.write(`${JSON.stringify({ error: { code: f.code, message: f.message } })}\n`)
    }
  })
}
