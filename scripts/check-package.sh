#!/usr/bin/env bash
# What a user gets from the README's install: `npm pack` here, then
# `npm install -g --allow-scripts=better-sqlite3 ./rollcall-<version>.tgz`.
# It packs into a temp dir, checks what the tarball carries, installs it into a
# temp prefix with an empty npm cache (so nothing cached from this repo's own
# install can hide a dependency that resolves differently for a user: the
# lockfile and `overrides` do not travel with a package), and fails on any
# `npm warn`. Then it runs the installed copy: `rollcall --version`, a hub on
# free ports on 127.0.0.1, the dashboard's files, a device added with the
# installed CLI and the installed agent, until the device is online and its
# telemetry is stored.
#
# Then the Raspberry Pi guide (docs/raspberry-pi.md, issue #13), as far as
# this machine can run it: `rollcall tls init`, the hub started from the
# guide's hub.json, the device added over HTTPS, the agent's config file
# taken from the guide (the blocks marked `<!-- check-package: NAME -->`,
# absolute paths moved under a temp root, so the doc and this check cannot
# drift apart), `rollcall agent --check-config`, and the agent started as the
# systemd unit starts it: `--config FILE` and the token only from
# $CREDENTIALS_DIRECTORY/token (LoadCredential=token:...), no token in the
# environment or on the command line. Telemetry must arrive over TLS, and a
# SIGHUP (systemctl reload) must be applied.
#
# Slow (better-sqlite3 compiles from source where no prebuilt binary can be
# downloaded: minutes, unless this checkout's own build of the same version is
# there to offer: see the install step), so it is not part of `npm test`: run it with
# `npm run test:package`; CI runs it after the tests. Needs the npm registry,
# python3, make and g++. Ends with a line "check-package: PASS" or
# "check-package: FAIL: <why>". KEEP_PACKAGE_CHECK=1 keeps the temp dir (the
# tarball, the install, the logs) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

# Bounds that only guard against a hang, far above what a loaded 2-core
# machine takes (install ~3 min, hub start ~1 s, first sample ~2 s).
INSTALL_TIMEOUT_S=1500
START_TIMEOUT_S=120
ONLINE_TIMEOUT_S=180
STOP_TIMEOUT_S=60

work="$(mktemp -d -t rollcall-package-XXXXXX)"
prefix="$work/prefix"
bin="$prefix/bin/rollcall"
hub_pid=""
agent_pid=""
step="start"

say() { printf 'check-package: %s\n' "$*"; }
fail() { printf 'check-package: FAIL: %s\n' "$*" >&2; exit 1; }

# Stops one process we started: SIGTERM, then SIGKILL if it has not exited
# within STOP_TIMEOUT_S. Prints how it ended.
stop() {
  local name=$1 pid=$2 i code=0
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      say "$name (pid $pid) did not stop within ${STOP_TIMEOUT_S}s of SIGTERM: killed"
      wait "$pid" 2>/dev/null || true
      return 1
    fi
  fi
  wait "$pid" 2>/dev/null || code=$?
  say "$name (pid $pid) stopped, exit code $code"
}

