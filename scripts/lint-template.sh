#!/usr/bin/env bash
# Lint every SAM template in infra/, offline: no AWS account, credentials or network needed.
#
# Per template, five checks; all must be clean (cfn-lint fails on warnings too):
#   1. cfn-lint on the template itself (SAM resources checked against SAM's schemas);
#   2. `sam validate --lint` (the same cfn-lint as SAM CLI runs it);
#   3. `sam validate` (the SAM translator: catches what only the transform knows, e.g. an
#      unknown event property or authorizer name);
#   4. cfn-lint on the translated CloudFormation (catches what SAM-schema linting cannot see
#      inside SAM resources, e.g. an IAM action that does not exist or an unknown runtime);
#   5. checkov on the template and on that translation (scripts/checkov.sh: security checks;
#      every finding fixed or suppressed with its reason in the resource's Metadata).
#
# The tools come from ./.venv-sam, created and filled here from the fully pinned
# scripts/requirements-sam.txt (a venv of its own: aws-sam-cli's exact pins conflict with the
# moto lock in ./.venv), and ./.venv-checkov (scripts/requirements-checkov.txt, installed by
# scripts/checkov.sh). Fast path: stamps current and the pinned versions import: no pip at all.
# Env: PYTHON (default python3) = interpreter used if a venv has to be created;
# TOLLGATE_SKIP_CHECKOV=1 skips step 5 (e.g. `make deploy` on a machine without PyPI access).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-sam"
REQ="$ROOT/scripts/requirements-sam.txt"
STAMP="$VENV/.tollgate-sam-requirements.sha256"
REGION=us-east-1

# shellcheck source=lib/pinned-venv.sh
source "$ROOT/scripts/lib/pinned-venv.sh"

die() { echo "lint-template: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
pin() { sed -n "s/^$1==\([^[:space:]#]*\).*/\1/p" "$REQ" | head -n1; }
SAM_PIN="$(pin aws-sam-cli)"
LINT_PIN="$(pin cfn-lint)"
if [ -z "$SAM_PIN" ] || [ -z "$LINT_PIN" ]; then die "no aws-sam-cli==X / cfn-lint==Y pin in $REQ"; fi

venv_ok() {
    [ -x "$VENV/bin/sam" ] && [ -x "$VENV/bin/cfn-lint" ] || return 1
    "$VENV/bin/python" - "$SAM_PIN" "$LINT_PIN" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import samcli, samtranslator, cfnlint  # noqa: F401
sys.exit(0 if (version("aws-sam-cli"), version("cfn-lint")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

ensure_pinned_venv lint-template "$VENV" "$REQ" "$STAMP" venv_ok

# Offline and hermetic: a fixed region, dummy credentials, and none of the caller's AWS
# configuration, profiles or instance metadata, so no check can ever reach a real account.
export AWS_REGION=$REGION AWS_DEFAULT_REGION=$REGION
export AWS_ACCESS_KEY_ID=lint-template AWS_SECRET_ACCESS_KEY=lint-template
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0
# SAM CLI keeps its settings in a directory of its own; point it into the venv, and record a
# fresh version check there so it never asks PyPI for a newer release (output stays quiet).
export __SAM_CLI_APP_DIR="$VENV/sam-app"
mkdir -p "$__SAM_CLI_APP_DIR"
"$VENV/bin/python" - "$__SAM_CLI_APP_DIR/metadata.json" <<'PY'
import json, sys, time
path = sys.argv[1]
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {}
data.update(telemetryEnabled=False, lastVersionCheck=time.time())
json.dump(data, open(path, "w"))
PY

# Step 4's translation: SAM's own transform, with local CodeUri paths replaced by S3 URIs (what
# `sam package` would do) and no IAM lookups (the templates name managed policies by ARN only).
# passthrough_metadata: every resource SAM generates keeps its SAM resource's Metadata (the
# functions' does anyway), so step 5's checkov suppressions also cover the generated roles,
# stages and the Function URL. CloudFormation ignores resource Metadata.
translate() {
    "$VENV/bin/python" - "$1" "$REGION" <<'PY'
import json, sys
from unittest import mock
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(open(sys.argv[1]).read())
for resource in template.get("Resources", {}).values():
    props = resource.get("Properties", {})
    if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion"):
        key = "CodeUri" if "CodeUri" in props else "ContentUri"
        if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
            props[key] = "s3://lint-template/artifact.zip"


class NoManagedPolicyLookups:
    def load(self):
        sys.exit("a managed policy is named without its ARN: the SAM translator would call IAM")


with mock.patch("boto3.session.Session.region_name", sys.argv[2]):
    try:
        translated = transform(template, {}, NoManagedPolicyLookups(), passthrough_metadata=True)
    except InvalidDocumentException as e:
        sys.exit("\n".join(str(cause) for cause in e.causes))
json.dump(translated, sys.stdout, indent=1)
PY
}

cd "$ROOT"
shopt -s nullglob
templates=()
for f in infra/*.yaml infra/*.yml infra/*.json; do
    grep -q 'AWS::Serverless-2016-10-31\|AWSTemplateFormatVersion' "$f" && templates+=("$f")
done
[ ${#templates[@]} -gt 0 ] || die "no templates in infra/"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Translations are kept (overwritten each run) so a finding in step 4 can be looked up by line.
mkdir -p "$VENV/translated"
failed=0
passed=0
checkov_args=()
check() {
    local what="$1"
    shift
    if "$@" >"$work/out" 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "lint-template: FAILED: $what" >&2
        sed 's/^/    /' "$work/out" >&2
    fi
}
for t in "${templates[@]}"; do
    check "cfn-lint $t" "$VENV/bin/cfn-lint" --regions "$REGION" -- "$t"
    check "sam validate --lint $t" "$VENV/bin/sam" validate --lint --template "$t" --region "$REGION"
    check "sam validate $t" "$VENV/bin/sam" validate --template "$t" --region "$REGION"
    translated="$VENV/translated/$(basename "$t").json"
    checkov_args+=(--template "$t")
    if translate "$t" >"$translated" 2>"$work/out"; then
        check "cfn-lint on the SAM translation of $t" "$VENV/bin/cfn-lint" --regions "$REGION" -- "$translated"
        checkov_args+=(--translation "${translated#"$ROOT/"}")
    else
        failed=$((failed + 1))
        echo "lint-template: FAILED: SAM translation of $t" >&2
        sed 's/^/    /' "$work/out" >&2
    fi
done
# Step 5, once for all templates (one checkov start-up): its summary is printed either way.
if [ "${TOLLGATE_SKIP_CHECKOV:-}" = 1 ]; then
    echo "lint-template: checkov skipped (TOLLGATE_SKIP_CHECKOV=1)" >&2
elif bash "$ROOT/scripts/checkov.sh" "${checkov_args[@]}"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "lint-template: FAILED: checkov" >&2
fi
echo "lint-template: ${templates[*]}: $passed checks passed, $failed failed"
[ "$failed" -eq 0 ]
