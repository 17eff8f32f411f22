#!/usr/bin/env bash
# Install the npm packages of the xmpp.js / Converse.js interop scenarios into tests/interop/node/node_modules
# (git-ignored), idempotently: a re-run with an up-to-date node_modules returns at once without touching npm.
#   scripts/install-node-deps.sh          # exit 0 when node_modules matches package-lock.json afterwards
# Needs Debian's nodejs/npm (Node >= 20.10 for @xmpp/client 0.14); Converse.js also needs Debian `chromium`
# (scripts/install-debs.sh chromium) but no browser download: playwright-core drives /usr/bin/chromium.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/tests/interop/node"
cd "$dir"
command -v npm >/dev/null || { echo "install-node-deps: npm missing (scripts/install-debs.sh nodejs npm)" >&2; exit 1; }
up_to_date() {
  # npm writes node_modules/.package-lock.json after every successful install; newer than both manifests
  # and every declared package present means nothing to do.
  [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package.json ] &&
    { [ ! -f package-lock.json ] || [ node_modules/.package-lock.json -nt package-lock.json ]; } &&
    [ -f node_modules/@xmpp/client/package.json ] && [ -f node_modules/converse.js/dist/converse.min.js ] &&
    [ -f node_modules/playwright-core/package.json ]
}
up_to_date && exit 0
exec 9>/tmp/xmppim-npm.lock
flock -w 300 9
up_to_date && exit 0   # another run installed it while we waited
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
touch node_modules/.package-lock.json
up_to_date || { echo "install-node-deps: node_modules incomplete after npm install" >&2; exit 1; }