show_log() {
  if [ -s "$1" ]; then
    printf -- '--- last lines of %s ---\n' "$(basename "$1")" >&2
    tail -n 40 "$1" >&2
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop agent "$agent_pid" || true
  stop hub "$hub_pid" || true
  if [ "$status" -ne 0 ]; then
    for log in pack install npm-ls hub agent guide-hub guide-agent; do show_log "$work/$log.log"; done
    printf 'check-package: FAIL (at: %s)\n' "$step" >&2
  fi
  if [ -n "${KEEP_PACKAGE_CHECK:-}" ]; then say "kept $work (KEEP_PACKAGE_CHECK is set)"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Fails when a log has npm warnings, or the notice for install scripts that
# the allow-list does not cover (our own prepare would be one).
no_npm_warnings() {
  local log=$1 what=$2
  if grep -i -E 'npm warn|not yet covered by allowScripts' "$log" >&2; then
    fail "$what printed the npm warnings above"
  fi
}

# waits until `test_cmd` succeeds, re-running it every second, for at most
# $1 seconds; fails with $2 if it never does or if the process $3 exits.
wait_for() {
  local limit=$1 what=$2 pid=$3 i
  shift 3
  for ((i = 0; i < limit; i++)); do
    if "$@"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || fail "$what: the process exited first"
    sleep 1
  done
  fail "$what: not within ${limit}s"
}

# Reads a field from a JSON document on stdin: json_field 'd => d.presence.status'.
json_field() { node -e 'let s = ""; process.stdin.on("data", (c) => { s += c }).on("end", () => { const v = ('"$1"')(JSON.parse(s)); process.stdout.write(v === undefined || v === null ? "" : String(v)) })'; }

version="$(node -p 'require("./package.json").version')"
say "node $(node --version), npm $(npm --version), rollcall $version; working in $work"

step="npm pack"
npm pack --pack-destination "$work" > "$work/pack.log" 2>&1 || fail "npm pack failed"
no_npm_warnings "$work/pack.log" "npm pack"
tgz="$work/rollcall-$version.tgz"
[ -f "$tgz" ] || fail "npm pack wrote no $tgz"

step="tarball contents"
tar -tzf "$tgz" | sed 's|^package/||' | sort > "$work/files.txt"
if grep -E '\.map$|\.ts$|^dist/(bench|scripts|test)/' "$work/files.txt" >&2; then
  fail "the tarball carries the development files above"
fi
for f in LICENSE README.md package.json dist/cli/main.js dist/hub/ui/index.html dist/hub/ui/style.css dist/hub/ui/app.js deploy/systemd/rollcall-agent.service deploy/systemd/rollcall-hub.service; do
  grep -qxF "$f" "$work/files.txt" || fail "the tarball lacks $f"
done
say "tarball: $(wc -l < "$work/files.txt") files, $(du -k "$tgz" | cut -f1) KiB"

step="npm install -g"
# better-sqlite3's native binary as this checkout's own install built it, offered
# as a local prebuild: prebuild-install (better-sqlite3's install script) reads
# .prebuild-installrc from the install's parent dirs and takes the binary from
# there instead of compiling it for minutes again. A user's install downloads
# the same kind of prebuilt binary; what this check is about, rollcall's
# package and its dependencies as npm resolves them, is unchanged. A different
# better-sqlite3 version (its name is in the file's) is compiled as before.
bs3="$repo/node_modules/better-sqlite3"
if [ -f "$bs3/build/Release/better_sqlite3.node" ]; then
  bs3_name="better-sqlite3-v$(node -p "require('$bs3/package.json').version")-node-v$(node -p process.versions.modules)-$(node -p "process.platform + '-' + process.arch").tar.gz"
  mkdir -p "$work/prebuilds/stage/build/Release"
  cp "$bs3/build/Release/better_sqlite3.node" "$work/prebuilds/stage/build/Release/"
  tar -czf "$work/prebuilds/$bs3_name" -C "$work/prebuilds/stage" build
  printf 'local-prebuilds=%s\n' "$work/prebuilds" > "$work/.prebuild-installrc"
  say "better-sqlite3: offering this checkout's build as $bs3_name"
fi
say "installing into $prefix (compiles better-sqlite3 unless its prebuilt binary is found; minutes)"
# The README's command, run outside the repo, with an empty cache of its own.
(
  cd "$work"
  npm_config_cache="$work/npm-cache" timeout "$INSTALL_TIMEOUT_S" \
    npm install -g --prefix "$prefix" --allow-scripts=better-sqlite3 "./rollcall-$version.tgz"
) > "$work/install.log" 2>&1 || fail "npm install -g failed (exit $?)"
no_npm_warnings "$work/install.log" "npm install -g"
[ -x "$bin" ] || fail "npm install -g made no $bin"

step="npm ls"
# Every installed dependency satisfies its dependent's range (no "invalid").
(cd "$prefix/lib/node_modules/rollcall" && npm_config_cache="$work/npm-cache" npm ls --all --omit=dev) > "$work/npm-ls.log" 2>&1 \
  || fail "npm ls finds problems in the installed tree"
# (An optional dependency left out, like ws's bufferutil, is no problem.)
if grep -E ' invalid|extraneous|UNMET (PEER )?DEPENDENCY' "$work/npm-ls.log" >&2; then fail "npm ls: the installed tree has the problems above"; fi

step="rollcall --version"
got="$("$bin" --version)"
[ "$got" = "$version" ] || fail "rollcall --version printed '$got', expected '$version'"
say "rollcall --version: $got"

# From here on, the installed copy runs from a directory that is not the repo,
# so nothing can resolve back into this checkout.
cd "$work"

step="rollcall hub"
"$bin" hub --data "$work/hub" --host 127.0.0.1 --mqtt-port 0 --http-port 0 \
  --ready-file "$work/hub-ready.json" --log-level info > "$work/hub.log" 2>&1 &
hub_pid=$!
wait_for "$START_TIMEOUT_S" "the hub did not write its ready file" "$hub_pid" test -s "$work/hub-ready.json"
http_port="$(json_field 'r => r.httpPort' < "$work/hub-ready.json")"
mqtt_port="$(json_field 'r => r.mqttPort' < "$work/hub-ready.json")"
api="http://127.0.0.1:$http_port"
say "hub (pid $hub_pid): mqtt://127.0.0.1:$mqtt_port $api"

step="dashboard files"
# The page, every file it names (its stylesheet, uPlot from the installed
# node_modules, its entry module) and every module those import answer 200
# from the installed copy.
node --input-type=module - "$api" <<'EOF' || fail "the dashboard's files are not all served by the installed hub"
const api = process.argv[2]
const get = async (path) => {
  const res = await fetch(api + path, { signal: AbortSignal.timeout(30_000) })
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`)
  return res.text()
}
const page = await get('/ui/')
const pending = [...page.matchAll(/(?:src|href)="(\/ui\/[^"]+)"/g)].map((m) => m[1])
if (!pending.some((p) => p.includes('uPlot'))) throw new Error('the page names no uPlot file')
const seen = new Set(pending)
while (pending.length > 0) {
  const path = pending.shift()
  const text = await get(path)
  if (!path.endsWith('.js') || path.startsWith('/ui/vendor/')) continue
  for (const [, rel] of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    const next = new URL(rel, `http://localhost${path}`).pathname
    if (!seen.has(next)) { seen.add(next); pending.push(next) }
  }
}
console.log(`check-package: dashboard: /ui/ and the ${seen.size} files it loads answer 200`)
EOF

