#!/usr/bin/env bash
# Usage: scripts/with-moto.sh CMD [ARGS...]
#
# Runs CMD against a private, single-threaded moto DynamoDB server on a free
# 127.0.0.1 port (see scripts/moto_server.py for why single-threaded), with
#   TOLLGATE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:PORT
#   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
# exported. The server is stopped on every exit path (normal exit, CMD failure,
# INT/TERM; and it exits by itself if this script is SIGKILLed). Exit status is
# CMD's. If the server can't be started, its log is printed and we exit non-zero.
#
# Example: bash scripts/with-moto.sh cargo nextest run -p tollgate-tests contract
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/ensure-venv.sh"
PY="$ROOT/.venv/bin/python"
STARTUP_TIMEOUT="${TOLLGATE_MOTO_STARTUP_TIMEOUT:-20}"   # seconds

LOG="$(mktemp "${TMPDIR:-/tmp}/tollgate-moto.XXXXXX")"
SERVER_PID=""

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill -TERM "$SERVER_PID" 2>/dev/null || true
            for _ in $(seq 1 50); do            # up to 5 s, then SIGKILL
                kill -0 "$SERVER_PID" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() { stop_server; rm -f "$LOG"; }
trap cleanup EXIT
trap 'exit 130' INT       # EXIT trap still runs
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Exit 0 once the server answers a (SigV4-shaped) DynamoDB ListTables at "/".
probe() {
    "$PY" - "$1" >/dev/null 2>&1 <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/", data=b"{}", method="POST",
    headers={
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x",
    })
with urllib.request.urlopen(req, timeout=2) as r:
    sys.exit(0 if "TableNames" in json.load(r) else 1)
PY
}

start_server() {   # sets PORT, SERVER_PID; 0 = ready, 1 = server exited, 2 = timed out
    PORT="$(free_port)"
    : >"$LOG"
    TOLLGATE_MOTO_WATCH_PID=$$ "$PY" "$ROOT/scripts/moto_server.py" "$PORT" >>"$LOG" 2>&1 </dev/null &
    SERVER_PID=$!
    local deadline=$(( $(date +%s) + STARTUP_TIMEOUT ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1   # died (e.g. port taken)
        probe "$PORT" && return 0
        sleep 0.2
    done
    return 2
}

rc=1
for attempt in 1 2 3; do   # retry only covers the tiny free-port race
    rc=0; start_server || rc=$?
    [ "$rc" -eq 0 ] && break
    stop_server
    [ "$rc" -eq 1 ] && grep -q "Address already in use" "$LOG" || break
done
if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 1 ]; then why="exited during startup"; else why="did not answer ListTables within ${STARTUP_TIMEOUT}s"; fi
    echo "with-moto: moto DynamoDB server on 127.0.0.1:$PORT $why; server log:" >&2
    sed 's/^/  | /' "$LOG" >&2
    exit 1
fi

export TOLLGATE_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
echo "with-moto: moto $("$PY" -c 'import moto; print(moto.__version__)') (single-threaded) at $TOLLGATE_TEST_DYNAMODB_ENDPOINT" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
