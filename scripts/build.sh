#!/usr/bin/env bash
# make build: every function for Lambda's arm64 with cargo-lambda (release profile), then one
# table of bootstrap and zip sizes against the 3 MB zip goal. Over the goal is reported, not
# fatal. Artifacts: target/lambda/<function>/bootstrap and bootstrap.zip.
# The console function embeds console/dist, which is built first (npm).
# Env: CARGO_LAMBDA_EXTRA = more arguments for `cargo lambda build` (e.g. --locked).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# One kebab-case name per function: folder, crate, binary and target/lambda/<name>.
FUNCTIONS=(authorizer issue-key stripe-webhook usage-rollup console)
ZIP_GOAL=$((3 * 1000 * 1000))

bash scripts/ensure-build-tools.sh
# The console function embeds console/dist: build it first (Node.js 20+; the script names it
# when missing), so no zip ships without the page.
bash scripts/console.sh build
export PATH="$ROOT/.venv/bin:$PATH"

packages=()
built=()
for f in "${FUNCTIONS[@]}"; do
    if [ -f "functions/$f/Cargo.toml" ]; then
        packages+=(-p "$f")
        built+=("$f")
    else
        echo "build: functions/$f does not exist yet: skipped" >&2
    fi
done
[ "${#built[@]}" -gt 0 ] || { echo "build: no function crates found" >&2; exit 1; }

start=$SECONDS
# shellcheck disable=SC2086
cargo lambda build --release --arm64 "${packages[@]}" ${CARGO_LAMBDA_EXTRA:-}
# The same build again as zips: nothing recompiles, cargo-lambda only packages.
# shellcheck disable=SC2086
cargo lambda build --release --arm64 --output-format zip "${packages[@]}" ${CARGO_LAMBDA_EXTRA:-}
echo "build: ${#built[@]} functions in $((SECONDS - start)) s" >&2

size() { stat -c %s "$1"; }
over=0
echo
echo "| function | bootstrap bytes | zip bytes | zip goal <= 3 MB |"
echo "|---|---|---|---|"
for f in "${built[@]}"; do
    dir="target/lambda/$f"
    [ -f "$dir/bootstrap" ] || { echo "build: $dir/bootstrap is missing" >&2; exit 1; }
    [ -f "$dir/bootstrap.zip" ] || { echo "build: $dir/bootstrap.zip is missing" >&2; exit 1; }
    # Lambda runs what it is given: refuse to report on a binary for the wrong machine.
    if ! file -b "$dir/bootstrap" | grep -q 'ARM aarch64'; then
        echo "build: $dir/bootstrap is not an aarch64 executable: $(file -b "$dir/bootstrap")" >&2
        exit 1
    fi
    zip_bytes=$(size "$dir/bootstrap.zip")
    if [ "$zip_bytes" -le "$ZIP_GOAL" ]; then
        verdict=met
    else
        verdict="**OVER by $((zip_bytes - ZIP_GOAL)) bytes**"
        over=$((over + 1))
    fi
    echo "| $f | $(size "$dir/bootstrap") | $zip_bytes | $verdict |"
done
echo
if [ "$over" -gt 0 ]; then
    echo "build: WARNING: $over function zip(s) over the 3 MB (3,000,000 bytes) goal" >&2
fi