step="rollcall device add"
"$bin" device add pack-check --api "$api" --data "$work/hub" --json > "$work/device.json" || fail "rollcall device add failed"
token="$(json_field 'd => d.token' < "$work/device.json")"
[ -n "$token" ] || fail "rollcall device add printed no token"

step="rollcall agent"
printf '{ "sampleIntervalMs": "1s" }\n' > "$work/agent.json"
ROLLCALL_TOKEN="$token" "$bin" agent --hub "mqtt://127.0.0.1:$mqtt_port" --id pack-check \
  --data "$work/agent" --config "$work/agent.json" --log-level info > "$work/agent.log" 2>&1 &
agent_pid=$!
say "agent (pid $agent_pid) started"

online() {
  [ "$("$bin" device show pack-check --api "$api" --data "$work/hub" --json 2>/dev/null | json_field 'd => d.presence?.status')" = online ]
}
wait_for "$ONLINE_TIMEOUT_S" "the device did not come online" "$agent_pid" online
say "device pack-check is online"

stored() {
  local n
  n="$("$bin" telemetry pack-check --api "$api" --data "$work/hub" --json 2>/dev/null | json_field 'd => d.samples.length')"
  [ -n "$n" ] && [ "$n" -gt 0 ]
}
wait_for "$ONLINE_TIMEOUT_S" "no telemetry from the device was stored" "$agent_pid" stored
say "telemetry stored: $("$bin" telemetry pack-check --api "$api" --data "$work/hub" --json | json_field 'd => [...new Set(d.samples.map((s) => s.sensor))].sort().join(", ")')"

