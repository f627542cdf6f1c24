# Sourced by the scripts that keep a project-local Python venv filled from a fully pinned
# requirements file (ensure-venv.sh: moto; ensure-build-tools.sh: cargo-lambda and zig;
# lint-template.sh: SAM CLI and cfn-lint).
#
#   ensure_pinned_venv TAG VENV REQ STAMP CHECK
#
# CHECK is the name of a function that succeeds when the venv is ready (tools present at their
# pinned versions). Fast path: the stamp (sha256 of REQ) is current and CHECK passes: nothing
# runs. Otherwise, under a lock per venv (concurrent make targets), the venv is created or, if
# its interpreter no longer runs, recreated, REQ is pip-installed, the stamp written and CHECK
# must pass. pip only adds packages, so venvs shared by two requirement files keep both.
# Messages are prefixed with TAG; failures exit non-zero. PYTHON (default python3) creates it.

pinned_venv_die() { echo "$1: $2" >&2; exit 1; }

pinned_venv_hash() {
    "${PYTHON:-python3}" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
}

pinned_venv_ready() { # VENV REQ STAMP CHECK
    [ -x "$1/bin/python" ] && [ -f "$3" ] && [ "$(cat "$3")" = "$(pinned_venv_hash "$2")" ] && "$4"
}

ensure_pinned_venv() {
    local tag="$1" venv="$2" req="$3" stamp="$4" check="$5" python="${PYTHON:-python3}"
    [ -f "$req" ] || pinned_venv_die "$tag" "missing $req"
    command -v "$python" >/dev/null 2>&1 || pinned_venv_die "$tag" "'$python' not found (need python3 >= 3.9)"
    pinned_venv_ready "$venv" "$req" "$stamp" "$check" && return 0
    if command -v flock >/dev/null 2>&1; then
        local lock
        lock="${TMPDIR:-/tmp}/tollgate-$(basename "$venv")-$(printf '%s' "$venv" | cksum | cut -d' ' -f1).lock"
        exec 9>"$lock"
        flock 9
        pinned_venv_ready "$venv" "$req" "$stamp" "$check" && { exec 9>&-; return 0; }
    fi
    if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "$tag: $venv is broken; recreating" >&2
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" \
            || pinned_venv_die "$tag" "'$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    rm -f "$stamp"
    local started=$SECONDS
    echo "$tag: installing $(basename "$req") into $venv ..." >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req" \
        || pinned_venv_die "$tag" "pip install -r $req failed"
    pinned_venv_hash "$req" >"$stamp"
    "$check" || pinned_venv_die "$tag" "installed $req, but the pinned tools still do not run from $venv"
    echo "$tag: ready in $((SECONDS - started)) s" >&2
    exec 9>&-
}
