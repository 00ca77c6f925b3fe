#!/usr/bin/env bash
# deploy/docker/base-images.sh: local stand-ins for the public base images of
# deploy/docker/Dockerfile and deploy/compose/docker-compose.yml, for an engine that cannot pull
# from a registry (this project's CI). Built from Debian packages (debootstrap + docker import)
# and from what this machine has; each is skipped when an image of the same name and recipe
# (label fastchat.base.recipe, a hash of this script and its inputs' versions) is present.
#
#   deploy/docker/base-images.sh          # prints the four names as NAME=image lines (also
#                                         # written to target/docker/base-images.env)
#
#   stand-in                                      for the public image (build argument)
#   $BASE_NAMESPACE/rust:<rust>-slim-bookworm      rust:<rust>-slim-bookworm   (RUST_IMAGE)
#       Debian 12 minbase + gcc, libc6-dev, ca-certificates; rustup and the toolchain of
#       rust-toolchain.toml (bin/, lib/, libexec/ of this machine's ~/.rustup, docs left out) in
#       /usr/local/rustup, CARGO_HOME=/usr/local/cargo: the rust image's layout.
#   $BASE_NAMESPACE/cc-debian12:nonroot            gcr.io/distroless/cc-debian12:nonroot (RUNTIME_IMAGE)
#       the files of libc6, libgcc-s1, libstdc++6, tzdata, netbase and the CA bundle from the
#       same Debian root, /etc/passwd with nonroot (65532), /tmp; no shell, no package manager.
#   $BASE_NAMESPACE/node:20-bookworm-slim          node:20-bookworm-slim (NODE_IMAGE)
#       the Debian root + this machine's node 20 and npm (/usr/bin/node, /usr/lib/node_modules/npm).
#   $BASE_NAMESPACE/nats:<nats>-alpine             nats:<nats>-alpine (compose's nats services)
#       deploy/nats-version's nats-server (target/tools/nats, what the tests run; `make setup`)
#       + Debian's busybox-static for the shell tools compose uses (wget, chown).
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE_NAMESPACE="${BASE_NAMESPACE:-localhost/fastchat-base}"
RUST_VERSION="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
NATS_VERSION="$(cat deploy/nats-version)"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
STATE=target/docker
mkdir -p "$STATE"

RUST_IMAGE="$BASE_NAMESPACE/rust:$RUST_VERSION-slim-$SUITE"
RUNTIME_IMAGE="$BASE_NAMESPACE/cc-debian12:nonroot"
NODE_IMAGE="$BASE_NAMESPACE/node:20-$SUITE-slim"
NATS_IMAGE="$BASE_NAMESPACE/nats:$NATS_VERSION-alpine"
DEBIAN_IMAGE="$BASE_NAMESPACE/debian:$SUITE-minbase"

NODE_BIN="${NODE_BIN:-$(command -v node || true)}"
NATS_BIN="${NATS_SERVER_BIN:-target/tools/nats/bin/nats-server}"
RUSTUP_HOME_HOST="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_HOME_HOST="${CARGO_HOME:-$HOME/.cargo}"
TOOLCHAIN="$RUSTUP_HOME_HOST/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu"
# The build stages fetch crates and npm packages over TLS: the rust and node stand-ins trust
# what this machine trusts (its CA bundle, which may hold a local proxy's CA), as an image
# from a company's mirror would. The runtime stand-in keeps Debian's bundle.
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# Bump a recipe's version when what it builds changes: the image is rebuilt.
recipe() { echo "v1-$1"; }
have() { # have IMAGE RECIPE: the image exists and was made by this recipe
  [[ "$(docker image inspect --format '{{index .Config.Labels "fastchat.base.recipe"}}' "$1" 2>/dev/null)" == "$2" ]]
}
ensure_pkg() { # ensure_pkg BINARY PACKAGE
  command -v "$1" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends "$2" >/dev/null
}

ROOT=""
cleanup() { if [[ -n "$ROOT" && -d "$ROOT" ]]; then rm -rf "$ROOT"; fi; }
trap cleanup EXIT