step="stop"
stop agent "$agent_pid" || fail "the agent did not stop on SIGTERM"
agent_pid=""
stop hub "$hub_pid" || fail "the hub did not stop on SIGTERM"
hub_pid=""

# --- docs/raspberry-pi.md, as far as this machine can run it -------------------
root="$work/root"         # stands for / : the guide's /etc/rollcall and /var/lib/... live under it
guide_json() { node "$repo/scripts/guide-json.mjs" "$repo/docs/raspberry-pi.md" "$@"; }
mkdir -p "$root/etc/rollcall"

step="guide: rollcall tls init"
"$bin" tls init --data "$root/var/lib/rollcall/hub" --host hub.lan > "$work/tls-init.log" 2>&1 || fail "rollcall tls init failed"
guide_json hub.json "$root" > "$root/etc/rollcall/hub.json" || fail "cannot take hub.json from docs/raspberry-pi.md"

step="guide: rollcall hub --check-config"
# Flags win over the file: loopback and free ports here, where the guide binds 0.0.0.0:8883 and :8080.
hub_flags=(--config "$root/etc/rollcall/hub.json" --host 127.0.0.1 --mqtt-tls-port 0 --http-port 0)
"$bin" hub --check-config "${hub_flags[@]}" > "$work/hub-check.log" 2>&1 || { cat "$work/hub-check.log" >&2; fail "rollcall hub --check-config refused the guide's hub.json"; }
grep -q 'mqtts://127.0.0.1:0' "$work/hub-check.log" || { cat "$work/hub-check.log" >&2; fail "hub --check-config does not show the TLS listener"; }

step="guide: rollcall hub --config"
rm -f "$work/hub-ready.json"
"$bin" hub "${hub_flags[@]}" --ready-file "$work/hub-ready.json" --log-format json > "$work/guide-hub.log" 2>&1 &
hub_pid=$!
wait_for "$START_TIMEOUT_S" "the TLS hub did not write its ready file" "$hub_pid" test -s "$work/hub-ready.json"
[ "$(json_field 'r => r.https' < "$work/hub-ready.json")" = true ] || fail "the hub from the guide's hub.json does not serve TLS"
tls_port="$(json_field 'r => r.mqttTlsPort' < "$work/hub-ready.json")"
api="https://127.0.0.1:$(json_field 'r => r.httpPort' < "$work/hub-ready.json")"
hub_data="$root/var/lib/rollcall/hub"
say "hub from the guide's hub.json (pid $hub_pid): mqtts://127.0.0.1:$tls_port $api"

step="guide: rollcall device add"
# Over HTTPS; the CLI pins the CA from the data dir's tls/ca.pem.
"$bin" device add pi-kitchen --api "$api" --data "$hub_data" --json > "$work/guide-device.json" || fail "rollcall device add over HTTPS failed"
token="$(json_field 'd => d.token' < "$work/guide-device.json")"
[ -n "$token" ] || fail "rollcall device add printed no token"

step="guide: the agent's files"
cp "$hub_data/tls/ca.pem" "$root/etc/rollcall/ca.pem"
(umask 077 && printf '%s\n' "$token" > "$root/etc/rollcall/agent.token")
guide_json agent.json "$root" "hub=mqtts://127.0.0.1:$tls_port" > "$root/etc/rollcall/agent.json" \
  || fail "cannot take agent.json from docs/raspberry-pi.md"

step="guide: rollcall agent --check-config"
"$bin" agent --check-config --config "$root/etc/rollcall/agent.json" --token-file "$root/etc/rollcall/agent.token" > "$work/agent-check.log" 2>&1 \
  || { cat "$work/agent-check.log" >&2; fail "rollcall agent --check-config refused the guide's agent.json"; }
