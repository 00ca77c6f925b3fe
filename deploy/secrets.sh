#!/usr/bin/env bash
# Generates the secrets of FastChat: the NATS credentials (a random password per service,
# which the service gets in clear, and its bcrypt hash, which is all the broker gets; see
# deploy/k8s/base/nats/auth.conf) and the JWT key the services check tokens with.
#
#   deploy/secrets.sh compose [--out FILE] [--jwt-out KEY_FILE] [--force]
#       Writes what is missing of
#         deploy/compose/.env (or FILE), from deploy/compose/.env.example with fresh
#           passwords and hashes, mode 600;
#         deploy/compose/secrets/jwt-hmac (or KEY_FILE; by default secrets/jwt-hmac next to
#           FILE), the HS256 key: 48 random bytes, base64url (64 characters, no newline).
#           Mode 644 in a directory of mode 700: compose bind-mounts the file as it is, and
#           the service's user in the container (65532) must read it; the directory keeps
#           other users of this machine out.
#       Existing files are kept (exit 1 when both exist) unless --force, which replaces the
#       key and only the four credential lines of .env (a rotation: restart the whole stack
#       afterwards, `make compose-up`; tokens signed with the old key stop working). To
#       rotate one of them only, delete it and run without --force.
#   deploy/secrets.sh k8s [--out FILE]
#       Prints (or writes, mode 600) an env file for the Kubernetes Secret
#       fastchat-nats-credentials:
#         kubectl -n fastchat create secret generic fastchat-nats-credentials --from-env-file=FILE
#       or a git-ignored deploy/k8s/overlays/prod/secrets.env for its secretGenerator.
#   deploy/secrets.sh jwt [--out FILE] [--force]
#       Prints (or writes, mode 600; an existing FILE only with --force) a JWT HMAC key as
#       above, for the Kubernetes Secret fastchat-jwt:
#         kubectl -n fastchat create secret generic fastchat-jwt --from-file=hmac-secret=FILE
#       Printed, it ends with a newline, which the services ignore (a second one they would
#       not).
#   deploy/secrets.sh verify FILE
#       Checks that every *_PASSWORD_BCRYPT in FILE (either format above) is a bcrypt hash
#       of the matching *_PASSWORD, written so that nats-server can read it; exit 1 if not.
#
# Format: SEND_SERVICE_PASSWORD=p<48 hex>, SEND_SERVICE_PASSWORD_BCRYPT="$2b$11$...". The
# double quotes are part of the value: nats-server parses an environment value like a
# config token, and a bare hash starts with `$` (a variable reference). In the compose .env
# the value is wrapped in single quotes as well, so compose neither expands the `$` in it
# nor drops the double quotes.
#
# Needs python3; for the passwords also the `bcrypt` module (without one, installs bcrypt,
# pinned below, from PyPI into target/tools/secrets-venv once). BCRYPT_COST (default 11)
# sets the work factor: the broker pays one check of it per client login (about 0.1 s at 11).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BCRYPT_REQ="bcrypt==5.0.0"
VENV="$ROOT/target/tools/secrets-venv"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 64; }

python_with_bcrypt() {
  local py
  for py in "${FASTCHAT_SECRETS_PYTHON:-}" "$ROOT/target/tools/deploy-venv/bin/python" \
            "$VENV/bin/python" python3; do
    [[ -n "$py" ]] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import bcrypt' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  echo "secrets.sh: installing $BCRYPT_REQ into ${VENV#"$ROOT"/} ..." >&2
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$BCRYPT_REQ" >&2
  echo "$VENV/bin/python"
}