# The Debian root the other images start from: minbase + what the rust image has (gcc,
# libc6-dev, ca-certificates). node needs libstdc++6 (in minbase).
debian_root() {
  [[ -n "$ROOT" ]] && return 0
  ensure_pkg debootstrap debootstrap
  ROOT="$(mktemp -d "${TMPDIR:-/tmp}/fastchat-rootfs.XXXXXX")"
  echo "base-images: debootstrap $SUITE (minbase + gcc, libc6-dev, ca-certificates) from $MIRROR" >&2
  local started=$SECONDS
  debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,netbase,tzdata \
    "$SUITE" "$ROOT/rootfs" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
  rm -rf "$ROOT"/rootfs/var/cache/apt/archives/*.deb "$ROOT"/rootfs/var/lib/apt/lists/* \
    "$ROOT"/rootfs/usr/share/doc/* "$ROOT"/rootfs/usr/share/man/*
  echo "base-images: debootstrap took $(( SECONDS - started )) s" >&2
}

build_debian() {
  local r; r="$(recipe debian)"
  have "$DEBIAN_IMAGE" "$r" && return 0
  debian_root
  tar -C "$ROOT/rootfs" --numeric-owner -c . | docker import \
    --change "LABEL fastchat.base.recipe=$r" --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$DEBIAN_IMAGE" >/dev/null
}

# commit_from_debian IMAGE RECIPE CHANGES... < tar stream of files to add at /
commit_from_debian() {
  local image="$1" r="$2"; shift 2
  local c changes=()
  for ch in "$@"; do changes+=(--change "$ch"); done
  c="$(docker create "$DEBIAN_IMAGE" true)"
  docker cp - "$c:/"
  docker commit "${changes[@]}" --change "LABEL fastchat.base.recipe=$r" "$c" "$image" >/dev/null
  docker rm "$c" >/dev/null
}

add_host_ca() { # add_host_ca STAGE_DIR
  mkdir -p "$1/etc/ssl/certs"
  cp "$HOST_CA_BUNDLE" "$1/etc/ssl/certs/ca-certificates.crt"
}

build_rust() {
  local r; r="$(recipe "rust-$RUST_VERSION-ca")"
  have "$RUST_IMAGE" "$r" && return 0
  [[ -x "$TOOLCHAIN/bin/cargo" ]] || { echo "base-images: no Rust $RUST_VERSION toolchain at $TOOLCHAIN (rustup toolchain install $RUST_VERSION)" >&2; exit 1; }
  [[ -x "$CARGO_HOME_HOST/bin/rustup" ]] || { echo "base-images: no rustup at $CARGO_HOME_HOST/bin/rustup" >&2; exit 1; }
  build_debian
  echo "base-images: $RUST_IMAGE (toolchain from $TOOLCHAIN)" >&2
  local stage; stage="$(mktemp -d "${TMPDIR:-/tmp}/fastchat-rust.XXXXXX")"
  local tc="$stage/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu"
  mkdir -p "$tc" "$stage/usr/local/cargo/bin"
  # The toolchain without its documentation (share/doc, the HTML book: most of its size).
  (cd "$(realpath "$TOOLCHAIN")" && tar -c bin lib libexec etc 2>/dev/null) | tar -C "$tc" -x
  cp "$CARGO_HOME_HOST/bin/rustup" "$stage/usr/local/cargo/bin/rustup"
  for proxy in cargo rustc rustdoc; do ln -s rustup "$stage/usr/local/cargo/bin/$proxy"; done
  printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\n' \
    "$RUST_VERSION" >"$stage/usr/local/rustup/settings.toml"
  add_host_ca "$stage"
  tar -C "$stage" --numeric-owner -c usr etc | commit_from_debian "$RUST_IMAGE" "$r" \
    'ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION='"$RUST_VERSION"
  rm -rf "$stage"
}

build_node() {
  [[ -n "$NODE_BIN" ]] || { echo "base-images: no node on this machine" >&2; exit 1; }
  local node_version; node_version="$("$NODE_BIN" --version)"
  [[ "$node_version" == v20.* ]] || { echo "base-images: node $node_version is not node 20" >&2; exit 1; }
  local r; r="$(recipe "node-$node_version-ca")"
  have "$NODE_IMAGE" "$r" && return 0
  local npm_dir; npm_dir="$(dirname "$(realpath "$NODE_BIN")")/../lib/node_modules/npm"
  [[ -f "$npm_dir/bin/npm-cli.js" ]] || { echo "base-images: no npm at $npm_dir" >&2; exit 1; }
  build_debian
  echo "base-images: $NODE_IMAGE (node $node_version from $NODE_BIN)" >&2
  local stage; stage="$(mktemp -d "${TMPDIR:-/tmp}/fastchat-node.XXXXXX")"
  mkdir -p "$stage/usr/local/bin" "$stage/usr/local/lib/node_modules"
  cp "$(realpath "$NODE_BIN")" "$stage/usr/local/bin/node"
  cp -a "$(realpath "$npm_dir")" "$stage/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
  add_host_ca "$stage"
  tar -C "$stage" --numeric-owner -c usr etc | commit_from_debian "$NODE_IMAGE" "$r" \
    "ENV NODE_VERSION=${node_version#v} NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" 'CMD ["node"]'
  rm -rf "$stage"
}

# copy_pkg_files PKG...: the files of Debian packages from $ROOT/rootfs to $ROOT/runtime, under
# their real (merged /usr) paths.
copy_pkg_files() {
  local p dir
  chroot "$ROOT/rootfs" dpkg-query -L "$@" | sort -u | while read -r p; do
    [[ -e "$ROOT/rootfs$p" || -L "$ROOT/rootfs$p" ]] || continue
    [[ -d "$ROOT/rootfs$p" && ! -L "$ROOT/rootfs$p" ]] && continue
    case "$p" in /usr/share/doc/*|/usr/share/man/*|/usr/share/lintian/*|/usr/share/locale/*) continue ;; esac
    dir="$(realpath "$ROOT/rootfs$(dirname "$p")")"
    dir="${dir#"$ROOT/rootfs"}"
    mkdir -p "$ROOT/runtime$dir"
    cp -a "$ROOT/rootfs$dir/$(basename "$p")" "$ROOT/runtime$dir/"
  done
}

build_runtime() {
  local r; r="$(recipe runtime)"
  have "$RUNTIME_IMAGE" "$r" && return 0
  debian_root
  echo "base-images: $RUNTIME_IMAGE (glibc, libgcc, libstdc++, CA certificates, nonroot 65532)" >&2
  local rt="$ROOT/runtime"
  rm -rf "$rt"; mkdir -p "$rt"/{etc/ssl/certs,tmp,home/nonroot,usr/bin,usr/lib,usr/lib64,usr/sbin}
  for l in bin lib lib64 sbin; do ln -s "usr/$l" "$rt/$l"; done
  copy_pkg_files libc6 libgcc-s1 libstdc++6 tzdata netbase
  cp "$ROOT/rootfs/etc/ssl/certs/ca-certificates.crt" "$rt/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rt/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rt/etc/group"
  chmod 1777 "$rt/tmp"; chown 65532:65532 "$rt/home/nonroot"; chmod 700 "$rt/home/nonroot"
  # the dpkg status of what is in it, as distroless keeps it (scanners read it)
  mkdir -p "$rt/var/lib/dpkg/status.d"
  for pkg in libc6 libgcc-s1 libstdc++6 tzdata netbase ca-certificates; do
    chroot "$ROOT/rootfs" dpkg-query -s "$pkg" >"$rt/var/lib/dpkg/status.d/$pkg"
  done
  tar -C "$rt" --numeric-owner -c . | docker import \
    --change "LABEL fastchat.base.recipe=$r" --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$RUNTIME_IMAGE" >/dev/null
}

build_nats() {
  [[ -x "$NATS_BIN" ]] || { echo "base-images: no nats-server at $NATS_BIN (make setup)" >&2; exit 1; }
  local have_version; have_version="$("$NATS_BIN" --version | sed -n 's/.*v\([0-9.]*\).*/\1/p')"
  [[ "$have_version" == "$NATS_VERSION" ]] \
    || { echo "base-images: $NATS_BIN is $have_version, deploy/nats-version says $NATS_VERSION" >&2; exit 1; }
  local r; r="$(recipe "nats-$NATS_VERSION")"
  have "$NATS_IMAGE" "$r" && return 0
  ensure_pkg /bin/busybox busybox-static
  file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' \
    || DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq busybox-static >/dev/null
  echo "base-images: $NATS_IMAGE (nats-server $NATS_VERSION from $NATS_BIN, busybox-static)" >&2
  local stage; stage="$(mktemp -d "${TMPDIR:-/tmp}/fastchat-nats.XXXXXX")"
  mkdir -p "$stage"/{bin,usr/local/bin,etc/nats,tmp}
  chmod 1777 "$stage/tmp"
  cp /bin/busybox "$stage/bin/busybox"
  for t in sh wget chown ls cat; do ln -s busybox "$stage/bin/$t"; done
  cp "$(realpath "$NATS_BIN")" "$stage/usr/local/bin/nats-server"
  printf 'root:x:0:0:root:/root:/bin/sh\nnats:x:1000:1000:nats:/nonexistent:/bin/sh\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnats:x:1000:\n' >"$stage/etc/group"
  tar -C "$stage" --numeric-owner -c . | docker import \
    --change "LABEL fastchat.base.recipe=$r" --change 'EXPOSE 4222 6222 8222' \
    --change 'ENV PATH=/usr/local/bin:/bin' --change 'CMD ["nats-server"]' \
    - "$NATS_IMAGE" >/dev/null
  rm -rf "$stage"
}

command -v file >/dev/null || ensure_pkg file file
started=$SECONDS
build_rust
build_node
build_runtime
build_nats
# The Debian root is only a parent of the rust and node images: no tag of its own needed.
cat >"$STATE/base-images.env" <<EOF
RUST_IMAGE=$RUST_IMAGE
RUNTIME_IMAGE=$RUNTIME_IMAGE
NODE_IMAGE=$NODE_IMAGE
NATS_IMAGE=$NATS_IMAGE
EOF
echo "base-images: ready in $(( SECONDS - started )) s" >&2
cat "$STATE/base-images.env"
