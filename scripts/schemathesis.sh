#!/usr/bin/env bash
# Holds the local stack to docs/openapi.yaml with Schemathesis (property-based OpenAPI tests):
# every check (`--checks all`: status codes, response schemas and headers, content types,
# acceptance of schema-valid and rejection of schema-invalid requests, unsupported methods,
# Allow headers, auth, ...) in the coverage, fuzzing and stateful phases (and examples, once the
# spec has any). Exits non-zero on any failure or error: the spec is the contract, and this is
# what holds the server to it. About a minute on 2 cores (100 examples per operation).
#
#   bash scripts/schemathesis.sh [SCHEMATHESIS RUN OPTIONS]...
#
# e.g. `bash scripts/schemathesis.sh --include-operation-id createKey` for one operation;
# extra options are passed to `schemathesis run` after the ones set here (later ones win).
#
# The server: the local stack binary at $TOLLGATE_BIN (default target/debug/tollgate, which
# `make test-spec` builds with `cargo build --workspace --bins`, reusing the test build; this script builds nothing), started on a free loopback
# port (TOLLGATE_ADDR=127.0.0.1:0; the port is read from its banner) with a fixed admin token,
# in-memory Dynoxide (every storage variable unset, so each run starts from an empty table and
# runs are independent), no Stripe key, the rollup timer off, trusting the identity provider
# stand-in (target/debug/tollgate-test-issuer) for the /v1/me routes, which run as a customer
# signed in with its token. Both are stopped on every exit path
# (normal exit, failure, INT/TERM/HUP; with setpriv, also if this script is SIGKILLed).
#
# Generation is deterministic (Hypothesis derandomized: the same spec gives the same inputs;
# the stateful phase still follows the ids and timestamps the server answers with). Deliberate
# departures, each with its reason: scripts/schemathesis.toml (501 without Stripe) and
# scripts/schemathesis_hooks.py (failures that are correct answers to rules JSON Schema cannot
# state, dropped only after checking the request breaks the rule; the run prints a tally of
# them). Every failure left needs a server change. Reports (JUnit, and an NDJSON event log) go to $SCHEMATHESIS_REPORT_DIR (default: a
# temporary directory, removed at exit unless set).
#
# schemathesis comes from ./.venv-schemathesis, created and filled here from the fully pinned
# scripts/requirements-schemathesis.txt. Fast path: stamp current and the pinned version
# installed: no pip at all.
# Env: TOLLGATE_BIN, SCHEMATHESIS_MAX_EXAMPLES (per operation and phase, default 100),
#   SCHEMATHESIS_REPORT_DIR, TOLLGATE_STARTUP_TIMEOUT
#   (seconds, default 60), PYTHON (default python3) = interpreter used if the venv has to be
#   created.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-schemathesis"
REQ="$ROOT/scripts/requirements-schemathesis.txt"
STAMP="$VENV/.tollgate-schemathesis-requirements.sha256"
CONFIG="$ROOT/scripts/schemathesis.toml"
SPEC="docs/openapi.yaml"
BIN="${TOLLGATE_BIN:-target/debug/tollgate}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
STARTUP_TIMEOUT="${TOLLGATE_STARTUP_TIMEOUT:-60}"
# Fixed, so a failure's reproduction (curl in the report) works against a stack started the
# same way. Not a secret: it guards a throwaway in-memory stack on loopback.
ADMIN_TOKEN="tga_schemathesis_local_only"
# The self-service routes (/v1/me) are exercised as this customer, signed in with a token from
# the identity provider stand-in (target/debug/tollgate-test-issuer, built beside the stack).
# The customer: the one the Checkout fixture names (client_reference_id), billed on a plan
# through the signed webhook fixtures below, so its own keys have a plan to go on.
CUSTOMER="user-42"
WEBHOOK_SECRET="whsec_schemathesis_local_only"
ISSUER_BIN="${TOLLGATE_ISSUER_BIN:-$(dirname "$BIN")/tollgate-test-issuer}"

# shellcheck source=lib/pinned-venv.sh
source "$ROOT/scripts/lib/pinned-venv.sh"

die() { echo "schemathesis: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
[ -f "$CONFIG" ] || die "missing $CONFIG"
ST_PIN="$(sed -n 's/^schemathesis==\([^[:space:]#]*\).*/\1/p' "$REQ" | head -n1)"
[ -n "$ST_PIN" ] || die "no schemathesis==X pin in $REQ"
case "$MAX_EXAMPLES" in '' | *[!0-9]*) die "SCHEMATHESIS_MAX_EXAMPLES must be a whole number" ;; esac
case "${1:-}" in -h | --help) sed -n '2,35p' "${BASH_SOURCE[0]}"; exit 0 ;; esac

