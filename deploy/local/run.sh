#!/usr/bin/env bash
# Runs the compose topology as local processes: a JetStream nats-server,
# send-service on :50051 and two all-messages-service replicas on :50052 and
# :50053. Ctrl-C stops everything. Called by `make run` after a release build.
#
# The broker gets its own port (default 4322) and store (target/local/nats),
# so a broker already listening on 4222 is left alone.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir="${FASTCHAT_BIN_DIR:-$root/target/release}"
nats_bin="${NATS_SERVER_BIN:-nats-server}"
nats_port="${FASTCHAT_LOCAL_NATS_PORT:-4322}"
state="$root/target/local"
mkdir -p "$state/nats" "$state/logs"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; then
  echo "port $nats_port is taken; set FASTCHAT_LOCAL_NATS_PORT to a free port" >&2
  exit 1
fi

"$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$state/nats" -l "$state/logs/nats.log" &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.1
done
echo "nats-server (JetStream) on nats://127.0.0.1:$nats_port, store $state/nats"

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

# Follow every log, each section headed by its file name.
tail -n +1 -F "$state"/logs/send-service.log "$state"/logs/all-messages-service-*.log &
pids+=($!)

echo "FastChat is running; Ctrl-C stops it. Try (second replica: --all-addr 127.0.0.1:50053):"
echo "  cargo run -q -p fastchat-cli -- tail"
echo "  cargo run -q -p fastchat-cli -- send --author ann 'hello'"
wait -n "${pids[@]}"
echo "a process exited; stopping the rest" >&2
exit 1
