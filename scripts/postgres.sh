#!/usr/bin/env bash
# A throw-away PostgreSQL on 127.0.0.1 for tests and local trials.
#   scripts/postgres.sh start DIR PORT   -> prints the SQLAlchemy URL
#   scripts/postgres.sh stop DIR
# Installs Debian's server package first if it is missing (needs root, as on CI).
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data dir}; port=${3:-55432}

find_bin() {
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/$1" ] && { echo "$d/$1"; return; }; done
  command -v "$1" || true
}

if [ -z "$(find_bin initdb)" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
INITDB=$(find_bin initdb); PG_CTL=$(find_bin pg_ctl)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$INITDB" -D "$dir" -U moai --auth=trust -E UTF8 >/dev/null
    fi
    as_pg "$PG_CTL" -D "$dir" -l "$dir/server.log" -w -o "-h 127.0.0.1 -p $port -k $dir -c fsync=on" start >/dev/null
    echo "postgresql+psycopg://moai@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_pg "$PG_CTL" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
  *) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
