#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the tests: Debian's `postgresql` package
# (installed once), `initdb` in a temp directory as the `postgres` user (CI runs as root;
# PostgreSQL refuses to), `pg_ctl` on a random free port, trust auth on 127.0.0.1 only.
#
#   bash .ci/postgres.sh install
#   bash .ci/postgres.sh start DIR   # writes DIR/env: HALO_TEST_DATABASE_URL=postgres://…
#   bash .ci/postgres.sh stop DIR
set -euo pipefail

bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)
    [ -n "$d" ] && echo "$d"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
    install)
        if bin > /dev/null; then exit 0; fi
        echo "installing postgresql" >&2
        sudo_cmd=""
        if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql > /dev/null
        # The package may start its own cluster; the tests use their own.
        $sudo_cmd service postgresql stop > /dev/null 2>&1 || true
        ;;
    start)
        dir=$2
        pg=$(bin)
        mkdir -p "$dir/data"
        if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi
        as_pg "$pg/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync > "$dir/initdb.log"
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        # fsync stays on: the tests measure nothing, but durability is what they check.
        as_pg "$pg/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=300" start > /dev/null
        as_pg "$pg/createdb" -h 127.0.0.1 -p "$port" -U postgres halo_test
        echo "export HALO_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/halo_test" > "$dir/env"
        ;;
    stop)
        dir=$2
        pg=$(bin) || exit 0
        [ -d "$dir/data" ] || exit 0
        as_pg "$pg/pg_ctl" -D "$dir/data" -m immediate stop > /dev/null 2>&1 || true
        ;;
    *)
        echo "usage: $0 install | start DIR | stop DIR" >&2
        exit 2
        ;;
esac
