#!/usr/bin/env bash
# deploy/compose/test.sh (`make compose-test`): build the images and run the real
# deploy/compose/docker-compose.yml on a local Docker engine, then check it from the host.
#
#  1. deploy/docker/engine.sh: a Docker engine (docker.io installed and dockerd started when
#     none answers) and Docker Compose v2.
#  2. deploy/docker/base-images.sh: local stand-ins for the public base images (no registry
#     is reachable here), cached in the engine.
#  3. `make docker` with the stand-ins as RUST_IMAGE, NODE_IMAGE and RUNTIME_IMAGE.
#  4. Fresh credentials (deploy/secrets.sh) in target/compose-test/<project>/.env; the JWT key
#     is deploy/compose/secrets/jwt-hmac (git-ignored), generated only when missing; an
#     override file that only swaps the nats image names for the stand-in; free host ports
#     (FASTCHAT_*_PORT) on 127.0.0.1; a project name of its own (fastchat-ct-<random>).
#  5. tests/tests/compose.rs (ignored by a plain `cargo test`): `docker compose up`, the
#     checks, and `docker compose down -v`; it prints what it measured.
# The project is taken down (down -v) however this script ends.
#
# Environment: IMAGE_NAMESPACE, IMAGE_TAG (the Makefile's), BASE_NAMESPACE (base-images.sh),
# IMAGE_PROFILE (the Dockerfile's CARGO_PROFILE: dist by default; .ci/run sets ci-image),
# COMPOSE_TEST_BUILD=0 skips `make docker` (checks the images there are), COMPOSE_TEST_KEEP=1 leaves target/compose-test/<project> (credentials) for a look.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
IMAGE_PROFILE="${IMAGE_PROFILE:-dist}"
say() { echo "compose-test: $*"; }
step() { say "$1 took $(( SECONDS - $2 )) s"; }

t=$SECONDS; deploy/docker/engine.sh; step "engine" "$t"

t=$SECONDS
deploy/docker/base-images.sh >/dev/null
# shellcheck disable=SC1091
source target/docker/base-images.env
step "base images" "$t"

t=$SECONDS
if [[ "${COMPOSE_TEST_BUILD:-1}" == 0 ]]; then
  say "COMPOSE_TEST_BUILD=0: using the images there are"
else
  say "make docker with the cargo profile $IMAGE_PROFILE"
  make --no-print-directory docker DOCKER_BUILD_ARGS="--build-arg RUST_IMAGE=$RUST_IMAGE \
    --build-arg NODE_IMAGE=$NODE_IMAGE --build-arg RUNTIME_IMAGE=$RUNTIME_IMAGE \
    --build-arg CARGO_PROFILE=$IMAGE_PROFILE" \
    >target/docker/build.log 2>&1 || { tail -40 target/docker/build.log; say "make docker failed (target/docker/build.log)"; exit 1; }
  step "make docker (log: target/docker/build.log)" "$t"
fi
# What a rebuild left untagged (an older image of the same name): ours, so ours to remove.
docker image prune -f --filter "label=org.opencontainers.image.vendor=FastChat" >/dev/null

IMAGE_NAMESPACE="${IMAGE_NAMESPACE:-$(sed -n 's/^IMAGE_NAMESPACE *?= *//p' Makefile)}"
IMAGE_TAG="${IMAGE_TAG:-$(sed -n 's/^IMAGE_TAG *?= *//p' Makefile)}"
export IMAGE_NAMESPACE IMAGE_TAG
say "images:"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E "^($IMAGE_NAMESPACE|${BASE_NAMESPACE:-localhost/fastchat-base})/" | sort | sed 's/^/  /' || true
for service in send-service all-messages-service; do
  docker image inspect --format "  $service:$IMAGE_TAG labels: version={{index .Config.Labels \"org.opencontainers.image.version\"}} revision={{index .Config.Labels \"org.opencontainers.image.revision\"}} created={{index .Config.Labels \"org.opencontainers.image.created\"}} source={{index .Config.Labels \"org.opencontainers.image.source\"}}" \
    "$IMAGE_NAMESPACE/$service:$IMAGE_TAG"
done

project="fastchat-ct-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
dir="$PWD/target/compose-test/$project"
mkdir -p "$dir" && chmod 700 "$dir"
cleanup() {
  docker compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  [[ "${COMPOSE_TEST_KEEP:-}" == 1 ]] || rm -rf "$dir"
}
trap cleanup EXIT

# Credentials: a fresh .env of this run's own; the key compose mounts from deploy/compose/secrets/.
key=deploy/compose/secrets/jwt-hmac
if [[ -s "$key" ]]; then
  deploy/secrets.sh compose --out "$dir/.env" --jwt-out "$dir/unused-jwt-hmac" >/dev/null
else
  deploy/secrets.sh compose --out "$dir/.env" --jwt-out "$key" >/dev/null
fi

# The override: image names only.
cat >"$dir/images.yml" <<EOF
# $project: the local stand-in for the public nats image (deploy/docker/base-images.sh).
services:
  nats-data-init:
    image: $NATS_IMAGE
  nats:
    image: $NATS_IMAGE
EOF

# Four free ports on 127.0.0.1, the replicas' two next to each other (compose's port range).
read -r nats_port send_port first_port < <(python3 - <<'PYTHON'
import random, socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port)); return True
        except OSError:
            return False
ports = []
while len(ports) < 2:
    p = random.randint(20000, 59000)
    if free(p) and p not in ports:
        ports.append(p)
while True:
    p = random.randint(20000, 59000)
    if free(p) and free(p + 1) and not {p, p + 1} & set(ports):
        break
print(ports[0], ports[1], p)
PYTHON
)
export COMPOSE_PROJECT_NAME="$project"
export COMPOSE_FILE="$PWD/deploy/compose/docker-compose.yml:$dir/images.yml"
export COMPOSE_ENV_FILES="$dir/.env"
export FASTCHAT_BIND_ADDR=127.0.0.1
export FASTCHAT_NATS_PORT="$nats_port" FASTCHAT_SEND_PORT="$send_port"
export FASTCHAT_ALL_MESSAGES_PORT_FIRST="$first_port" FASTCHAT_ALL_MESSAGES_PORT_LAST="$(( first_port + 1 ))"
export COMPOSE_TEST_JWT_KEY="$PWD/$key" COMPOSE_TEST_ENV_FILE="$dir/.env" COMPOSE_TEST_PROBE_IMAGE="$NATS_IMAGE"
say "project $project: nats 127.0.0.1:$nats_port, send-service :$send_port, all-messages-service :$first_port-$(( first_port + 1 ))"
docker compose config -q

t=$SECONDS
cargo build --locked --quiet -p fastchat-e2e --test compose
step "building the check (tests/tests/compose.rs)" "$t"
t=$SECONDS
cargo test --locked --quiet -p fastchat-e2e --test compose -- --ignored --nocapture --test-threads 1
step "the checks" "$t"
say "done in $(( SECONDS - started )) s"
