#!/usr/bin/env bash
# Starts or stops a single-node Garage (S3-compatible server) on loopback for Halo's tests.
#
#   .ci/garage.sh install            install the pinned Garage if `garage` is not on PATH (~8 min)
#   .ci/garage.sh start DIR [PORT]   start one in DIR (config, data, log, pid); prints env lines
#   .ci/garage.sh stop DIR           stop the one in DIR
#
# `start` writes DIR/env with the variables the tests read (HALO_TEST_S3_ENDPOINT, …);
# `source DIR/env` in a shell, then `cargo test`, runs the S3 tests against it.
set -euo pipefail

GARAGE_VERSION=2.5.0
cmd=${1:-}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case "$cmd" in
install)
    if command -v garage >/dev/null 2>&1; then
        echo "garage present: $(garage --version)"
        exit 0
    fi
    cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
        --features bundled-libs,sqlite
    ;;
start)
    dir=$(realpath -m "${2:?usage: garage.sh start DIR [PORT]}")
    port=${3:-$(free_port)}
    mkdir -p "$dir/meta" "$dir/data"
    rpc=$(free_port)
    admin=$(free_port)
    cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
    # Keys are kept across restarts of the same DIR so a stopped server comes back as it was.
    if [ ! -f "$dir/keys" ]; then
        {
            echo "GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
            python3 -c 'import secrets; print(secrets.token_hex(32))'
        } > "$dir/keys"
    fi
    access=$(sed -n 1p "$dir/keys")
    secret=$(sed -n 2p "$dir/keys")
    GARAGE_DEFAULT_ACCESS_KEY=$access GARAGE_DEFAULT_SECRET_KEY=$secret GARAGE_DEFAULT_BUCKET=halo \
        nohup garage -c "$dir/garage.toml" server --single-node --default-bucket \
        >> "$dir/garage.log" 2>&1 &
    echo $! > "$dir/pid"
    # Ready when the S3 port accepts connections (bash's /dev/tcp: no curl needed).
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            break
        fi
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "garage exited; its log:" >&2
            tail -30 "$dir/garage.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    # The default bucket is created just after the port opens; wait until it exists.
    for _ in $(seq 1 100); do
        if garage -c "$dir/garage.toml" bucket info halo >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    cat > "$dir/env" <<ENV
export HALO_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export HALO_TEST_S3_REGION=garage
export HALO_TEST_S3_BUCKET=halo
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
ENV
    cat "$dir/env"
    ;;
stop)
    dir=$(realpath -m "${2:?usage: garage.sh stop DIR}")
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    ;;
*)
    echo "usage: $0 install | start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
