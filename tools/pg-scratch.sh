#!/usr/bin/env bash
# A throw-away PostgreSQL 15 cluster for the tests: made with initdb in a scratch directory,
# served on loopback only, removed by `stop`. As root, the cluster runs as the postgres user
# (PostgreSQL refuses to run as root).
#   tools/pg-scratch.sh start DIR PORT   prints the cluster's URL (postgresql://...)
#   tools/pg-scratch.sh stop DIR         stops it and removes DIR
#   tools/pg-scratch.sh restart DIR      a fast restart (connections drop)
#   tools/pg-scratch.sh down DIR / up DIR   stops it (keeping its data) / starts it again
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
cmd=$1 dir=$2
as_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
  start)
    port=$3
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U superweight --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    # Loopback only, no Unix socket directory to share, and nothing waits on disk syncs.
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
      { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://superweight@127.0.0.1:$port/postgres"
    ;;
  restart)
    as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 -m fast restart >/dev/null
    ;;
  down)
    as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null
    ;;
  up)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
  stop)
    if [[ -d $dir/data ]]; then as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 -m immediate stop >/dev/null || true; fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start DIR PORT | restart DIR | down DIR | up DIR | stop DIR" >&2; exit 2 ;;
esac
