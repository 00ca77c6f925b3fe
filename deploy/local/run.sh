#!/usr/bin/env bash
# Runs the compose topology as local processes: a JetStream nats-server,
# send-service on :50051 and two all-messages-service replicas on :50052 and
# :50053. Builds the release binaries (services and the `fastchat` CLI) first.
# FASTCHAT_LOCAL_PROFILE=debug runs target/debug's binaries instead, as
# `cargo build --workspace --bins` (and `make test`) left them, without
# building anything (the Prometheus test, `make test-prometheus`, does this).
# Ctrl-C stops everything and exits 0. Called by `make run`.
#
# Authentication, set up for LOCAL DEVELOPMENT ONLY: the services check JWTs
# against a development HMAC key, target/local/dev-secret (48 random bytes,
# base64url; made on the first run and kept, mode 600), named in a
# configuration file written on every run, target/local/fastchat.toml. That
# file also lets callers WITHOUT a token write to #general and read every
# room, so the unchanged seed client and `fastchat` without a token work as
# before; the run says so in a box. It prints an `export FASTCHAT_TOKEN=...`
# with full access (sub `dev`, every room read and write, 12 h; also in
# target/local/dev-token), minted with `fastchat token`. Compose and
# Kubernetes grant nothing anonymously (deploy/README.md, "Authentication").
#
# The broker gets its own port (default 4322) and store (target/local/nats),
# so a broker already listening on 4222 is left alone.
#
# One run at a time: the script takes an exclusive flock on
# target/local/run.lock and every process it starts inherits it, so the lock
# is held while any of them lives and the kernel releases it when the last one
# exits (a run killed with SIGKILL leaves no stale lock once its processes are
# gone). A second run, or a run whose ports are taken, stops before it starts
# or truncates anything: it never opens the store or the logs of a running one.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
profile="${FASTCHAT_LOCAL_PROFILE:-release}"
case "$profile" in
  release | debug) ;;
  *)
    echo "make run: FASTCHAT_LOCAL_PROFILE must be release or debug, not '$profile'" >&2
    exit 64
    ;;
esac
bin_dir="$root/target/$profile"
nats_bin="${NATS_SERVER_BIN:-nats-server}"
nats_port="${FASTCHAT_LOCAL_NATS_PORT:-4322}"
state="$root/target/local"
lock="$state/run.lock"

# Under `make run` in a terminal, Ctrl-C would also reach make, which then
# reports the recipe as failed and exits 130. So run again under job control
# (bash -m): in a process group of its own that has the terminal, where Ctrl-C
# reaches only this script and its processes, and `make run` exits 0. Not when
# in the background or without a terminal (CI, nohup): nothing changes there.
if [[ -t 0 && -z "${FASTCHAT_RUN_AS_JOB:-}" ]]; then
  read -r _ _ _ _ pgrp _ _ tpgid _ </proc/$$/stat
  if [[ "$pgrp" == "$tpgid" ]]; then
    export FASTCHAT_RUN_AS_JOB=1
    exec bash -m -c '"$0" "$@"' "$0" "$@"
  fi
fi
# The services read FASTCHAT_* variables: keep this script's own from them.
unset FASTCHAT_RUN_AS_JOB FASTCHAT_LOCAL_PROFILE

mkdir -p "$state"
exec 9<>"$lock"
if ! flock -n 9; then
  exec 9>&- # not ours: close it, so the processes below do not show up as holders
  holder=$(cat "$state/run.pid" 2>/dev/null || true)
  if [[ -n "$holder" ]] && kill -0 "$holder" 2>/dev/null; then
    echo "make run: FastChat is already running (pid $holder); stop it with Ctrl-C in its terminal" >&2
  else
    # The script was killed but processes it started still run (and use the
    # store and ports): name them.
    left=$(find /proc/[0-9]*/fd -lname "$lock" 2>/dev/null | cut -d/ -f3 | sort -un | tr '\n' ' ' || true)
    left=${left% }
    echo "make run: an earlier run (pid ${holder:-unknown}) was killed, but processes it started still run: ${left:-?}" >&2
    echo "make run: stop them with: kill ${left:-<pids>}" >&2
  fi
  exit 1
