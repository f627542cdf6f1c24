#!/usr/bin/env bash
# checkov (static security checks) on SAM templates and their CloudFormation translations,
# offline. Fails on any finding that is not suppressed in the resource's Metadata
# (checkov: skip: - id: CKV_... comment: <reason>); prints one summary line per file.
#
#   bash scripts/checkov.sh [--template FILE]... [--translation FILE]...
#
# --template: a SAM template as written (checkov knows the AWS::Serverless::* types; it
#   evaluates Conditions against the parameters' defaults, so it skips resources of the
#   variants the defaults do not select).
# --translation: the template's SAM translation (scripts/lint-template.sh writes it to
#   .venv-sam/translated/ with each SAM resource's Metadata passed through to the resources it
#   generates, so the suppressions apply there too). Scanned with the resources' Conditions
#   removed, so every variant is checked (both proxy APIs), including the roles, stages,
#   permissions and the Function URL that SAM generates and the SAM scan cannot see.
# No arguments: every template in infra/ and, where lint-template.sh left a translation newer
# than the template, that translation.
#
# checkov comes from ./.venv-checkov, created and filled here from the fully pinned
# scripts/requirements-checkov.txt (a venv of its own: checkov's pins conflict with
# aws-sam-cli's). Fast path: stamp current and the pinned version installed: no pip at all.
# No network at scan time: no Prisma Cloud download, no version check.
# Env: PYTHON (default python3) = interpreter used if the venv has to be created.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-checkov"
REQ="$ROOT/scripts/requirements-checkov.txt"
STAMP="$VENV/.tollgate-checkov-requirements.sha256"
REPORT_PY="$ROOT/scripts/lib/checkov_report.py"

# shellcheck source=lib/pinned-venv.sh
source "$ROOT/scripts/lib/pinned-venv.sh"

die() { echo "checkov: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
CHECKOV_PIN="$(sed -n 's/^checkov==\([^[:space:]#]*\).*/\1/p' "$REQ" | head -n1)"
[ -n "$CHECKOV_PIN" ] || die "no checkov==X pin in $REQ"

venv_ok() {
    [ -x "$VENV/bin/checkov" ] || return 1
    "$VENV/bin/python" - "$CHECKOV_PIN" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if version("checkov") == sys.argv[1] else 1)
PY
}

templates=()
translations=()
while [ $# -gt 0 ]; do
    case "$1" in
        --template) [ $# -ge 2 ] || die "--template needs a file"; templates+=("$2"); shift 2 ;;
        --translation) [ $# -ge 2 ] || die "--translation needs a file"; translations+=("$2"); shift 2 ;;
        -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

cd "$ROOT"
if [ ${#templates[@]} -eq 0 ] && [ ${#translations[@]} -eq 0 ]; then
    shopt -s nullglob
    for f in infra/*.yaml infra/*.yml infra/*.json; do
        grep -q 'AWS::Serverless-2016-10-31\|AWSTemplateFormatVersion' "$f" || continue
        templates+=("$f")
        t=".venv-sam/translated/$(basename "$f").json"
        if [ -f "$t" ] && [ "$t" -nt "$f" ]; then
            translations+=("$t")
        else
            echo "checkov: no current translation of $f (make lint-template writes one); scanning the template only" >&2
        fi
    done
    [ ${#templates[@]} -gt 0 ] || die "no templates in infra/"
fi
for f in "${templates[@]}" "${translations[@]}"; do
    [ -f "$f" ] || die "no such file: $f"
done

ensure_pinned_venv checkov "$VENV" "$REQ" "$STAMP" venv_ok
# The venv ignores itself, so a fresh clone's `git status` stays clean without a .gitignore entry.
[ -f "$VENV/.gitignore" ] || printf '*\n' >"$VENV/.gitignore"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# checkov reports paths relative to its working directory: scan from $work with symlinks and
# condition-free copies named after what they are.
args=()
labels=()
for t in "${templates[@]}"; do
    name="$(basename "$t")"
    ln -s "$(cd "$(dirname "$t")" && pwd)/$name" "$work/$name"
    args+=(-f "$name")
    labels+=("$t=$name")
done
for t in "${translations[@]}"; do
    name="translation-of-$(basename "$t" .json)-all-variants.json"
    "$VENV/bin/python" "$REPORT_PY" strip-conditions "$t" "$work/$name"
    args+=(-f "$name")
    labels+=("SAM translation of ${t} (all variants)=$name")
done

export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
export CKV_CACHE_DIR="$work/cache" HOME="${HOME:-$work}"
started=$SECONDS
# --soft-fail: the exit status is decided from the report (checkov's own exit code does not
# distinguish "findings" from "could not parse the file").
(cd "$work" && "$VENV/bin/checkov" --framework cloudformation --skip-download --soft-fail \
    --output json "${args[@]}" >"$work/report.json" 2>"$work/stderr") \
    || { cat "$work/stderr" >&2; die "checkov did not run"; }
status=0
"$VENV/bin/python" "$REPORT_PY" summary "$work/report.json" "${labels[@]}" || status=$?
if [ "$status" -ne 0 ] && [ -s "$work/stderr" ]; then
    sed 's/^/    /' "$work/stderr" | tail -n 20 >&2
fi
echo "checkov: $CHECKOV_PIN, $((SECONDS - started)) s"
exit "$status"