venv_ok() {
    [ -x "$VENV/bin/schemathesis" ] || return 1
    "$VENV/bin/python" - "$ST_PIN" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if version("schemathesis") == sys.argv[1] else 1)
PY
}

cd "$ROOT"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
[ -x "$BIN" ] || die "no local stack binary at $BIN (cargo build -p tollgate-dev --bin tollgate, or set TOLLGATE_BIN)"
case "$ISSUER_BIN" in /*) ;; *) ISSUER_BIN="$ROOT/$ISSUER_BIN" ;; esac
[ -x "$ISSUER_BIN" ] || die "no identity provider stand-in at $ISSUER_BIN (cargo build --workspace --bins)"

ensure_pinned_venv schemathesis "$VENV" "$REQ" "$STAMP" venv_ok
# The venv ignores itself, so a fresh clone's `git status` stays clean without a .gitignore entry.
[ -f "$VENV/.gitignore" ] || printf '*\n' >"$VENV/.gitignore"

work="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-schemathesis.XXXXXX")"
LOG="$work/server.log"
REPORTS="${SCHEMATHESIS_REPORT_DIR:-$work/reports}"
SERVER_PID=""
ST_PID=""
ISSUER_PID=""

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do   # up to 10 s for a clean stop, then SIGKILL
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
stop_schemathesis() {
    [ -n "$ST_PID" ] || return 0
    kill -TERM "$ST_PID" 2>/dev/null || true
    wait "$ST_PID" 2>/dev/null || true
    ST_PID=""
}
stop_issuer() {
    [ -n "$ISSUER_PID" ] || return 0
    exec 8>&- 2>/dev/null || true   # its stdin: it stops when that closes
    kill -TERM "$ISSUER_PID" 2>/dev/null || true
    wait "$ISSUER_PID" 2>/dev/null || true
    ISSUER_PID=""
}
cleanup() { stop_schemathesis; stop_server; stop_issuer; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT   # the EXIT trap still runs
trap 'exit 143' TERM
trap 'exit 129' HUP

# Dies with the script even when the script is SIGKILLed (no trap runs then), where setpriv exists.
launcher=()
if command -v setpriv >/dev/null 2>&1 && setpriv --pdeathsig TERM true >/dev/null 2>&1; then
    launcher=(setpriv --pdeathsig TERM --)
fi

# The identity provider stand-in: its issuer URL and a customer token, read from its first lines.
mkfifo "$work/issuer.in"
"${launcher[@]}" "$ISSUER_BIN" "$CUSTOMER" <"$work/issuer.in" >"$work/issuer.out" 2>"$work/issuer.err" &
ISSUER_PID=$!
exec 8>"$work/issuer.in"
for _ in $(seq 1 300); do
    grep -q '^token ' "$work/issuer.out" 2>/dev/null && break
    kill -0 "$ISSUER_PID" 2>/dev/null || { cat "$work/issuer.err" >&2; die "the identity provider stand-in exited"; }
    sleep 0.1
done
ISSUER="$(sed -n 's/^issuer //p' "$work/issuer.out")"
AUDIENCE="$(sed -n 's/^audience //p' "$work/issuer.out")"
CUSTOMER_TOKEN="$(sed -n 's/^token //p' "$work/issuer.out")"
[ -n "$CUSTOMER_TOKEN" ] || die "the identity provider stand-in printed no token"

: >"$LOG"
# A throwaway stack: nothing of the caller's environment decides where data goes or whether
# Stripe is asked.
env -u TOLLGATE_DATA_DIR -u TOLLGATE_DYNAMODB_ENDPOINT -u TOLLGATE_STORAGE -u TOLLGATE_TABLE \
    -u TOLLGATE_UPSTREAM -u TOLLGATE_KEY_ENV -u TOLLGATE_FAIL_MODE -u TOLLGATE_ROUTES \
    -u STRIPE_API_KEY -u STRIPE_API_KEY_SECRET_ARN -u STRIPE_API_BASE \
    -u STRIPE_WEBHOOK_SECRET_ARN \
    -u TOLLGATE_JWT_JWKS_URL -u TOLLGATE_JWT_ROLE_CLAIM -u TOLLGATE_JWT_CUSTOMER_CLAIM -u TOLLGATE_SCOPES \
    STRIPE_WEBHOOK_SECRET="$WEBHOOK_SECRET" TOLLGATE_JWT_ISSUER="$ISSUER" TOLLGATE_JWT_AUDIENCE="$AUDIENCE" \
    TOLLGATE_ADDR=127.0.0.1:0 TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" TOLLGATE_ROLLUP_INTERVAL_S=0 \
    RUST_LOG="${RUST_LOG:-warn,dynoxide=error}" \
    "${launcher[@]}" "$BIN" dev >"$LOG" 2>&1 </dev/null &
SERVER_PID=$!

URL=""
deadline=$((SECONDS + STARTUP_TIMEOUT))
while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        sed 's/^/    /' "$LOG" >&2
        die "the local stack exited before it listened"
    fi
    if [ -z "$URL" ]; then
        URL="$(sed -n 's/^Tollgate local stack listening on \(http:\/\/127\.0\.0\.1:[0-9][0-9]*\).*/\1/p' "$LOG" | head -n1 || true)"
    fi
    if [ -n "$URL" ] && "$VENV/bin/python" - "$URL/health" >/dev/null 2>&1 <<'PY'; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 and r.read() == b"ok" else 1)
