#!/usr/bin/env bash
# Halo's edge against nginx (and static-web-server when installed) on the same generated
# tree, same machine, measured side by side: servers pinned to core 1, the load generator to
# core 0, one worker each, servers in shuffled order every round. See benches/README.md.
#
#   bash benches/edge_vs_nginx.sh            ROUNDS=3 DUR=10 RATE=20000 to change the defaults
#                                            (BASE_ROWS=0: only the protocol rows below)
#
# Protocol rows (PROTO_ROWS=0 skips them): HTTPS over HTTP/1.1 and h2 and h2c, by oha.
#
# Before and after in one run: HALO_BASELINE=/path/to/older/halo adds that binary as the
# server `halo-base`, deployed and measured like `halo`. HALO_BIN=/path/to/halo measures a
# given binary instead of building this tree. SERVERS="halo halo-base nginx" limits the set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10}
RATE=${RATE:-20000}
HOST=bench.halo.localhost

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
    apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
need oha || cargo install oha --version 1.16.0 --locked
if [ -n "${HALO_BIN:-}" ]; then
    halo=$HALO_BIN
else
    cargo build --release --quiet
    halo=$PWD/target/release/halo
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The site: 1 KiB pages, 16 KiB scripts, 256 KiB images, an index.
python3 - "$work/site" <<'PY'
import os, sys, random
root = sys.argv[1]; random.seed(1)
os.makedirs(root + "/assets", exist_ok=True)
def w(p, n): open(os.path.join(root, p), "wb").write(bytes(random.getrandbits(8) for _ in range(n)) if p.endswith(".png") else (b"<!-- halo bench -->" + b"x" * n)[:n])
w("index.html", 1024)
for i in range(100): w(f"page-{i}.html", 1024)
for i in range(10): w(f"assets/app-{i}.js", 16384)
for i in range(10): w(f"assets/img-{i}.png", 262144)
PY
# nginx's worker runs as an unprivileged user: let it read the tree.
chmod 755 "$work"
chmod -R a+rX "$work/site"

# One certificate (ECDSA P-256) for every server's TLS listener.
mkdir -p "$work/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
    -addext "subjectAltName=DNS:$HOST" -keyout "$work/certs/$HOST.key" -out "$work/certs/$HOST.crt" 2>/dev/null
chmod -R a+rX "$work/certs"

# Halo: fs backend, deployed to production with the real client.
api=$(port); hedge=$(port); htls=$(port)
HALO_ADMIN_TOKEN=bench-token-0123456789 taskset -c 1 "$halo" serve --data-dir "$work/halo" \
    --api-listen "127.0.0.1:$api" --edge-listen "127.0.0.1:$hedge" \
    --tls-listen "127.0.0.1:$htls" --tls-cert-dir "$work/certs" > "$work/halo.log" 2>&1 &
pids+=($!); halo_pid=$!
wait_port "$api"
HALO_API=http://127.0.0.1:$api HALO_TOKEN=bench-token-0123456789 XDG_CACHE_HOME=$work/cache \
    "$halo" deploy "$work/site" --project bench --prod > /dev/null 2>&1
if [ -n "${HALO_BASELINE:-}" ]; then
    bapi=$(port); bedge=$(port); btls=$(port)
    # From the work directory: an older binary must not read this tree's config/halo.toml.
    (cd "$work" && HALO_ADMIN_TOKEN=bench-token-0123456789 exec taskset -c 1 "$HALO_BASELINE" serve \
        --data-dir "$work/halo-base" --api-listen "127.0.0.1:$bapi" --edge-listen "127.0.0.1:$bedge" \
        --tls-listen "127.0.0.1:$btls" --tls-cert-dir "$work/certs" > "$work/halo-base.log" 2>&1) &
    pids+=($!); base_pid=$!
    wait_port "$bapi"
    HALO_API=http://127.0.0.1:$bapi HALO_TOKEN=bench-token-0123456789 XDG_CACHE_HOME=$work/cache-base \
        "$HALO_BASELINE" deploy "$work/site" --project bench --prod > /dev/null 2>&1
fi