[[ $# -ge 1 ]] || usage
MODE="$1"; shift
OUT=""
JWT_OUT=""
FORCE=0
FILE=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) [[ $# -ge 2 ]] || usage; OUT="$2"; shift 2 ;;
    --jwt-out) [[ $# -ge 2 && "$MODE" == compose ]] || usage; JWT_OUT="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage ;;
    *) if [[ "$MODE" == verify && -z "$FILE" ]]; then FILE="$1"; shift; else usage; fi ;;
  esac
done

# write_jwt_key PATH MODE: a fresh HS256 key in PATH (48 random bytes, base64url, no
# newline), written atomically with MODE; a missing directory is made with mode 700.
write_jwt_key() {
  python3 - "$1" "$2" <<'PYTHON'
import base64
import os
import secrets
import sys
import tempfile

path, mode = sys.argv[1], int(sys.argv[2], 8)
directory = os.path.dirname(os.path.abspath(path))
os.makedirs(directory, mode=0o700, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=directory, prefix=".jwt-key.")
with os.fdopen(fd, "w") as f:
    f.write(base64.urlsafe_b64encode(secrets.token_bytes(48)).decode())
os.chmod(tmp, mode)
os.replace(tmp, path)
PYTHON
}

case "$MODE" in
  compose)
    OUT="${OUT:-$ROOT/deploy/compose/.env}"
    JWT_OUT="${JWT_OUT:-$(dirname "$OUT")/secrets/jwt-hmac}"
    if [[ -e "$OUT" && -e "$JWT_OUT" && $FORCE -eq 0 ]]; then
      echo "secrets.sh: $OUT and $JWT_OUT exist; keep them, or run with --force to replace" \
        "the credentials and the key" >&2
      exit 1
    fi
    if [[ ! -e "$JWT_OUT" || $FORCE -eq 1 ]]; then
      write_jwt_key "$JWT_OUT" 644
      echo "secrets.sh: wrote $JWT_OUT (JWT HMAC key; mode 644 for the container's user)" >&2
    fi
    if [[ "$(stat -c %a "$(dirname "$JWT_OUT")")" != 700 ]]; then
      echo "secrets.sh: warning: $(dirname "$JWT_OUT") is not mode 700; other users here may" \
        "read the key (chmod 700 it)" >&2
    fi
    if [[ -e "$OUT" && $FORCE -eq 0 ]]; then
      echo "secrets.sh: kept $OUT (exists; --force replaces its credentials)" >&2
      exit 0
    fi
    TEMPLATE="$ROOT/deploy/compose/.env.example"
    [[ -e "$OUT" ]] && TEMPLATE="$OUT"
    ;;
  jwt)
    if [[ -z "$OUT" ]]; then
      python3 -c 'import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(48)).decode())'
    elif [[ -e "$OUT" && $FORCE -eq 0 ]]; then
      echo "secrets.sh: $OUT exists; keep it, or run with --force to replace the key" >&2
      exit 1
    else
      write_jwt_key "$OUT" 600
      echo "secrets.sh: wrote $OUT (JWT HMAC key, mode 600)" >&2
    fi
    exit 0
    ;;
  k8s) TEMPLATE="" ;;
  verify) [[ -n "$FILE" ]] || usage ;;
  *) usage ;;
esac

PY="$(python_with_bcrypt)"
umask 077
exec "$PY" - "$MODE" "${OUT:-}" "${TEMPLATE:-}" "${FILE:-}" "${BCRYPT_COST:-11}" <<'PYTHON'
import os
import re
import secrets
import sys
import tempfile

import bcrypt

mode, out, template, file, cost = sys.argv[1:6]
USERS = ("SEND_SERVICE_PASSWORD", "ALL_MESSAGES_SERVICE_PASSWORD")


def credentials():
    values = {}
    for key in USERS:
        password = "p" + secrets.token_hex(24)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=int(cost))).decode()
        values[key] = password
        values[key + "_BCRYPT"] = f'"{hashed}"'
    return values


def write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".secrets.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def parse(path):
    values = {}
    for line in open(path):
        m = re.match(r"^([A-Z_]+)=(.*)$", line.rstrip("\n"))
        if m:
            value = m.group(2)
            # compose .env: '...' is literal.
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            values[m.group(1)] = value
    return values


if mode == "compose":
    values = credentials()
    lines = open(template).read().splitlines()
    seen = set()
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if "=" in line and key in values:
            value = values[key]
            lines[i] = f"{key}='{value}'" if key.endswith("_BCRYPT") else f"{key}={value}"
            seen.add(key)
    for key, value in values.items():
        if key not in seen:
            lines.append(f"{key}='{value}'" if key.endswith("_BCRYPT") else f"{key}={value}")
    write(out, "\n".join(lines) + "\n")
    print(f"secrets.sh: wrote {out} (new passwords for {', '.join(u.lower().replace('_password', '').replace('_', '-') for u in USERS)})", file=sys.stderr)
elif mode == "k8s":
    values = credentials()
    text = ("# Secret fastchat-nats-credentials, generated by deploy/secrets.sh. Keep it out of git.\n"
            "# Clear passwords for the services, bcrypt hashes (double quotes included) for NATS.\n")
    text += "".join(f"{k}={v}\n" for k, v in values.items())
    if out:
        write(out, text)
        print(f"secrets.sh: wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
elif mode == "verify":
    values = parse(file)
    bad = 0
    for key in USERS:
        password, hashed = values.get(key, ""), values.get(key + "_BCRYPT", "")
        if not password or not hashed:
            print(f"{file}: {key} and {key}_BCRYPT must both be set", file=sys.stderr)
            bad = 1
            continue
        m = re.fullmatch(r'"(\$2[aby]\$\d\d\$[./A-Za-z0-9]{53})"', hashed)
        if not m:
            print(f'{file}: {key}_BCRYPT must be a bcrypt hash in double quotes ("$2b$11$...")',
                  file=sys.stderr)
            bad = 1
        elif not bcrypt.checkpw(password.encode(), m.group(1).encode()):
            print(f"{file}: {key}_BCRYPT is not the hash of {key}", file=sys.stderr)
            bad = 1
    sys.exit(bad)
PYTHON
