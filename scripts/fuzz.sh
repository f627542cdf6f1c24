#!/usr/bin/env bash
# make fuzz: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 600), on the
# nightly toolchain (libFuzzer needs -Zsanitizer). Installs cargo-fuzz if it is missing. New
# inputs that reach new code are kept in fuzz/corpus/<target>/ (commit them: `make test` replays
# the corpus on stable); a crash stops the run with its input in fuzz/artifacts/<target>/.
# Leak detection is off: the targets that reach storage keep one runtime, database and handler
# set per process on purpose (built on the first input), which LeakSanitizer reports as leaks.
# After a run without a crash the target's corpus is minimized (`cargo fuzz cmin`: only inputs
# that add coverage stay, renamed to their SHA-1); the hand-written seeds (the files not named by
# a SHA-1) are put back under their own names. How to grow and commit the corpus: fuzz/README.md.
# Env: FUZZ_SECONDS, FUZZ_TARGETS (space-separated subset), FUZZ_JOBS (parallel runs, default 1),
# FUZZ_CMIN (0 keeps the grown corpus as it is, default 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-600}"
TARGETS="${FUZZ_TARGETS:-key stripe_signature authorizer_event management cursor}"
JOBS="${FUZZ_JOBS:-1}"
CMIN="${FUZZ_CMIN:-1}"

rustup toolchain list | grep -q '^nightly' || {
    echo "fuzz: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

# libFuzzer's -detect_leaks=0 covers each input; ASan's own check at exit needs this too.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
cd fuzz
cargo +nightly fuzz build --release 2>&1 | tail -n 3
mkdir -p logs
# cargo fuzz cmin replaces corpus/<target>/ with what adds coverage; the seeds come back by name.
minimize() {
    local target=$1 dir="corpus/$1" log="logs/$1.log" seeds before f
    before=$(ls "$dir" | wc -l)
    seeds=$(mktemp -d)
    find "$dir" -maxdepth 1 -regextype posix-extended -type f ! -regex '.*/[0-9a-f]{40}' -exec cp {} "$seeds/" \;
    if ! cargo +nightly fuzz cmin --release "$target" "$dir" -- -rss_limit_mb=4096 -detect_leaks=0 >>"$log" 2>&1; then
        echo "fuzz: $target: cmin FAILED (fuzz/$log); seeds kept in $seeds" >&2
        return 1
    fi
    for f in "$seeds"/*; do
        [ -e "$f" ] || continue
        rm -f "$dir/$(sha1sum <"$f" | cut -c1-40)"
        cp "$f" "$dir/"
    done
    rm -rf "$seeds"
    echo "fuzz: $target: corpus minimized, $before -> $(ls "$dir" | wc -l) inputs ($(find "$dir" -type f -size +4k | wc -l) over 4 KiB)"
}
run() {
    local target=$1 log="logs/$1.log"
    mkdir -p "corpus/$target"
    if cargo +nightly fuzz run --release "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -print_final_stats=1 -detect_leaks=0 \
        >"$log" 2>&1; then
        local runs
        runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n1)
        echo "fuzz: $target: ${runs:-?} executions in ${SECONDS_PER_TARGET} s, no crash, corpus $(ls "corpus/$target" | wc -l) inputs"
        if [ "$CMIN" != 0 ]; then
            minimize "$target"
        fi
    else
        echo "fuzz: $target: FAILED (fuzz/$log; the input is in fuzz/artifacts/$target/)" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
}
status=0
running=0
for t in $TARGETS; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
exit "$status"
