#!/usr/bin/env bash
# A private PostgreSQL cluster for xmppim's tests and benchmarks (loopback only).
#
#   scripts/postgres.sh start   install Debian `postgresql` if missing, initdb (once) and start the cluster
#                               in /tmp/xmppim-pg on 127.0.0.1:55432; idempotent (exit 0 if already running)
#   scripts/postgres.sh stop    stop that cluster (only the one whose pid file is in /tmp/xmppim-pg)
#   scripts/postgres.sh url     print only the SQLAlchemy URL
#   scripts/postgres.sh status  exit 0 if the cluster answers
#
# Why its own cluster: the Debian service would listen on 5432 for everybody; several helpers and CI jobs
# share this machine, so the cluster, its socket and its pid file live in one directory we own.
# Override with XMPPIM_PG_DIR / XMPPIM_PG_PORT (the URL follows).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base="${XMPPIM_PG_DIR:-/tmp/xmppim-pg}"
port="${XMPPIM_PG_PORT:-55432}"
data="$base/data"
log="$base/postgres.log"
url="postgresql+asyncpg://xmppim:xmppim@127.0.0.1:${port}/xmppim"

pgbin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [ -n "$d" ] || return 1
  echo "$d"
}

as_pg() {
  # Run a command as the postgres user when we are root (initdb/postgres refuse to run as root).
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

running() {
  local bin
  bin="$(pgbin)" || return 1
  [ -f "$data/postmaster.pid" ] || return 1
  as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

start() {
  if ! pgbin >/dev/null; then
    "$here/install-debs.sh" postgresql >&2
  fi
  local bin
  bin="$(pgbin)" || { echo "postgres.sh: no PostgreSQL binaries after install" >&2; exit 1; }
  mkdir -p "$base"
  # The server must not inherit fd 8 (it would hold the lock forever): pg_ctl runs with 8>&-.
  exec 8>"$base.lock"; flock 8
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$base"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    pwfile="$base/pw"
    printf 'xmppim\n' > "$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pwfile"
    # Superuser `xmppim` (password xmppim): tests drop/create schemas; trust on the private socket only.
    as_pg "$bin/initdb" -D "$data" -U xmppim --pwfile="$pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 \
      || { cat "$base/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
  fi
  if ! running; then
    as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $base -c max_connections=200 -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB" >/dev/null 8>&- \
      || { tail -n 30 "$log" >&2; exit 1; }
  fi
  # Create the database once (createdb fails harmlessly if it exists).
  if ! as_pg "$bin/psql" -h "$base" -p "$port" -U xmppim -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='xmppim'" | grep -q 1; then
    as_pg "$bin/createdb" -h "$base" -p "$port" -U xmppim xmppim
  fi
}

stop() {
  local bin
  bin="$(pgbin)" || exit 0
  if running; then as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$url" ;;
  status) running ;;
  *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
