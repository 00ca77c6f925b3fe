#!/usr/bin/env bash
# Runs the compose topology as local processes: a JetStream nats-server,
# send-service on :50051 and two all-messages-service replicas on :50052 and
# :50053. Builds the release binaries (services and the `fastchat` CLI) first.
# Ctrl-C stops everything and exits 0. Called by `make run`.
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
bin_dir="$root/target/release"
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
unset FASTCHAT_RUN_AS_JOB # the services read FASTCHAT_* variables: keep it from them

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

echo "building release binaries: send-service, all-messages-service, fastchat (CLI)"
echo "  (the first release build takes ~4-5 minutes on 2 cores; later ones seconds)"
"${CARGO:-cargo}" build --locked --release -p send-service -p all-messages-service -p fastchat-cli
# The build took a while: check again that nothing took a port meanwhile.
check_ports

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
start() { # name grpc-listen metrics-listen
  local name=$1 listen=$2 metrics=$3
  # Straight to a file, so $! is the service itself (a pipe or process
  # substitution here would make it the filter's PID, and Ctrl-C would leave
  # the service running).
  FASTCHAT_GRPC__LISTEN="$listen" FASTCHAT_METRICS__LISTEN="$metrics" "$bin_dir/${name%-[0-9]}" \
    >"$state/logs/$name.log" 2>&1 &
  pids+=($!)
  echo "$name on $listen (metrics: http://$metrics/metrics, log: target/local/logs/$name.log)"
}
start send-service 127.0.0.1:50051 127.0.0.1:9091
start all-messages-service-1 127.0.0.1:50052 127.0.0.1:9092
start all-messages-service-2 127.0.0.1:50053 127.0.0.1:9093

# Ready when every service reports SERVING (the CLI's health command checks
# send-service and one all-messages replica at a time).
fastchat="$bin_dir/fastchat"
serving() {
  "$fastchat" --timeout 1s health >/dev/null 2>&1 &&
    "$fastchat" --timeout 1s --all-addr 127.0.0.1:50053 health >/dev/null 2>&1
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

cat <<EOF

FastChat is running; Ctrl-C here stops it. In another terminal:
  target/release/fastchat tail                          # every room: history, then live
  target/release/fastchat send --author ann 'hello'
  target/release/fastchat history --room general --limit 10
  target/release/fastchat health
  target/release/fastchat --all-addr 127.0.0.1:50053 tail   # the second all-messages replica

EOF
set +e
wait -n "${pids[@]}"
set -e
echo "make run: a process exited; stopping the rest (logs: target/local/logs)" >&2
exit 1