fi
echo "$$" >"$state/run.pid"
# Ctrl-C is how a run is meant to end, during the build too: exit 0.
trap 'echo "make run: interrupted" >&2; rm -f "$state/run.pid"; exit 0' INT TERM

# Every port this run listens on, checked before anything starts. SO_REUSEADDR
# as the servers set it, so ports of a run that just ended (TIME_WAIT) count as
# free and only a real listener counts as taken.
ports=(
  "$nats_port:nats-server (set FASTCHAT_LOCAL_NATS_PORT to move it)"
  "50051:send-service gRPC" "9091:send-service metrics"
  "50052:all-messages-service-1 gRPC" "9092:all-messages-service-1 metrics"
  "50053:all-messages-service-2 gRPC" "9093:all-messages-service-2 metrics"
)
check_ports() {
  python3 - "${ports[@]}" <<'EOF'
import socket, sys
taken = []
for spec in sys.argv[1:]:
    port, what = spec.split(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(port)))
    except OSError as e:
        taken.append(f"  127.0.0.1:{port} ({what}): {e.strerror}")
    finally:
        s.close()
if taken:
    print("make run: these ports are taken, so nothing was started:", *taken, sep="\n", file=sys.stderr)
    sys.exit(1)
EOF
}
check_ports

# The development JWT key, made once and kept, so tokens minted earlier stay
# valid across runs. Whoever can read it can mint any token: mode 600.
secret="$state/dev-secret"
if [[ ! -e "$secret" ]]; then
  (
    umask 077
    python3 -c 'import base64, secrets, sys
sys.stdout.write(base64.urlsafe_b64encode(secrets.token_bytes(48)).decode())' >"$secret.tmp"
    mv "$secret.tmp" "$secret"
  )
  echo "created the development JWT key target/local/dev-secret (48 random bytes, base64url; kept across runs)"
fi
if [[ "$(stat -c %a "$secret")" != 600 ]]; then
  chmod 600 "$secret"
  echo "target/local/dev-secret was readable by others: it is mode 600 now"
fi
secret_bytes=$(tr -d '\n' <"$secret" | wc -c)
if ((secret_bytes < 32)); then
  echo "make run: target/local/dev-secret has $secret_bytes bytes; an HMAC key needs at least 32." >&2
  echo "make run: delete it and run again for a new one (tokens minted with it stop working)" >&2
  exit 1
fi

