#!/usr/bin/env bash
# make bench: HTTP load on loopback with wrk, ending in one `TOLLGATE_LOAD key=value ...` line
# (bench/wrk-report.lua) that bench/benches/load.rs parses. Installs wrk (Debian's package) when
# it is absent. Only for `make bench`; `make test` never needs it.
#
# Usage: scripts/load.sh URL API_KEY SECONDS [CONNECTIONS]
#   A 2-second warm-up at the same concurrency, then SECONDS measured, one wrk thread (the
#   machine has 2 cores: the other is the server's). URL must be on loopback. API_KEY may be
#   @FILE: a file of keys, one a line, sent in turn (bench/wrk-keys.lua).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "load: $*" >&2; exit 1; }

[ $# -ge 3 ] || die "usage: $0 URL API_KEY SECONDS [CONNECTIONS]"
URL="$1" KEY="$2" SECONDS_MEASURED="$3" CONNECTIONS="${4:-8}"

# Load goes to this machine only.
case "$URL" in
    http://127.*|http://localhost[:/]*|http://\[::1\]*) ;;
    *) die "refusing a non-loopback target: $URL" ;;
esac

if ! command -v wrk >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
        || die "wrk not found: install Debian's wrk package (apt-get install wrk, as root)"
    echo "load: installing wrk (apt-get) ..." >&2
    start=$SECONDS
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || die "apt-get install wrk failed"
    fi
    echo "load: wrk installed ($((SECONDS - start)) s)" >&2
fi

args=(-t1 -c"$CONNECTIONS" --timeout 5s)
case "$KEY" in
    @*) [ -s "${KEY#@}" ] || die "no keys in ${KEY#@}"
        script=(-s "$ROOT/bench/wrk-keys.lua" "$URL" "${KEY#@}") ;;
    *) args+=(-H "x-api-key: $KEY"); script=(-s "$ROOT/bench/wrk-report.lua" "$URL") ;;
esac
wrk "${args[@]}" -d2s "${script[@]}" >/dev/null
wrk "${args[@]}" -d"${SECONDS_MEASURED}s" "${script[@]}"
