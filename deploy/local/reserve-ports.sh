#!/usr/bin/env bash
# deploy/local/reserve-ports.sh: keeps the kernel from handing out make run's gRPC ports
# (50051-50053, inside Linux's default ephemeral range 32768-60999) as the local port of an
# outgoing connection. Without it, after a test suite that opens thousands of connections,
# one of them can hold 127.0.0.1:5005x for minutes and `make run` (and the Prometheus test
# that starts it) finds the port taken. Adds the range to net.ipv4.ip_local_reserved_ports
# (which only affects ephemeral port choice: listening on a reserved port still works) when
# this runs as root and the setting is writable; otherwise says so and changes nothing.
# `make test` runs it first. Undo: sysctl -w net.ipv4.ip_local_reserved_ports=<the old list>.
set -euo pipefail
range=50051-50053
file=/proc/sys/net/ipv4/ip_local_reserved_ports
[[ -r "$file" ]] || exit 0
current="$(tr -d ' \n' <"$file")"
if [[ ",$current," == *",$range,"* ]]; then
  exit 0
fi
if [[ "$(id -u)" != 0 || ! -w "$file" ]]; then
  echo "reserve-ports: not root: ports $range stay in the ephemeral range (make run may find one taken right after a test suite)" >&2
  exit 0
fi
new="${current:+$current,}$range"
if echo "$new" >"$file" 2>/dev/null; then
  echo "reserve-ports: net.ipv4.ip_local_reserved_ports = $(cat "$file") (make run's gRPC ports are no outgoing connection's)"
else
  echo "reserve-ports: could not write $file: ports $range stay in the ephemeral range" >&2
fi