# The services' configuration for this run, rewritten every time (it names
# the key by its absolute path). FASTCHAT_AUTH__* variables in this shell
# still override it.
config="$state/fastchat.toml"
secret_toml=${secret//\\/\\\\}
secret_toml=${secret_toml//\"/\\\"}
cat >"$config" <<EOF
# Written by deploy/local/run.sh (make run) on every run: LOCAL DEVELOPMENT ONLY.
# Edits are lost on the next run; set FASTCHAT_AUTH__* variables instead.
[auth]
mode = "jwt"

[auth.jwt]
# Tokens: target/$profile/fastchat token --secret-file target/local/dev-secret ...
hmac_secret_file = "$secret_toml"

# Callers WITHOUT a token may write to #general and read every room: what the
# seed client needs. The first grant whose pattern matches a room decides, so
# the grant for general allows read as well (general=write before *=read
# would refuse them reading #general and subscribing to every room).
[[auth.anonymous]]
rooms = ["general"]
allow = ["read", "write"]

[[auth.anonymous]]
rooms = ["*"]
allow = ["read"]

# The web chat page is served by the all-messages replicas (their
# FASTCHAT_WEB__STATIC_DIR below); it sends to send-service on :50051, which
# must allow the page's origins.
[web]
allowed_origins = ["http://127.0.0.1:50052", "http://localhost:50052", "http://127.0.0.1:50053", "http://localhost:50053"]
send_url = "http://127.0.0.1:50051"
EOF

if [[ "$profile" == release ]]; then
  echo "building release binaries: send-service, all-messages-service, fastchat (CLI)"
  echo "  (the first release build takes ~4-5 minutes on 2 cores; later ones seconds)"
  "${CARGO:-cargo}" build --locked --release -p send-service -p all-messages-service -p fastchat-cli
else
  for binary in send-service all-messages-service fastchat; do
    if [[ ! -x "$bin_dir/$binary" ]]; then
      echo "make run: FASTCHAT_LOCAL_PROFILE=debug: target/debug/$binary is missing; build it first:" >&2
      echo "  cargo build --locked --workspace --bins" >&2
      exit 1
    fi
  done
  echo "using the debug binaries in target/debug as they are (FASTCHAT_LOCAL_PROFILE=debug: nothing built)"
fi
# The build took a while: check again that nothing took a port meanwhile.
check_ports

# Does each service accept this configuration? `healthcheck` loads and
# validates it first (exit 64 if it is unusable), then finds nothing on the
# free port (exit 1). Services built before the `auth` section existed refuse
# it as an unknown key: those run without --config, unauthenticated, and the
# box below says so. (Transitional: once every build has `auth`, a refusal
# is always an error.)
service_args=(--config "$config")
auth_in_build=1
for service in send-service all-messages-service; do
  set +e
  refusal=$(FASTCHAT_GRPC__LISTEN=127.0.0.1:50051 "$bin_dir/$service" --config "$config" \
    healthcheck --timeout 100ms 2>&1)
  rc=$?
  set -e
  if [[ $rc -eq 64 ]]; then
    # figment says "unknown field: found `auth`, expected one of ..."
    if [[ "$refusal" == *"unknown field"*"\`auth\`"* ]]; then
      auth_in_build=""
    else
      echo "make run: $service refuses target/local/fastchat.toml:" >&2
      echo "$refusal" >&2
      exit 1
    fi
  fi
done
if [[ -z "$auth_in_build" ]]; then
  service_args=()
fi

mkdir -p "$state/nats" "$state/logs"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$state/run.pid"
}
trap cleanup EXIT
# Ctrl-C (SIGINT) and SIGTERM are how a run is meant to end: exit 0.
trap 'cleanup; exit 0' INT TERM

"$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$state/nats" -l "$state/logs/nats.log" &
nats_pid=$!
pids+=("$nats_pid")
up=""
for _ in $(seq 1 100); do
  kill -0 "$nats_pid" 2>/dev/null || break
  if (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
if [[ -z "$up" ]]; then
  echo "make run: nats-server did not start; see target/local/logs/nats.log" >&2
  exit 1
fi
echo "nats-server (JetStream) on nats://127.0.0.1:$nats_port, store target/local/nats"

export FASTCHAT_NATS__URL="nats://127.0.0.1:$nats_port"
start() { # name grpc-listen metrics-listen [VAR=value ...]
  local name=$1 listen=$2 metrics=$3
  shift 3
  # Straight to a file, so $! is the service itself (a pipe or process
  # substitution here would make it the filter's PID, and Ctrl-C would leave
  # the service running).
  env "$@" FASTCHAT_GRPC__LISTEN="$listen" FASTCHAT_METRICS__LISTEN="$metrics" "$bin_dir/${name%-[0-9]}" \
    "${service_args[@]}" >"$state/logs/$name.log" 2>&1 &
  pids+=($!)
  echo "$name on $listen (metrics: http://$metrics/metrics, log: target/local/logs/$name.log)"
}
start send-service 127.0.0.1:50051 127.0.0.1:9091
page=("FASTCHAT_WEB__STATIC_DIR=$root/web/dist")
start all-messages-service-1 127.0.0.1:50052 127.0.0.1:9092 "${page[@]}"
start all-messages-service-2 127.0.0.1:50053 127.0.0.1:9093 "${page[@]}"

# A development token with full access, signed with the development key.
# `fastchat token` comes with the CLI's authentication support: a CLI built
# without it gets no token, and the run goes on.
fastchat="$bin_dir/fastchat"
token_ttl=12h
token_args=(token --secret-file "$secret" --sub dev --rooms '*=read,write' --ttl "$token_ttl")
dev_token=""
token_note=""
if ! "$fastchat" token --help >/dev/null 2>&1; then
  token_note="this build's fastchat has no \`token\` subcommand yet"
elif ! dev_token=$("$fastchat" "${token_args[@]}" 2>"$state/logs/token.log"); then
  dev_token=""
  token_note="fastchat token failed (target/local/logs/token.log): $(head -n 1 "$state/logs/token.log")"
else
  dev_token=${dev_token//[[:space:]]/}
  (umask 077; printf '%s\n' "$dev_token" >"$state/dev-token.tmp")
  mv "$state/dev-token.tmp" "$state/dev-token"
fi

# Ready when every service reports SERVING (the CLI's health command checks
# send-service and one all-messages replica at a time). Health needs no
# token; the dev token is passed in case it ever does.
with_token=()
[[ -n "$dev_token" ]] && with_token=("FASTCHAT_TOKEN=$dev_token")
serving() {
  env "${with_token[@]}" "$fastchat" --timeout 1s health >/dev/null 2>&1 &&
    env "${with_token[@]}" "$fastchat" --timeout 1s --all-addr 127.0.0.1:50053 health >/dev/null 2>&1
}
ready=""
for _ in $(seq 1 60); do
  if serving; then ready=1; break; fi
  sleep 0.5
done
if [[ -z "$ready" ]]; then
  echo "make run: not every service reports SERVING after 30 s; their logs follow" >&2
fi

# Follow every log, each section headed by its file name.
tail -n +1 -F "$state"/logs/send-service.log "$state"/logs/all-messages-service-*.log &
pids+=($!)
sleep 0.5

# A box that cannot be missed: what callers without a token may do here.
box() {
  local line width=78
  printf '+%s+\n' "$(printf '%*s' "$width" '' | tr ' ' '!')"
  for line in "$@"; do printf '! %-*s !\n' "$((width - 2))" "$line"; done
  printf '+%s+\n' "$(printf '%*s' "$width" '' | tr ' ' '!')"
}
fc=target/$profile/fastchat
echo
echo "FastChat is running; Ctrl-C here stops it."
echo
if [[ -n "$auth_in_build" ]]; then
  box "WARNING: anonymous callers may write to #general and read every room:" \
    "local development only." \
    "" \
    "Callers WITHOUT a token get that (target/local/fastchat.toml, written" \
    "by make run). Tokens are checked against target/local/dev-secret." \
    "Compose and Kubernetes grant callers without a token nothing."
else
  box "WARNING: THESE SERVICES CHECK NO TOKENS: every caller may do everything." \
    "" \
    "They were built without the \`auth\` configuration section (unknown field" \
    "\`auth\`), so make run started them without target/local/fastchat.toml." \
    "Local development only."
fi
echo
echo "The web chat page: http://127.0.0.1:50052/ (the second replica: http://127.0.0.1:50053/)"
echo "Metrics: http://127.0.0.1:9091/metrics (send-service), :9092 and :9093 (all-messages-service);"
echo "  prometheus --config.file=deploy/local/prometheus.yml scrapes all three (README: Metrics)"
if [[ -n "$dev_token" ]]; then
  echo "  signed in as dev: http://127.0.0.1:50052/#token=$dev_token"
fi
echo
if [[ -n "$dev_token" ]]; then
  cat <<EOF
Full access for $token_ttl (sub dev, every room read and write), in another terminal:
  export FASTCHAT_TOKEN=$dev_token
  (the same: export FASTCHAT_TOKEN=\$(cat target/local/dev-token))
EOF
else
  cat <<EOF
No development token: $token_note.
  Once it has one: export FASTCHAT_TOKEN=\$($fc token --secret-file target/local/dev-secret --sub dev --rooms '*=read,write' --ttl $token_ttl)
EOF
fi
if [[ -n "$auth_in_build" ]]; then
  echo
  echo "In another terminal, without a token (what anonymous callers may do):"
else
  echo
  echo "In another terminal:"
fi
cat <<EOF
  $fc tail                          # every room: history, then live
  $fc send --author ann 'hello'     # to #general
  $fc history --room general --limit 10
  $fc health
  $fc --all-addr 127.0.0.1:50053 tail   # the second all-messages replica
With FASTCHAT_TOKEN set (a token's sub is the author):
  $fc send --room dev --author dev 'deploy done'
  $fc token --secret-file target/local/dev-secret --sub alice --rooms 'general,team-*=read,write;*=read' --ttl 1h

EOF
set +e
wait -n "${pids[@]}"
set -e
echo "make run: a process exited; stopping the rest (logs: target/local/logs)" >&2
exit 1
