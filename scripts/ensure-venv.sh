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
# shellcheck source=lib/pinned-venv.sh
source "$ROOT/scripts/lib/pinned-venv.sh"

die() { echo "ensure-venv: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
MOTO_PIN="$(sed -n 's/^moto\[[^]]*\]==\([^[:space:]#]*\).*/\1/p' "$REQ" | head -n1)"
[ -n "$MOTO_PIN" ] || die "no 'moto[...]==X.Y.Z' pin found in $REQ"

venv_ok() {
    "$VENV/bin/python" - "$MOTO_PIN" >/dev/null 2>&1 <<'PY'
import sys
import moto, moto.server, werkzeug  # noqa: F401
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: F401
sys.exit(0 if moto.__version__ == sys.argv[1] else 1)
PY
}

ensure_pinned_venv ensure-venv "$VENV" "$REQ" "$STAMP" venv_ok
