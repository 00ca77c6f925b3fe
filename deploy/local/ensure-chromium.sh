#!/usr/bin/env bash
# The browser tests drive Debian's chromium (playwright-core cannot download
# its own browsers here). Installs it when missing and we are root; otherwise
# says how.
set -euo pipefail
bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ -x "$bin" ]]; then
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing chromium (Debian package) for the browser tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "the browser tests need chromium at $bin: sudo apt-get install chromium (or set CHROMIUM_BIN)" >&2
exit 1
