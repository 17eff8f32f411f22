#!/usr/bin/env bash
# The interoperability tier (issue 11): install what it needs, run every client scenario against the
# managed targets (xmppim, Prosody) or an external server, write tests/interop/results/latest.{json,md},
# print the closing "N passed, N failed" line and exit non-zero on any failure.
#
#   scripts/interop.sh                                  # all managed targets available in this checkout
#   INTEROP_TARGETS=prosody scripts/interop.sh          # only Prosody
#   scripts/interop.sh --fault drop-roster-push         # xmppim with a test-only fault: must show a failure
#   scripts/interop.sh --host H --port P --domain D --account a@D:pw --account b@D:pw   # external server
#   INTEROP_SKIP_INSTALL=1 scripts/interop.sh           # do not touch apt/npm/pip
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [ -z "${INTEROP_SKIP_INSTALL:-}" ]; then
  # Debian: reference server + small CLI clients (+ what the xmpp.js/Converse.js/profanity scenarios use).
  scripts/install-debs.sh prosody lua-unbound go-sendxmpp nagios-check-xmppng python3-defusedxml \
    profanity tmux chromium
  # PyPI (into the venv): aioxmpp and the pytz it imports without declaring.
  "$PY" -c 'import aioxmpp, pytz' 2>/dev/null || .venv/bin/pip install -q 'aioxmpp==0.13.3' pytz
  # npm (local cache under tests/interop/node): owned by the xmpp.js/Converse.js scenarios.
  if [ -x scripts/install-node-deps.sh ]; then
    scripts/install-node-deps.sh || echo "interop: npm dependencies could not be installed; those scenarios will fail" >&2
  fi
fi

args=()
if [ -n "${INTEROP_TARGETS:-}" ]; then args+=(--target "$INTEROP_TARGETS"); fi
limit="${INTEROP_TIMEOUT:-540}"
set +e
timeout --signal=TERM --kill-after=15 "$limit" "$PY" tests/interop/cli.py "${args[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  # The finished scenarios' results were still written (conftest turns SIGTERM into an interrupt).
  echo "interop: stopped after ${limit}s (INTEROP_TIMEOUT); the result file covers only finished scenarios" >&2
  echo "0 passed, 1 failed (timed out)"
fi
exit "$rc"