grep -q 'over TLS' "$work/agent-check.log" || { cat "$work/agent-check.log" >&2; fail "agent --check-config does not say the hub is reached over TLS"; }
if grep -qF "$token" "$work/agent-check.log"; then fail "agent --check-config printed the token"; fi

step="guide: rollcall agent as the unit starts it"
# The unit's view: LoadCredential=token:/etc/rollcall/agent.token gives the
# service a private copy in $CREDENTIALS_DIRECTORY (mode 0400); nothing else
# carries the token.
creds="$work/credentials"
mkdir -m 700 "$creds"
cp "$root/etc/rollcall/agent.token" "$creds/token"
chmod 400 "$creds/token"
# And the unit's command line: node with the unit's flags (--jitless ...) and the installed CLI.
unit_flags="$(sed -n 's|^ExecStart=/usr/bin/node \(.*\) /usr/local/lib/node_modules/rollcall/dist/cli/main.js agent .*|\1|p' "$prefix/lib/node_modules/rollcall/deploy/systemd/rollcall-agent.service")"
[ -n "$unit_flags" ] || fail "cannot read node's flags from the installed rollcall-agent.service's ExecStart="
# shellcheck disable=SC2086 # the flags are words
env -u ROLLCALL_TOKEN -u ROLLCALL_TOKEN_FILE CREDENTIALS_DIRECTORY="$creds" \
  node $unit_flags "$(realpath "$bin")" agent --config "$root/etc/rollcall/agent.json" > "$work/guide-agent.log" 2>&1 &
agent_pid=$!
say "agent from the guide's agent.json (pid $agent_pid) started"

tls_online() {
  [ "$("$bin" device show pi-kitchen --api "$api" --data "$hub_data" --json 2>/dev/null | json_field 'd => d.presence?.status')" = online ]
}
wait_for "$ONLINE_TIMEOUT_S" "pi-kitchen did not come online over TLS" "$agent_pid" tls_online
tls_stored() {
  local n
  n="$("$bin" telemetry pi-kitchen --api "$api" --data "$hub_data" --json 2>/dev/null | json_field 'd => d.samples.length')"
  [ -n "$n" ] && [ "$n" -gt 0 ]
}
wait_for "$ONLINE_TIMEOUT_S" "no telemetry from pi-kitchen was stored" "$agent_pid" tls_stored
grep -q 'systemd credential' "$work/guide-agent.log" || fail "the agent did not say it took the token from the credential"
say "pi-kitchen online over TLS, telemetry stored: $("$bin" telemetry pi-kitchen --api "$api" --data "$hub_data" --json | json_field 'd => [...new Set(d.samples.map((s) => s.sensor))].sort().join(", ")')"

step="guide: systemctl reload (SIGHUP)"
# The guide's reload: a changed logLevel is applied live.
node -e 'const f = process.argv[1]; const fs = require("fs"); const c = JSON.parse(fs.readFileSync(f, "utf8")); c.logLevel = "debug"; fs.writeFileSync(f, JSON.stringify(c, null, 2))' "$root/etc/rollcall/agent.json"
kill -HUP "$agent_pid"
reloaded() { grep -q 'config reloaded: applied logLevel' "$work/guide-agent.log"; }
wait_for "$START_TIMEOUT_S" "the agent did not apply the reloaded config" "$agent_pid" reloaded
say "SIGHUP: the agent applied the new logLevel"

step="guide: stop"
stop agent "$agent_pid" || fail "the agent did not stop on SIGTERM"
agent_pid=""
stop hub "$hub_pid" || fail "the hub did not stop on SIGTERM"
hub_pid=""

say "PASS: rollcall-$version.tgz installs with no npm warnings; its CLI, hub, dashboard and agent work from the installed copy; the Raspberry Pi guide's hub.json and agent.json run over TLS with the token from a credentials dir"