PY
        break
    fi
    sleep 0.2
done
if [ "$SECONDS" -ge "$deadline" ]; then
    sed 's/^/    /' "$LOG" >&2
    die "the local stack did not answer GET /health within ${STARTUP_TIMEOUT} s"
fi
echo "schemathesis: local stack $BIN on $URL" >&2
# The customer the token names exists and has a plan, as Stripe would make it: a plan for the
# fixtures' price, then the Checkout and subscription fixtures, signed, through the webhook.
"$VENV/bin/python" - "$URL" "$ADMIN_TOKEN" "$WEBHOOK_SECRET" "$ROOT/events" "$CUSTOMER" <<'PY' || die "could not set up the self-service customer"
import hashlib, hmac, json, sys, time, urllib.request
url, token, secret, events, customer = sys.argv[1:6]
admin = {"authorization": f"Bearer {token}", "content-type": "application/json"}

def call(method, path, body, headers):
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")

plan = {"id": "pro", "name": "Pro", "stripe_price_ids": ["price_1QProMonthly"], "max_keys": 1000}
call("POST", "/v1/plans", json.dumps(plan).encode(), admin)
for name in ("stripe-checkout-session-completed.json", "stripe-customer-subscription-created.json"):
    body = open(f"{events}/{name}", "rb").read()
    t = int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    call("POST", "/stripe/webhook", body, {"stripe-signature": f"t={t},v1={sig}", "content-type": "application/json"})
got = call("GET", f"/v1/customers/{customer}", None, admin)
sys.exit(0 if got.get("plan_id") == "pro" else f"the customer was not billed on pro: {got}")
PY
mkdir -p "$REPORTS"
started=$SECONDS
status=0
# TOLLGATE_ADMIN_TOKEN is read by the config's [auth.openapi.adminToken]. One worker: with two,
# Hypothesis parses sources in two threads at once, which CPython 3.11.7 and older can fail
# ("AST constructor recursion depth mismatch"); the server is one process on 2 cores anyway.
# The hooks drop only the failures scripts/schemathesis_hooks.py documents; Hypothesis keeps its
# files under $work, so nothing is left in the tree and no run feeds the next.
TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" TOLLGATE_CUSTOMER_TOKEN="$CUSTOMER_TOKEN" \
    SCHEMATHESIS_HOOKS="$ROOT/scripts/schemathesis_hooks.py" \
    HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" TOLLGATE_SCHEMATHESIS_DROPPED="$work/dropped.tsv" \
    "$VENV/bin/schemathesis" --config-file "$CONFIG" run "$SPEC" \
    --url "$URL" \
    --checks all \
    --generation-deterministic \
    --max-examples "$MAX_EXAMPLES" \
    --workers 1 \
    --report junit,ndjson --report-dir "$REPORTS" \
    --no-color \
    "$@" &
# In the background and waited for, so INT/TERM reach the traps at once (a foreground child
# would hold them until it finished).
ST_PID=$!
wait "$ST_PID" || status=$?
ST_PID=""
elapsed=$((SECONDS - started))
if [ -s "$work/dropped.tsv" ]; then
    echo "schemathesis: failures dropped as documented answers (scripts/schemathesis_hooks.py):" >&2
    sort "$work/dropped.tsv" | uniq -c | sort -rn | sed 's/^/    /' >&2
    if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then cp "$work"/dropped.tsv* "$REPORTS/"; fi
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis: the local stack died during the run; its log:" >&2
    sed 's/^/    /' "$LOG" | tail -n 50 >&2
    [ "$status" -ne 0 ] || status=1
fi
if [ "$status" -ne 0 ]; then
    echo "schemathesis: server log (last 30 lines):" >&2
    tail -n 30 "$LOG" | sed 's/^/    /' >&2
fi
if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then echo "schemathesis: reports in $REPORTS" >&2; fi
echo "schemathesis: $ST_PIN, deterministic, $MAX_EXAMPLES examples per operation, ${elapsed} s, exit $status"
exit "$status"