# nginx as a competent operator configures it, twice: sendfile on, and sendfile off with
# large output buffers (faster over loopback for big files).
nginx_conf() { # name port sendfile tls-port h2c-port
    mkdir -p "$work/$1"
    cat > "$work/$1/nginx.conf" <<NGINX
worker_processes 1;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    sendfile $3;
    tcp_nopush on;
    tcp_nodelay on;
    output_buffers 2 256k;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1;
    uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
    server { listen 127.0.0.1:$2 default_server; return 404; }
    server { listen 127.0.0.1:$2; server_name $HOST; root $work/site; }
    server { listen 127.0.0.1:$4 ssl http2; server_name $HOST; root $work/site;
             ssl_certificate $work/certs/$HOST.crt; ssl_certificate_key $work/certs/$HOST.key;
             ssl_protocols TLSv1.3; ssl_session_cache off; ssl_session_tickets off; }
    server { listen 127.0.0.1:$5 http2; server_name $HOST; root $work/site; }
}
NGINX
    taskset -c 1 nginx -c "$work/$1/nginx.conf" -g 'daemon off;' &
    pids+=($!)
    wait_port "$2"
}
ngx=$(port); ngx_nosf=$(port); ngx_tls=$(port); ngx_h2c=$(port)
nginx_conf nginx "$ngx" on "$ngx_tls" "$ngx_h2c"
nginx_conf nginx-nosendfile "$ngx_nosf" off "$(port)" "$(port)"
declare -A url=([halo]="http://127.0.0.1:$hedge" [nginx]="http://127.0.0.1:$ngx" [nginx-nosendfile]="http://127.0.0.1:$ngx_nosf")
# TLS (h1 and h2 by ALPN) and h2c ports, for the protocol rows.
declare -A tls_port=([halo]=$htls [nginx]=$ngx_tls) h2c_port=([halo]=$hedge [nginx]=$ngx_h2c)
declare -A pidof=([halo]=$halo_pid [nginx]="$(cat "$work/nginx/nginx.pid")" [nginx-nosendfile]="$(cat "$work/nginx-nosendfile/nginx.pid")")
servers=(halo nginx nginx-nosendfile)
if [ -n "${HALO_BASELINE:-}" ]; then
    url[halo-base]="http://127.0.0.1:$bedge"; pidof[halo-base]=$base_pid; servers+=(halo-base)
    tls_port[halo-base]=$btls; h2c_port[halo-base]=$bedge
fi
if need static-web-server; then
    sws=$(port)
    taskset -c 1 static-web-server --host 127.0.0.1 --port "$sws" --root "$work/site" --threads-multiplier 1 \
        --compression false --log-level error > "$work/sws.log" 2>&1 &
    pids+=($!); pidof[sws]=$!; url[sws]="http://127.0.0.1:$sws"; servers+=(sws)
    wait_port "$sws"
fi

# Correctness before speed: every file, every server, same status and size; wrong Host 404.
for s in "${servers[@]}"; do
    for f in index.html page-7.html assets/app-3.js assets/img-5.png; do
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' -H "Host: $HOST" -H 'Accept-Encoding: identity' "${url[$s]}/$f")
        want="200 $(stat -c %s "$work/site/$f")"
        [ "$got" = "$want" ] || { echo "$s /$f: got $got, want $want" >&2; exit 1; }
    done
    [ "$s" = sws ] && continue   # static-web-server has no virtual hosts here
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: wrong.example' "${url[$s]}/index.html")
    [ "$code" = 404 ] || { echo "$s: wrong Host answered $code" >&2; exit 1; }
done
echo "checked: ${servers[*]} serve identical statuses and sizes; wrong Host is 404"
if [ -n "${SERVERS:-}" ]; then
    read -r -a servers <<< "$SERVERS"
fi

