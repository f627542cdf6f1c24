#!/usr/bin/env bash
# Idempotently create ./.venv (project root) with the pinned test tooling from
# scripts/requirements-test.txt (moto's DynamoDB server for the contract tests).
#
# Fast path: if .venv exists, was installed from the current requirements file
# (sha256 stamp) and `import moto.server` works at the pinned version, do nothing.
# Otherwise (re)create/repair it. Quiet on success; loud and non-zero on failure.
# Env: PYTHON (default python3) = interpreter used to create the venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements-test.txt"
STAMP="$VENV/.tollgate-requirements.sha256"
PYTHON="${PYTHON:-python3}"

die() { echo "ensure-venv: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
MOTO_PIN="$(sed -n 's/^moto\[[^]]*\]==\([^[:space:]#]*\).*/\1/p' "$REQ" | head -n1)"
[ -n "$MOTO_PIN" ] || die "no 'moto[...]==X.Y.Z' pin found in $REQ"

req_hash() { "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$REQ"; }

venv_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(req_hash)" ] || return 1
    "$VENV/bin/python" - "$MOTO_PIN" >/dev/null 2>&1 <<'PY'
import sys
import moto, moto.server, werkzeug  # noqa: F401
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: F401
sys.exit(0 if moto.__version__ == sys.argv[1] else 1)
PY
}

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (need python3 >= 3.9)"
venv_ok && exit 0

# Serialise concurrent callers (e.g. parallel make targets) on the same tree.
if command -v flock >/dev/null 2>&1; then
    LOCK="${TMPDIR:-/tmp}/tollgate-venv-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).lock"
    exec 9>"$LOCK"
    flock 9
    venv_ok && exit 0   # someone else finished it while we waited
fi

# A venv without a working interpreter (moved tree, python upgraded) can't be repaired.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "ensure-venv: $VENV is broken; recreating" >&2
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

rm -f "$STAMP"
echo "ensure-venv: installing pinned moto $MOTO_PIN into $VENV ..." >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ" \
    || die "pip install -r $REQ failed"
req_hash > "$STAMP"
venv_ok || die "installed, but 'import moto.server' (moto==$MOTO_PIN) still fails in $VENV"
