#!/usr/bin/env bash
# ensure-package.sh BINARY PACKAGE: what some tests drive comes from Debian
# packages (chromium for the browser tests, promtool from prometheus for the
# metrics checks). Installs PACKAGE when BINARY is missing and we are root;
# otherwise says how.
set -euo pipefail
bin="$1" package="$2"
if [[ -x "$bin" ]] || command -v "$bin" >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing $package (Debian package) for the tests"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  fi
  exit 0
fi
echo "the tests need $bin: sudo apt-get install $package" >&2
exit 1