cpu_ticks() { # total utime+stime of a process and its children threads/processes
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
results=$work/results.jsonl
# The machine must be otherwise idle between runs: sample CPU idle time over one second.
idle_ok() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    if [ $(( idle * 100 / (total > 0 ? total : 1) )) -lt 90 ]; then
        echo "warning: the machine is busy ($(( 100 - idle * 100 / (total > 0 ? total : 1) ))% CPU) between runs: figures may be disturbed; repeat the run" >&2
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    for s in $(printf '%s\n' "${servers[@]}" | shuf); do
        idle_ok
        # BASE_ROWS=0 skips the HTTP/1.1 rows (wrk saturation, oha fixed rate).
        [ "${BASE_ROWS:-1}" = 1 ] && for spec in "page-7.html 64" "page-7.html 256" "assets/img-5.png 64"; do
            set -- $spec
            out=$(taskset -c 0 wrk -t1 -c"$2" -d"${DUR}s" --latency -H "Host: $HOST" -H 'Accept-Encoding: identity' "${url[$s]}/$1")
            python3 - "$s" "$1" "$2" "$round" "$out" >> "$results" <<'PY'
import json, re, sys
s, f, c, r, out = sys.argv[1:]
def num(pat, scale=1.0):
    m = re.search(pat, out); return float(m.group(1)) * scale if m else None
def lat(p):
    m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else None
mbs = re.search(r"Transfer/sec:\s+([\d.]+)(KB|MB|GB)", out)
print(json.dumps({"phase": "saturation", "server": s, "file": f, "conns": int(c), "round": int(r),
    "rps": num(r"Requests/sec:\s+([\d.]+)"), "MBps": float(mbs.group(1)) * {"KB": 1e-3, "MB": 1, "GB": 1e3}[mbs.group(2)] if mbs else None,
    "p50_us": lat(50), "p99_us": lat(99), "errors": "Non-2xx" in out or "Socket errors" in out}))
PY
        done
        [ "${BASE_ROWS:-1}" = 1 ] && for f in page-7.html assets/app-3.js; do
            before=$(cpu_ticks "${pidof[$s]}")
            out=$(taskset -c 0 oha --no-tui -z "${DUR}s" -q "$RATE" -c 64 --disable-compression -H "Host: $HOST" --output-format json "${url[$s]}/$f")
            after=$(cpu_ticks "${pidof[$s]}")
            python3 - "$s" "$f" "$round" "$before" "$after" "$(getconf CLK_TCK)" "$out" >> "$results" <<'PY'
import json, sys
s, f, r, b, a, hz, out = sys.argv[1:]
o = json.loads(out)
ok = sum(v for k, v in o.get("statusCodeDistribution", {}).items() if k.startswith("2"))
cpu_us = (int(a) - int(b)) / int(hz) * 1e6
print(json.dumps({"phase": "fixed_rate", "server": s, "file": f, "round": int(r), "requests": ok,
    "cpu_us_per_req": cpu_us / ok if ok else None, "p99_us": o["latencyPercentiles"]["p99"] * 1e6,
    "rps": o["summary"]["requestsPerSec"]}))
PY
        done
        # HTTPS (TLS 1.3, ECDSA P-256) over HTTP/1.1 and h2, and h2c: CPU per request at a
        # fixed rate (16 connections, 4 streams each on h2) and saturation.
        [ "${PROTO_ROWS:-1}" = 1 ] && [ -n "${tls_port[$s]:-}" ] || continue
        # New TLS 1.3 handshakes, never resumed (Python's ssl resumes only when told to; the
        # client counts any resumption, which must stay 0): server CPU per handshake, and
        # handshakes per second per core from it. One client on core 0, back to back.
        before=$(cpu_ticks "${pidof[$s]}")
        out=$(taskset -c 0 python3 - "${tls_port[$s]}" "$DUR" "$HOST" <<'PY'
import socket, ssl, sys, time
port, dur, host = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
n = resumed = 0
end = time.time() + dur
while time.time() < end:
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=host)
    resumed += t.session_reused
    t.close()
    n += 1
print(n, resumed)
PY
)
        after=$(cpu_ticks "${pidof[$s]}")
        python3 - "$s" "$round" "$before" "$after" "$(getconf CLK_TCK)" $out >> "$results" <<'PY'
import json, sys
s, r, b, a, hz, n, resumed = sys.argv[1:]
cpu_us = (int(a) - int(b)) / int(hz) * 1e6 / int(n)
print(json.dumps({"phase": "handshake", "server": s, "file": "tls13-new", "round": int(r),
    "cpu_us_per_hs": cpu_us, "hs_per_core_s": 1e6 / cpu_us if cpu_us else None,
    "errors": int(resumed) > 0}))
