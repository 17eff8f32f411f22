#!/usr/bin/env bash
# Install Debian packages the tests/benchmarks need, idempotently, without letting their package
# scripts start system services (prosody/ejabberd would grab 0.0.0.0:5222/5269 otherwise).
# Usage: scripts/install-debs.sh PKG [PKG...]   -- exits 0 if all are installed afterwards.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "install-debs: need root to install ${missing[*]}" >&2; exit 1; fi
lock=/tmp/xmppim-apt.lock
exec 9>"$lock"; flock 9
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
stamp=/var/lib/apt/periodic/xmppim-update-stamp
if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]; then
  apt-get update -qq >/dev/null && mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Packages may have started their services despite policy-rc.d (e.g. via systemd-less postinst): stop them.
for svc in prosody ejabberd postgresql redis-server; do
  if printf '%s\n' "${missing[@]}" | grep -qx "$svc"; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
