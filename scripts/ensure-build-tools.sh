#!/usr/bin/env bash
# Idempotently make `cargo lambda build --arm64` possible: the pinned cargo-lambda and zig from
# scripts/requirements-build.txt in ./.venv (the venv scripts/ensure-venv.sh keeps for moto:
# pip only adds packages, so neither script undoes the other), and Rust's
# aarch64-unknown-linux-gnu standard library through rustup.
#
# Fast path: stamp (sha256 of the requirements file) current and `cargo-lambda` answers with the
# pinned version: do nothing. Quiet on success; loud and non-zero on failure.
# Env: PYTHON (default python3) = interpreter used if the venv has to be created.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements-build.txt"
STAMP="$VENV/.tollgate-build-requirements.sha256"
TARGET=aarch64-unknown-linux-gnu

# shellcheck source=lib/pinned-venv.sh
source "$ROOT/scripts/lib/pinned-venv.sh"

die() { echo "ensure-build-tools: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
PIN="$(sed -n 's/^cargo-lambda==\([^[:space:]#]*\).*/\1/p' "$REQ" | head -n1)"
[ -n "$PIN" ] || die "no 'cargo-lambda==X.Y.Z' pin found in $REQ"

tools_ok() {
    [ -x "$VENV/bin/cargo-lambda" ] || return 1
    # cargo-lambda is a cargo subcommand: it expects `lambda` as its first argument.
    "$VENV/bin/cargo-lambda" lambda --version 2>/dev/null | grep -q "^cargo-lambda $PIN "
}

ensure_target() {
    command -v rustup >/dev/null 2>&1 || {
        echo "ensure-build-tools: no rustup; assuming the $TARGET standard library is installed" >&2
        return 0
    }
    rustup target list --installed | grep -qx "$TARGET" && return 0
    echo "ensure-build-tools: rustup target add $TARGET ..." >&2
    rustup target add "$TARGET" >&2 || die "rustup target add $TARGET failed"
}

ensure_target
ensure_pinned_venv ensure-build-tools "$VENV" "$REQ" "$STAMP" tools_ok