PY
        for spec in "https-h1 page-7.html" "https-h2 page-7.html" "h2c page-7.html" "https-h2 assets/img-5.png"; do
            set -- $spec
            case $1 in
                h2c) p=${h2c_port[$s]}; scheme=http; flags=(--http2 -p 4 -c 16) ;;
                https-h2) p=${tls_port[$s]}; scheme=https; flags=(--insecure --http2 -p 4 -c 16) ;;
                https-h1) p=${tls_port[$s]}; scheme=https; flags=(--insecure -c 16) ;;
            esac
            target="$scheme://$HOST:$p/$2"
            common=(--no-tui -z "${DUR}s" --disable-compression --connect-to "$HOST:$p:127.0.0.1:$p" --output-format json)
            for phase in fixed_rate saturation; do
                rate=(); [ "$phase" = fixed_rate ] && rate=(-q "$RATE")
                before=$(cpu_ticks "${pidof[$s]}")
                out=$(taskset -c 0 oha "${common[@]}" "${flags[@]}" "${rate[@]}" "$target")
                after=$(cpu_ticks "${pidof[$s]}")
                python3 - "$s" "$1 $2" "$round" "$before" "$after" "$(getconf CLK_TCK)" "$phase" "$out" >> "$results" <<'PY'
import json, sys
s, f, r, b, a, hz, phase, out = sys.argv[1:]
o = json.loads(out)
ok = sum(v for k, v in o.get("statusCodeDistribution", {}).items() if k.startswith("2"))
cpu_us = (int(a) - int(b)) / int(hz) * 1e6
print(json.dumps({"phase": "proto_" + phase, "server": s, "file": f, "round": int(r), "requests": ok,
    "cpu_us_per_req": cpu_us / ok if ok else None, "p99_us": o["latencyPercentiles"]["p99"] * 1e6,
    "rps": o["summary"]["requestsPerSec"], "errors": ok == 0}))
PY
            done
        done
    done
done

python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
def cell(vals):
    vals = [v for v in vals if v is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None
def show(key, phase, group, unit, fmt="{:.1f}"):
    keys = sorted({tuple(r[g] for g in group) for r in rows if r["phase"] == phase})
    for k in keys:
        base = cell([r[key] for r in rows if r["phase"] == phase and tuple(r[g] for g in group) == k and r["server"] == "nginx"])
        for s in sorted({r["server"] for r in rows}):
            c = cell([r[key] for r in rows if r["phase"] == phase and r["server"] == s and tuple(r[g] for g in group) == k])
            if not c: continue
            ratio = f"  ×{c[0] / base[0]:.2f} of nginx" if base and base[0] else ""
            print(f"  {phase:10} {' '.join(map(str, k)):24} {s:17} {key:15} {fmt.format(c[0])} ({fmt.format(c[1])}–{fmt.format(c[2])}) {unit}{ratio}")
print("median (min–max) over rounds; ratio of medians to nginx (sendfile on)")
show("rps", "saturation", ["file", "conns"], "req/s", "{:.0f}")
show("MBps", "saturation", ["file", "conns"], "MB/s", "{:.0f}")
show("p99_us", "saturation", ["file", "conns"], "µs")
show("cpu_us_per_req", "fixed_rate", ["file"], "µs CPU/req", "{:.2f}")
show("p99_us", "fixed_rate", ["file"], "µs p99")
show("cpu_us_per_req", "proto_fixed_rate", ["file"], "µs CPU/req", "{:.2f}")
show("rps", "proto_saturation", ["file"], "req/s", "{:.0f}")
show("cpu_us_per_req", "proto_saturation", ["file"], "µs CPU/req", "{:.2f}")
show("cpu_us_per_hs", "handshake", ["file"], "µs CPU/handshake")
show("hs_per_core_s", "handshake", ["file"], "handshakes/s/core", "{:.0f}")
if any(r.get("errors") for r in rows): print("WARNING: some runs reported errors (or a resumed handshake)")
PY
