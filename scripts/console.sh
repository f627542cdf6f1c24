#!/usr/bin/env bash
# The web console (console/): `build` installs its npm packages (npm ci, when package-lock.json
# changed) and builds console/dist, which the local stack serves at /console/; `test` also checks
# the generated API types against docs/openapi.yaml, builds the local stack binary, finds or
# installs Debian's Chromium, and runs the Playwright browser tests. Never a silent skip: a
# missing tool is an error that names what to install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode=${1:-build}

need_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "console: Node.js 20+ and npm are needed (Debian: apt-get install nodejs npm, or https://nodejs.org)" >&2
    exit 1
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if (( major < 20 )); then
    echo "console: Node.js $(node --version) is too old; the console needs Node.js 20 or later" >&2
    exit 1
  fi
}

npm_install() {
  # node_modules/.package-lock.json is npm's record of what it installed: reinstall when the
  # lock file is newer or the packages are missing.
  if [[ ! -f console/node_modules/.package-lock.json || console/package-lock.json -nt console/node_modules/.package-lock.json ]]; then
    (cd console && npm ci --no-audit --no-fund)
  fi
}

chromium_path() {
  if [[ -n "${CHROMIUM_PATH:-}" ]]; then
    [[ -x "$CHROMIUM_PATH" ]] || { echo "console: CHROMIUM_PATH=$CHROMIUM_PATH is not an executable" >&2; exit 1; }
    echo "$CHROMIUM_PATH"
    return
  fi
  if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      echo "console: installing Debian's chromium for the browser tests" >&2
      apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; }
    else
      echo "console: the browser tests need Chromium: run \`sudo apt-get install chromium\` (Debian's package," >&2
      echo "         /usr/bin/chromium), or set CHROMIUM_PATH to a Chromium or Chrome binary" >&2
      exit 1
    fi
  fi
  echo /usr/bin/chromium
}

need_node
npm_install
case "$mode" in
  build)
    (cd console && npm run build)
    ;;
  test)
    chromium=$(chromium_path)
    (cd console && npm run check-types && npm run build)
    # The same feature resolution as the workspace test build, so the binary is reused.
    cargo build --workspace --bins
    (cd console && CI=1 CHROMIUM_PATH="$chromium" TOLLGATE_BIN=../target/debug/tollgate npx playwright test)
    echo "console: screenshots in target/console-screenshots/"
    ;;
  *)
    echo "usage: scripts/console.sh build|test" >&2
    exit 2
    ;;
esac
